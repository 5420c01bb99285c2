"""Runs the tumord CLI with the commit stage held or killed at a step.

    python -m tests.service.stoppoint pause SECONDS -- watch ...   # each batch waits at step 4
    python -m tests.service.stoppoint kill 1 -- watch ...          # SIGKILL at the first batch at step 4
    python -m tests.service.stoppoint kill rename -- watch ...     # SIGKILL within step 2: verdict bytes
                                                                   # durable, not yet renamed to their names
    python -m tests.service.stoppoint kill written -- watch ...    # SIGKILL after step 2: verdicts renamed
                                                                   # and durable, rows not yet `written`

A test tool, not a hook in tumord: it wraps Commit.finish (step 4, when verdicts are `written`),
atomic._rename or Ledger.written from outside, so tests can act in the window between a verdict
being durable and its input leaving the folder (touch a file, change its bytes, rotate
verdicts.csv), or kill the real process exactly there. It prints a JSON line
`{"event": "stoppoint.reached"}` to stderr when a batch arrives at the point.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time


def reached() -> None:
    print(json.dumps({"event": "stoppoint.reached"}), file=sys.stderr, flush=True)


def kill_before(owner, name: str) -> None:
    """SIGKILL this process when owner.name is first called."""
    def stop(*args, **kwargs):
        reached()
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, stop)


def main() -> int:
    mode, value, sep, *argv = sys.argv[1:]
    assert sep == "--" and mode in ("pause", "kill")
    from tumord import atomic
    from tumord.service import commit
    from tumord.service.ledger import Ledger

    if mode == "kill" and value == "rename":
        kill_before(atomic, "_rename")
    elif mode == "kill" and value == "written":
        kill_before(Ledger, "written")
    else:
        real = commit.Commit.finish

        def finish(self, *args, **kwargs):
            if self.ledger.in_state("written"):
                reached()
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(float(value))
            return real(self, *args, **kwargs)

        commit.Commit.finish = finish
    from tumord.cli import main as tumord

    return tumord(argv)


if __name__ == "__main__":
    sys.exit(main())
