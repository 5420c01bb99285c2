"""Runs the tumord CLI with the commit stage held or killed at step 4, when verdicts are `written`.

    python -m tests.service.stoppoint pause SECONDS -- watch ...   # each batch waits there
    python -m tests.service.stoppoint kill 1 -- watch ...          # SIGKILL at the first batch there

A test tool, not a hook in tumord: it wraps Commit.finish from outside, so tests can act in the
window between a verdict being durable and its input leaving the folder (touch a file, change
its bytes, rotate verdicts.csv), or kill the real process exactly there. It prints a JSON line
`{"event": "stoppoint.reached"}` to stderr when a batch arrives at the point.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time


def main() -> int:
    mode, value, sep, *argv = sys.argv[1:]
    assert sep == "--" and mode in ("pause", "kill")
    from tumord.service import commit

    real = commit.Commit.finish

    def finish(self, *args, **kwargs):
        if self.ledger.in_state("written"):
            print(json.dumps({"event": "stoppoint.reached"}), file=sys.stderr, flush=True)
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(float(value))
        return real(self, *args, **kwargs)

    commit.Commit.finish = finish
    from tumord.cli import main as tumord

    return tumord(argv)


if __name__ == "__main__":
    sys.exit(main())
