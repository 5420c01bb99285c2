"""`tumord watch` with DICOM: recognised by content, judged per slice, one verdict per series,
and no patient data in any verdict, CSV line or log line."""
import json
import os

import numpy as np

from tests.dicom.synth import PHI, bundled, mr_dataset, series, to_bytes, write
from tests.service.conftest import drop, verdicts
from tests.synthetic import scan

DICOM = ["--set", "dicom.series_stable_seconds=1.5", "--set", "dicom.series_rule=max"]


def head(rng, tumor, size=48):
    return scan(tumor, rng, size).astype(np.uint16) * 16


def series_verdicts(output):
    return {p.stem: json.loads(p.read_text()) for p in (output / "series").glob("*.json")}


def test_dicom_instances_get_identifiers_and_each_series_one_verdict(service, rng):
    w = service(args=DICOM).start()
    w.wait_for("service.ready")
    uid = "1.2.826.0.1.3680043.8.498.1"
    slices = series([head(rng, k == 2) for k in range(5)], study="1.2.826.0.1.3680043.8.498.9", series=uid)
    for k, ds in enumerate(slices):
        drop(w.input, f"IM{k:04d}", to_bytes(ds))  # no extension: recognised by the DICM marker
    multi = mr_dataset(np.stack([head(rng, False) for _ in range(3)]), study="1.2.826.0.1.3680043.8.498.9",
                       series="1.2.826.0.1.3680043.8.498.2")
    drop(w.input, "multi.dcm", to_bytes(multi))
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"):
        drop(w.input, name, bundled(name).read_bytes())
    drop(w.input, "ct.dcm", bundled("CT_small.dcm").read_bytes())
    w.wait_for("scan.classified", 9)
    w.wait_for("scan.failed", 1)
    w.wait_for("series.classified", 3, timeout=30)
    done = {v["file"]: v for v in verdicts(w.output)}
    assert len(done) == 9
    first = done["IM0000"]["dicom"]
    assert first["series_instance_uid"] == uid and first["instance_number"] == 1 and first["modality"] == "MR"
    assert first["study_instance_uid"] == "1.2.826.0.1.3680043.8.498.9" and first["series_description"]
    assert len(done["multi.dcm"]["frames"]) == 3 and done["multi.dcm"]["dicom"]["frames"] == 3
    assert all("abstained" in v for v in done.values())  # judged like any scan, abstention included
    # the same instance in three encodings: three verdicts with the same probabilities
    same = [done[n]["probabilities"] for n in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm")]
    assert same[0] == same[1] == same[2]
    ct = json.loads(next(w.output.glob("failed/*.error.json")).read_text())
    assert "modality CT" in ct["error"]

    got = series_verdicts(w.output)
    assert len(got) == 3
    five = got[uid]
    assert five["slices"] == 5 and five["instances"] == 5 and five["rule"]["name"] == "max"
    probs = [done[f"IM{k:04d}"]["probabilities"]["tumor"] for k in range(5)]
    assert five["tumor_probability"] == round(max(probs), 6)
    assert five["driving_slices"][0]["instance_number"] == 1 + int(np.argmax(probs))
    assert got["1.2.826.0.1.3680043.8.498.2"]["slices"] == 3
    small = [v for k, v in got.items() if k not in (uid, "1.2.826.0.1.3680043.8.498.2")][0]
    assert small["instances"] == 1  # one SOP instance, whatever its encodings
    assert w.stop() == 0

    # no patient data anywhere the service writes (archive/ and failed/ keep the scans themselves)
    texts = [line for line in w.raw]
    for p in w.output.rglob("*"):
        if p.is_file() and p.parent.name not in ("archive", "failed") or p.name.endswith(".error.json"):
            texts.append(p.read_bytes().decode("utf-8", "replace"))
    phi = list(PHI.values()) + [v.split("^")[0] for v in PHI.values() if "^" in v]
    phi += ["CompressedSamples", "19610417"]  # MR_small's own patient name; a birth date
    for text in texts:
        for value in phi:
            assert value not in text, value
