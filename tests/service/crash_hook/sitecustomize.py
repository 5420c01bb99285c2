"""A test hook, not part of tumord: in the judge process only, decoding a file named crash*
kills the process with a real SIGSEGV, as a decoder crashing on a malformed file would.

Tests put this folder first on PYTHONPATH; Python imports sitecustomize at start-up.
"""
import os
import signal
import sys

if sys.orig_argv[1:3] == ["-m", "tumord.service.judge_process"]:
    import tumord.judge.scan as scan

    _decode = scan.decode_checked

    def decode_checked(data, shown, *args, **kwargs):
        if os.path.basename(shown).startswith("crash"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return _decode(data, shown, *args, **kwargs)

    scan.decode_checked = decode_checked
