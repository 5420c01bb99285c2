"""tumord batch on a real LocalCluster of two worker processes: counts, exactly once when a worker
is killed mid-run, resuming without recomputing, manifests."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from tests.batch.conftest import BAD, records, table, write_scans
from tumord.batch.inputs import collect
from tumord.batch.run import Settings, report, run


def test_300_scans_with_5_bad_give_300_verdicts_295_classified_5_failed_and_300_rows(tmp_path, client, settings, log):
    data = tmp_path / "data"
    names = write_scans(data, good=295)
    summary = run(settings(data, chunk_size=40), log, client=client)

    verdicts, errors = records(summary.folder)
    assert len(verdicts) == 295 and len(errors) == 5
    assert sorted(v["file"] for v in verdicts) == sorted(names[:295])
    assert {e["file"] for e in errors} == set(BAD)
    for e in errors:  # each reason names the file and says why, as the service's failed/ records do
        assert e["error"].startswith(e["file"] + " ") and e["moved_to"] == ""
    rows = table(summary.folder)
    assert len(rows) == 300 and sorted(r["file"] for r in rows) == sorted(names)
    assert sum(1 for r in rows if r["error"]) == 5
    assert summary.judged == 300 and summary.found == 0 and sum(summary.labels.values()) == 295
    assert len(summary.failures) == 5 and summary.chunks == 8
    assert not list(summary.folder.rglob(".tumord-tmp.*"))


def test_a_worker_killed_mid_run_leaves_one_verdict_per_scan_and_a_rerun_recomputes_nothing(
        tmp_path, client, settings, log):
    data = tmp_path / "data"
    names = write_scans(data, good=295, size=160)  # larger scans: the run lasts long enough to be interrupted
    s = settings(data, chunk_size=10)
    folder = tmp_path / "out"
    result, killed = {}, {}

    def batch():
        result["summary"] = run(s, log, client=client)

    thread = threading.Thread(target=batch)
    thread.start()
    pids = set(client.run(os.getpid).values())
    # verdicts are named <stem>.<sha256[:12]>.json; which chunk each stem is in
    chunk_of = {Path(shown).stem: i // 10 for i, (_, shown) in enumerate(collect(data).items)}

    def committing() -> int | None:
        """A worker that has committed part of its chunk and is writing the rest (its process id is
        in its temporary files' names), or None."""
        done = {chunk_of[p.name.split(".")[0]] for p in folder.glob("*/*.json")}
        for tmp in folder.glob("*/.tumord-tmp.*"):
            pid = int(tmp.name.rsplit(".", 2)[-2].split("-")[0])
            if pid in pids and chunk_of[tmp.name[len(".tumord-tmp."):].split(".")[0]] in done:
                return pid
        return None

    deadline = time.monotonic() + 60
    while not killed and time.monotonic() < deadline and thread.is_alive():
        pid = committing()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, committed=len(list(folder.glob("*/*.json"))))
        time.sleep(0.001)
    thread.join(120)
    assert killed, "no worker was caught while committing"
    assert killed["pid"] not in client.run(os.getpid).values()  # the nanny started a new process

    summary = result["summary"]
    verdicts, errors = records(summary.folder)
    judged = [r["file"] for r in verdicts + errors]
    assert sorted(judged) == sorted(names)  # every scan exactly once: none missing, none twice
    rows = table(summary.folder)
    assert sorted(r["file"] for r in rows) == sorted(names)
    assert len({r["verdict"] for r in rows}) == 300
    assert summary.judged + summary.found == 300 and not summary.chunk_errors
    assert summary.found >= 1  # the re-executed chunk found what the killed attempt had committed

    before = {p: p.stat().st_mtime_ns for p in summary.folder.rglob("*.json")}
    again = run(s, log, client=client)
    assert again.judged == 0 and again.found == 300
    assert {p: p.stat().st_mtime_ns for p in summary.folder.rglob("*.json")} == before
    assert "0 judged now, 300 already had a record" in report(again)
    assert len(table(summary.folder)) == 300
    assert not list(summary.folder.rglob(".tumord-tmp.*"))  # the killed worker's temporary file is swept


def test_a_manifest_lists_paths_relative_to_itself_once_each_and_a_missing_one_fails_alone(
        tmp_path, client, settings, log):
    data = tmp_path / "archive"
    names = write_scans(data, good=6)[:6]
    manifest = tmp_path / "list.csv"
    listed = [f"archive/{n}" for n in names] + [f"archive/{names[0]}", "archive/gone.png"]
    manifest.write_text("patient_free_id,path\n" + "".join(f"{i},{p}\n" for i, p in enumerate(listed)))
    summary = run(settings(manifest), log, client=client)

    rows = table(summary.folder)
    assert sorted(r["file"] for r in rows) == sorted(listed[:6] + ["archive/gone.png"])
    gone = next(r for r in rows if r["file"] == "archive/gone.png")
    assert gone["error"] == "archive/gone.png cannot be read (No such file or directory)"

    plain = tmp_path / "list.txt"
    plain.write_text("# one path per line\n\n" + "".join(f"{data / n}\n" for n in names))
    summary = run(settings(plain), log, client=client)
    assert summary.judged == 6 and summary.found == 0  # reported by another path, so judged as its own scan


def test_an_output_folder_inside_the_data_folder_is_not_taken_for_scans(tmp_path, client, model, log):
    data = tmp_path / "archive"
    write_scans(data, good=4)
    s = Settings(data=data, output=data / "verdicts", model=model)
    first = run(s, log, client=client)
    again = run(s, log, client=client)
    assert first.inputs == again.inputs == 4 + len(BAD)
    assert again.judged == 0 and again.found == first.inputs
