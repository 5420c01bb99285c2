"""`tumord feedback`: a person's label for a judged scan, filed for training with its provenance.

The archived scan is hard-linked (or, across file systems, copied) into
`<training>/<label>/<archived name>`, never moved: the archive keeps its copy. Beside it,
`<verdict name>.feedback.json` records who, when, the label, the verdict and model, and whether
the label agreed with the model. Filing the same label again changes nothing; another label
moves the training copy to that class's folder and keeps the earlier labels in the record.
"""
from __future__ import annotations

import errno
import getpass
import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from tumord.atomic import fsync_dir, write_atomic
from tumord.labelling.verdicts import NotFound

SUFFIX = ".feedback.json"


def stem_of(record: dict) -> str:
    return record["verdict"].removesuffix(".json")


def provenance_files(training: Path, stem: str) -> list[Path]:
    """Where this verdict was filed before (normally none or one)."""
    return sorted(Path(training).glob(f"*/{stem}{SUFFIX}"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def scan_file(record: dict, given: Path | None) -> Path:
    """The archived scan; a scan file given by the user stands in when the archive has none."""
    archived = Path(record.get("archived_as") or "")
    if record.get("archived_as") and archived.is_file():
        if _sha256(archived) != record["sha256"]:
            raise NotFound(f"{archived}: its bytes no longer match the verdict's SHA-256; refusing to file it")
        return archived
    if given is not None:
        return given
    why = "was not archived (watch.on_success: delete)" if not record.get("archived_as") else f"is not at {archived}"
    raise NotFound(f"{record['verdict']}: the scan {why}; pass the scan file itself instead of the verdict")


def file_label(record: dict, label: str, training: Path, given: Path | None = None, by: str | None = None) -> dict:
    """Files the verdict's scan under label; returns {"status": filed|unchanged|relabelled, "path", "provenance"}."""
    classes = list(record["probabilities"])
    if label not in classes:
        raise ValueError(f"--label {label!r} is not one of the model's classes ({', '.join(classes)})")
    stem = stem_of(record)
    earlier = provenance_files(training, stem)
    previous = json.loads(earlier[0].read_text(encoding="utf-8")) if earlier else None
    src = scan_file(record, given)
    suffix = Path(record.get("archived_as") or src.name).suffix
    folder = Path(training) / label
    target = folder / f"{stem}{suffix}"
    if previous is not None and previous["label"] == label and target.is_file():
        return {"status": "unchanged", "path": target, "provenance": earlier[0]}
    folder.mkdir(parents=True, exist_ok=True)
    _link_or_copy(src, target)
    provenance = {
        "scan": target.name, "sha256": record["sha256"], "label": label, "by": by or getpass.getuser(),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "verdict": record["verdict"], "model_label": record["label"], "agreed": label == record["label"],
        "model_abstained": bool(record.get("abstained", False)), "model": record.get("model"),
        "previous_labels": ([*previous.get("previous_labels", []), {k: previous[k] for k in ("label", "by", "at")}]
                            if previous else []),
    }
    written = write_atomic(folder / f"{stem}{SUFFIX}", json.dumps(provenance, indent=2) + "\n")
    for old in earlier:  # a corrected label: the training copy leaves the old class folder
        if old.parent != folder:
            (old.parent / f"{stem}{suffix}").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
            fsync_dir(old.parent)
    return {"status": "relabelled" if previous else "filed", "path": target, "provenance": written}
