"""syncfs and the order of write_many's system calls: bytes durable before any rename, names durable
before it returns. The order is read from strace on a real process writing real files."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tumord import syncfs
from tumord.atomic import TEMP_PREFIX, write_many

REPO = Path(__file__).resolve().parents[1]
WRITE = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tumord import syncfs
from tumord.atomic import write_many
if sys.argv[2] == "fsync":  # as on a file system whose syncfs is not trusted
    syncfs.trusted = lambda folder: False
folder = Path(sys.argv[1])
with ThreadPoolExecutor(4) as pool:
    write_many([(folder / f"v{i}.json", b'{"i": %d}' % i) for i in range(3)], pool)
"""


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    return subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True).returncode == 0


needs_strace = pytest.mark.skipif(not _strace_works(), reason="strace not found or not permitted (Debian: strace)")


def calls(tmp_path: Path, how: str) -> list[tuple[str, str]]:
    """(call, the path it names) for each creation, fsync, syncfs and rename under tmp_path/out, in order."""
    out, log = tmp_path / "out", tmp_path / "strace.log"
    subprocess.run(["strace", "-f", "-qq", "-y", "-o", str(log), "-e", "trace=openat,fsync,syncfs,rename,renameat,"
                    "renameat2", sys.executable, "-c", WRITE, str(out), how],
                   check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    found, pending = [], {}
    for line in log.read_text().splitlines():
        pid, line = line.split(None, 1)  # strace pads the pid to a width: one space or more
        if line.endswith("<unfinished ...>"):  # another thread's call came between: joined when it returns
            pending[pid] = line[:-len("<unfinished ...>")]
            continue
        resumed = re.match(r"<\.\.\. \w+ resumed>(.*)", line)
        if resumed:
            line = pending.pop(pid, "") + resumed[1]  # in the order the calls returned
        m = re.search(r"\b(openat|fsync|syncfs|rename\w*)\((.*)\)\s+=\s+(\d+)", line)
        if m is None or (m[1] == "openat" and "O_EXCL" not in m[2]):
            continue  # failed calls; files opened but not created
        paths = [a or b for a, b in re.findall(r'"([^"]*)"|<([^>]*)>', m[2]) if (a or b).startswith(str(out))]
        if paths:  # not Python's own (its bytecode cache)
            found.append((m[1], paths[0]))
    return found


@needs_strace
def test_one_syncfs_for_the_bytes_before_the_renames_and_one_for_the_names(tmp_path):
    """On a file system where syncfs is trusted: three temporary files, one syncfs, three renames,
    one syncfs, and no fsync at all."""
    (tmp_path / "out").mkdir()
    if not syncfs.trusted(tmp_path / "out"):
        pytest.skip(f"syncfs is not trusted on the file system of {tmp_path}")
    kinds = [c for c, _ in calls(tmp_path, "syncfs")]
    assert kinds == ["openat"] * 3 + ["syncfs"] + [kinds[4]] * 3 + ["syncfs"]
    assert kinds[4].startswith("rename")


@needs_strace
def test_elsewhere_each_file_is_fsynced_before_its_rename_and_the_folder_after(tmp_path):
    """Where syncfs is not trusted: every temporary file is fsynced before any rename, and the folder
    after the last one."""
    (tmp_path / "out").mkdir()
    seen = calls(tmp_path, "fsync")
    renames = [i for i, (c, _) in enumerate(seen) if c.startswith("rename")]
    temps = {path for c, path in seen if c == "openat"}
    assert len(renames) == 3 and len(temps) == 3 and "syncfs" not in {c for c, _ in seen}
    assert temps == {path for c, path in seen[:renames[0]] if c == "fsync"}
    assert seen[-1] == ("fsync", str(tmp_path / "out"))


def test_trusted_only_on_the_known_local_file_systems(tmp_path):
    """The file system type, as `stat -f` reports it, decides: /proc never, tmp_path if it is one of them."""
    assert not syncfs.trusted("/proc")
    kind = subprocess.run(["stat", "-f", "-c", "%t", str(tmp_path)], capture_output=True, text=True).stdout.strip()
    release = tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    expected = sys.platform.startswith("linux") and release >= (5, 8) and int(kind, 16) in syncfs.TRUSTED
    assert syncfs.trusted(tmp_path) == expected


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    """One file of the group cannot be created: nothing is renamed and no temporary file is left."""
    (tmp_path / "out").mkdir()
    with pytest.raises(FileNotFoundError):
        write_many([(tmp_path / "out" / "a.json", b"{}"), (tmp_path / "missing" / "b.json", b"{}")])
    assert os.listdir(tmp_path / "out") == []
    assert not [p for p in tmp_path.rglob(f"{TEMP_PREFIX}*")]
