"""`tumord batch` as a user runs it: a real process with its own LocalCluster (or a running one), its progress bar on a
terminal, the dashboard link in the log, the summary at the end, and bad arguments refused."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading

from tests.batch.conftest import BAD, write_scans
from tests.support import child_env


def tumord_batch(*args: str, cwd, terminal: bool = False) -> tuple[int, str, str]:
    """Runs `python -m tumord.cli batch ARGS`; with `terminal`, its stdout is a pseudo-terminal."""
    out_fd, tty = pty.openpty() if terminal else (None, subprocess.PIPE)
    proc = subprocess.Popen([sys.executable, "-m", "tumord.cli", "batch", *args], cwd=cwd, env=child_env(),
                            stdout=tty, stderr=subprocess.PIPE, text=True)
    chunks = []
    if terminal:
        os.close(tty)

        def read():
            while True:
                try:
                    data = os.read(out_fd, 4096)
                except OSError:  # the terminal's other end closed
                    return
                if not data:
                    return
                chunks.append(data)
        reader = threading.Thread(target=read)
        reader.start()
        _, err = proc.communicate(timeout=120)
        reader.join(10)
        os.close(out_fd)
        return proc.returncode, b"".join(chunks).decode(errors="replace"), err
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_a_run_shows_progress_at_a_terminal_logs_the_dashboard_and_ends_with_a_summary(tmp_path, model, client):
    write_scans(tmp_path / "data", good=40)
    code, out, err = tumord_batch("--data", "data", "--output", "out", "--model", str(model), "--workers", "1",
                                  "--chunk-size", "10", "--log-json", cwd=tmp_path, terminal=True)
    assert code == 0, err
    events = {e["event"]: e for e in (json.loads(line) for line in err.splitlines() if line.startswith("{"))}
    assert events["batch.started"]["dashboard"].startswith("http://")
    assert events["batch.started"]["workers"] == 1
    finished = events["batch.finished"]
    assert finished["judged"] == 45 and finished["failed"] == len(BAD) and finished["scans_per_s"] > 0
    assert "% Completed" in out  # dask.distributed's progress bar
    assert "45 scans: 45 judged now, 0 already had a record" in out
    assert f"failed {len(BAD)}" in out and "scans/s judged" in out
    assert "failed: empty.png is empty (0 bytes)" in out

    # again, on a running cluster found by its address: everything is done already, and it says so
    code, out, err = tumord_batch("--data", "data", "--output", "out", "--model", str(model),
                                  "--scheduler", client.scheduler.address, cwd=tmp_path)
    assert code == 0, err
    assert "45 scans: 0 judged now, 45 already had a record" in out


def test_a_missing_data_folder_or_a_bad_worker_count_is_refused_in_one_line(tmp_path, model):
    code, out, err = tumord_batch("--data", "nowhere", "--output", "out", "--model", str(model), cwd=tmp_path)
    assert code == 2 and err.strip() == "tumord batch: --data nowhere: no such folder or manifest file"
    code, out, err = tumord_batch("--data", ".", "--output", "out", "--model", str(model), "--workers", "0",
                                  cwd=tmp_path)
    assert code == 2 and "--workers 0: expected a positive number" in err
    assert not (tmp_path / "out").exists()
