"""`tumord batch`: classify folders or manifests of scans on a Dask cluster, each scan exactly once.

inputs (folder tree or manifest -> paths) -> chunks of paths, one Dask task each -> on a worker,
chunk (read, hash, skip what is committed, decode, predict, commit with store) -> on the client,
run (cluster, progress, the table from the tasks' rows, the summary). The checks, the records and
their names are tumord.judge's, shared with `tumord watch`.
"""
