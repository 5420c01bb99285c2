"""The judge process (tumord/service/judge_process.py): the verdicts the in-process judge gives,
a decoder crash fails that one file and not the service, and the process lives and dies with the
service. Real processes and real signals: the crash is a SIGSEGV the judge process sends itself
on files named crash* (tests/service/crash_hook, a test hook on PYTHONPATH, not part of tumord).
"""
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.service.conftest import REPO, png
from tests.service.test_classify import LIMITS, model, ready, root  # noqa: F401 (fixtures)
from tumord.logs import get_logger
from tumord.service.classify import BatchJudge
from tumord.service.judge_process import JudgeProcess

HOOK = Path(__file__).parent / "crash_hook"


def children(pid: int) -> list[int]:
    """Child processes of any of its threads (each thread's own list: a thread started some)."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether the process ended (and was reaped, or is a zombie) within the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def judge_process(root):  # noqa: F811
    made = []

    def factory(**kw):
        j = JudgeProcess(root, LIMITS, threads=2, predict_threads=2, blas_threads=1, explain=False,
                         log=get_logger(), **kw)
        made.append(j)
        return j

    yield factory
    for j in made:
        j.close()


def test_the_judge_process_gives_the_in_process_verdicts(root, model, rng, judge_process):  # noqa: F811
    """Good files get the same probabilities; a bad one the same reason; the child holds the model
    it was last sent, so a swap between batches is followed."""
    for i in range(5):
        (root / f"s{i}.png").write_bytes(png(rng))
    (root / "bad.png").write_bytes(b"not an image")
    items = [ready(root / n) for n in ("s0.png", "bad.png", "s1.png", "s2.png", "s3.png", "s4.png")]
    here = BatchJudge(root, LIMITS, 2, 2)
    expected, _ = here.judge(items, model)
    here.close()
    j = judge_process()
    got, predict_seconds = j.judge(items, model)
    assert predict_seconds > 0 and [s.rel for s in got] == [s.rel for s in expected]
    assert got[1].error == expected[1].error and "bad.png" in got[1].error and got[1].probabilities is None
    good = [i for i in range(6) if i != 1]
    np.testing.assert_allclose([got[i].probabilities for i in good], [expected[i].probabilities for i in good],
                               rtol=1e-5)
    assert all(got[i].fingerprint == expected[i].fingerprint and got[i].image is None for i in good)

    other = type(model)(model.net, {**model.meta, "temperature": 2.0}, model.path, model.reference)
    softer, _ = j.judge(items[:1], other)
    assert softer[0].probabilities.max() < got[0].probabilities.max()  # the second model judged it


def test_a_crash_on_one_file_fails_that_file_and_the_rest_are_judged(root, model, rng, judge_process,  # noqa: F811
                                                                     monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{HOOK}{os.pathsep}{REPO}")
    for n in ("a.png", "crash.png", "b.png"):
        (root / n).write_bytes(png(rng))
    j = judge_process()
    j.start()
    first = j.pid
    scans, _ = j.judge([ready(root / n) for n in ("a.png", "crash.png", "b.png")], model)
    a, crash, b = scans
    assert a.error is None and b.error is None and a.probabilities is not None and b.probabilities is not None
    assert crash.probabilities is None and crash.fingerprint is not None and crash.fingerprint.sha256
    assert "crash.png could not be judged" in crash.error and "Segmentation fault" in crash.error
    assert gone(first) and j.pid != first  # a new judge process took over
    again, _ = j.judge([ready(root / "a.png")], model)
    np.testing.assert_allclose(again[0].probabilities, a.probabilities, rtol=1e-6)


def test_the_service_outlives_its_judge_process_and_takes_it_along(service, rng):
    """The judge process killed (SIGKILL) between batches: a new one judges the next scans. A
    decoder crash in a batch: that file fails, the others are classified, nothing is lost.
    SIGTERM: the judge process ignores it, the service drains and the child exits. kill -9 of the
    service: the kernel kills its judge process too."""
    w = service(env={"PYTHONPATH": f"{HOOK}{os.pathsep}{REPO}"}).start()
    w.wait_for("service.ready")
    (started,) = w.events("judge.started")
    assert children(w.proc.pid) == [started["pid"]]
    os.kill(started["pid"], signal.SIGKILL)
    assert gone(started["pid"])
    for n in ("a.png", "crash.png", "b.png"):
        (w.root / f".{n}.part").write_bytes(png(rng))
    for n in ("a.png", "crash.png", "b.png"):
        os.rename(w.root / f".{n}.part", w.input / n)
    classified = w.wait_for("scan.classified", 2)
    (failed,) = w.wait_for("scan.failed")
    assert sorted(e["file"] for e in classified) == ["a.png", "b.png"] and failed["file"] == "crash.png"
    assert "Segmentation fault" in failed["reason"] and Path(failed["moved_to"]).exists()
    # seen dead before the batch was sent, or when sending it; then the batch's file that kills it
    # again is failed (as logged above), not retried forever
    died = w.events("judge.died")
    assert "Killed" in died[0]["reason"] and len(died) <= 2
    judge = children(w.proc.pid)
    assert len(judge) == 1 and w.proc.poll() is None
    assert w.stop() == 0 and gone(judge[0])

    w.start()
    w.wait_for("service.ready")
    (judge,) = children(w.proc.pid)
    w.proc.kill()
    w.proc.wait()
    assert gone(judge)
