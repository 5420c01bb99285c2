"""The folder-watching classification service (`tumord watch`).

intake (observer events, backlog, rescans) -> stability (is the file complete?) -> classify
(safety checks, decode, predict, in batches) -> commit (verdict, ledger, archive: crash-safe),
with swap (model hot swap), notify (systemd) and service (wiring and signals) around them.
"""
