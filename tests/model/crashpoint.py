"""Runs the tumord CLI and SIGKILLs itself at the n-th rename into the models folder.

    python -m tests.model.crashpoint MODELS_DIR N before|after|list -- train --data ...

A test tool, not a hook in tumord: it wraps os.replace from outside, so the crash tests can
stop a real process at each step of a promotion (publish, pointer switch, pruning), which
random timing almost never hits. Renames inside a staging folder are not counted: nothing
reads those. With `list`, it runs to the end and prints each counted destination.
"""
from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    models, n, when, sep, *argv = sys.argv[1:]
    assert sep == "--" and when in ("before", "after", "list")
    models, n, count, real = os.path.realpath(models), int(n), 0, os.replace

    def replace(src, dst, *args, **kwargs):
        nonlocal count
        target = os.path.realpath(os.fspath(dst))
        counted = target.startswith(models + os.sep) and f"{os.sep}.staging-" not in target
        count += counted
        if when == "list" and counted:
            print(f"crashpoint {count} {os.path.relpath(target, models)}", file=sys.stderr, flush=True)
        hit = counted and count == n
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, *args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    from tumord.cli import main as tumord

    return tumord(argv)


if __name__ == "__main__":
    sys.exit(main())
