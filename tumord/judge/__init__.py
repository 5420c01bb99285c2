"""How one scan is judged, shared by `tumord watch` (service/) and `tumord batch` (batch/).

safety (what may be read and decoded), scan (the file checks and the checked decode), record
(the verdict and error records, their names and their table cells). Both commands call these,
so a scan's verdict is the same whichever of them made it, except for its timestamps.
"""
