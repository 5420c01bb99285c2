"""`tumord batch` and `tumord watch` judge the same bytes with the same model alike: the same
records, field for field, except for their timestamps
and probabilities equal to float32 rounding."""
from __future__ import annotations

import json

import pytest

from tests.batch.conftest import BAD, records, write_scans
from tests.service.conftest import Watch, drop, make_model
from tumord.abstain.judge import AbstainSettings
from tumord.batch.run import Settings, run
from tumord.config import load_config

TIMESTAMPS = {"received_at", "classified_at", "failed_at"}
# Batch and watch group scans into different batches; a float32 product's summation order follows
# the batch's shape on some BLAS kernels (OpenBLAS Haswell), so probabilities agree to float32
# precision, not bit for bit. Everything else must be identical.
PROBABILITIES = {"probabilities", "confidence"}


def without(record: dict, keys) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


def test_batch_and_watch_give_the_same_verdicts_for_the_same_scans_and_model(tmp_path, client, log):
    meta = make_model(tmp_path / "models")
    data = tmp_path / "data"
    names = write_scans(data, good=20, subfolders=False)
    # the service set to delete judged scans, so that its verdicts' archived_as is "", as batch's
    # (batch never moves a scan); failed scans it always moves to failed/, which its records say
    w = Watch(tmp_path, watch={"on_success": "delete"}).start()
    try:
        for name in names:
            drop(w.input, name, (data / name).read_bytes())
        w.wait_until(lambda: len(list(w.output.glob("*.json"))) == 20
                     and len(list((w.output / "failed").glob("*.error.json"))) == len(BAD), what="all judged")
    finally:
        assert w.stop() == 0
    by_watch = {p.name: json.loads(p.read_text()) for p in w.output.glob("*.json")}
    watch_errors = {json.loads(p.read_text())["file"]: json.loads(p.read_text())
                    for p in (w.output / "failed").glob("*.error.json")}

    model = tmp_path / "models" / "versions" / meta["version"] / "model.npz"
    abstain = AbstainSettings.from_config(load_config(tmp_path / "config.yaml"))  # the service's settings
    summary = run(Settings(data=data, output=tmp_path / "batch", model=model, abstain=abstain), log, client=client)
    by_batch = {p.name: json.loads(p.read_text()) for p in summary.folder.glob("*.json")}
    verdicts, errors = records(summary.folder)

    assert sorted(by_batch) == sorted(by_watch)  # the same names: <stem>.<sha256[:12]>.json
    for name, record in by_batch.items():
        assert without(record, TIMESTAMPS | PROBABILITIES) == without(by_watch[name], TIMESTAMPS | PROBABILITIES)
        for k in PROBABILITIES & record.keys():
            assert record[k] == pytest.approx(by_watch[name][k], abs=2e-6), name
        assert record.keys() == by_watch[name].keys()
    assert len(errors) == len(BAD)
    for e in errors:
        theirs = watch_errors[e["file"]]
        assert e["moved_to"] == "" and "/failed/" in theirs["moved_to"]
        assert without(e, TIMESTAMPS | {"moved_to"}) == without(theirs, TIMESTAMPS | {"moved_to"})
