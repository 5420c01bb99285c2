"""Runs the tumord CLI under the rule MemoryDenyWriteExecute=yes sets: no writable+executable memory.

    python -m tests.systemd.hardened train --data ...

The kernel's PR_SET_MDWE (Linux 6.3+, what systemd 257+ uses for this setting; older systemd
installs a seccomp filter with the same rule) refuses W+X mappings and adding execute
permission to memory. A library that generates code at run time would fail here. Exits 77
where the kernel lacks the prctl, so the caller can skip.
"""
from __future__ import annotations

import ctypes
import sys

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
UNAVAILABLE = 77


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print(f"hardened: PR_SET_MDWE is unavailable (errno {ctypes.get_errno()})", file=sys.stderr)
        return UNAVAILABLE
    from tumord.cli import main as tumord

    return tumord(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
