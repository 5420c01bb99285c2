"""Atomic writes: complete files only, readable like any other new file."""
import os
import stat

from tumord.atomic import write_atomic


def test_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    """The target holds the new bytes; no temporary file is left beside it."""
    target = tmp_path / "verdict.json"
    target.write_text("old")
    write_atomic(target, '{"label": "tumor"}')
    assert target.read_text() == '{"label": "tumor"}'
    assert os.listdir(tmp_path) == ["verdict.json"]


def test_new_files_get_the_umask_mode_not_0600(tmp_path):
    """Other programs (and the service's group) can read what tumord writes."""
    old = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044
