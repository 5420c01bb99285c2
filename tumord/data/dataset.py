"""A labelled folder: one subfolder per class, images of any common format inside."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tumord.data.images import IMAGE_SUFFIXES


@dataclass
class Listing:
    root: Path
    class_names: list[str]
    files: list[Path]  # sorted, so everything derived from the listing is deterministic
    labels: list[int]


def list_dataset(root: str | Path, class_names: list[str] | None = None) -> Listing:
    """Lists images under root/<class>/; with class_names given, the folders must match them."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such data folder; expected one subfolder per class")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        class_names = found
        if len(class_names) < 2:
            raise ValueError(f"{root}: found classes {found}; expected at least 2 class subfolders")
    else:
        missing = [c for c in class_names if c not in found]
        if missing:
            raise ValueError(f"{root}: missing class folders {missing}; the model's classes are {class_names}")
    files, labels = [], []
    for label, name in enumerate(class_names):
        for p in sorted((root / name).rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."):
                files.append(p)
                labels.append(label)
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    return Listing(root, list(class_names), files, labels)
