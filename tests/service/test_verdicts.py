"""Verdict files: names, atomic JSON, and verdicts.csv (header once, formulas neutralized, crash repair)."""
import csv
import json

from tumord.atomic import TEMP_PREFIX, sweep_temporaries
from tumord.atomic import write_many as write_files
from tumord.service.verdicts import VerdictCsv, base_name, csv_columns, csv_line, neutralize, to_json

CLASSES = ["normal", "tumor"]


def verdict(file="a.png", **kw):
    v = {"file": file, "sha256": "ab" * 32, "label": "tumor", "confidence": 0.9,
         "probabilities": {"normal": 0.1, "tumor": 0.9}, "model": {"version": "v1", "sha256": "cd" * 32},
         "received_at": "2025-01-01T00:00:00.000Z", "classified_at": "2025-01-01T00:00:00.050Z",
         "tumord_version": "0.1.0", "verdict": "a.abababababab.json"}
    v.update(kw)
    return v


def read(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


class TestNames:
    def test_name_is_stem_and_hash_prefix(self):
        """<stem>.<sha256[:12]>; without a hash, the received time."""
        assert base_name("sub/scan 7.png", "0123456789abcdef" * 4, "t") == "scan 7.0123456789ab"
        assert base_name("d.png", None, "2025-01-02T03:04:05.678Z") == "d.20250102T030405678Z"

    def test_odd_names_become_safe_file_names(self):
        """Control characters are replaced and very long stems shortened to fit 255 bytes."""
        assert base_name("a\nb\x07.png", "f" * 64, "t") == "a_b_.ffffffffffff"
        long = base_name("é" * 200 + ".png", "f" * 64, "t")
        assert len(long.encode()) <= 170 and long.endswith(".ffffffffffff")


class TestFiles:
    def test_write_files_leaves_whole_files_and_no_temporaries(self, tmp_path):
        """Each file appears with its full content; no temporary file remains."""
        write_files([(tmp_path / "a.json", to_json({"x": 1})), (tmp_path / "b.json", b"2")])
        assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]

    def test_sweep_removes_what_a_killed_process_left(self, tmp_path):
        """Temporary files from an interrupted write are removed at start; others are kept."""
        (tmp_path / f"{TEMP_PREFIX}a.json.tmp").write_text('{"x":')
        (tmp_path / "keep.json").write_text("{}")
        assert [p.name for p in sweep_temporaries(tmp_path)] == [f"{TEMP_PREFIX}a.json.tmp"]
        assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


class TestCsv:
    def test_formula_cells_are_neutralized(self):
        """Cells starting with = + - @ tab or CR get an apostrophe; numbers and plain text do not."""
        for bad in ("=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "\tx", "\rx"):
            assert neutralize(bad).startswith("'")
        assert neutralize("scan.png") == "scan.png" and neutralize(0.25) == "0.25"
        assert "\n" not in neutralize("a\nb")

    def test_header_once_and_readable(self, tmp_path):
        """The header is written with the file only; rows read back as the same fields."""
        path = tmp_path / "verdicts.csv"
        for _ in range(2):
            c = VerdictCsv(path, CLASSES)
            assert c.open() is None
            c.append(csv_line(verdict("=cmd|' /C calc'!A0.png"), CLASSES))
        rows = read(path)
        assert rows[0] == csv_columns(CLASSES) and len(rows) == 3
        assert rows[1][0] == "'=cmd|' /C calc'!A0.png" and rows[1][4:6] == ["0.1", "0.9"]
        assert path.read_bytes().startswith(b"\xef\xbb\xbf")

    def test_other_classes_start_a_new_file(self, tmp_path):
        """A model with other classes moves the old file aside instead of mixing columns."""
        path = tmp_path / "verdicts.csv"
        VerdictCsv(path, CLASSES).open()
        rotated = VerdictCsv(path, ["a", "b", "c"]).open()
        assert rotated is not None and rotated.exists() and read(path)[0] == csv_columns(["a", "b", "c"])

    def test_cut_line_is_trimmed(self, tmp_path):
        """A line cut short by a crash is removed on open; whole lines stay."""
        path = tmp_path / "verdicts.csv"
        c = VerdictCsv(path, CLASSES)
        c.open()
        c.append(csv_line(verdict("a.png"), CLASSES))
        with open(path, "ab") as f:
            f.write(csv_line(verdict("b.png"), CLASSES).encode()[:30])
        c.open()
        assert [r[0] for r in read(path)[1:]] == ["a.png"]

    def test_append_at_offset_replaces_an_earlier_attempt(self, tmp_path):
        """Appending at a recorded offset drops a previous (whole or partial) copy of those lines."""
        path = tmp_path / "verdicts.csv"
        c = VerdictCsv(path, CLASSES)
        c.open()
        at = c.ensure().st_size
        lines = csv_line(verdict("a.png"), CLASSES) + csv_line(verdict("b.png"), CLASSES)
        c.append(lines)
        c.append(lines, at=at)  # the retry after a crash
        c.append(lines[:20], at=None)
        c.append(lines, at=at)
        assert [r[0] for r in read(path)[1:]] == ["a.png", "b.png"]
        c.append(csv_line(verdict("c.png"), CLASSES), at=c.ensure().st_size + 50)  # an offset past the end never pads
        assert [r[0] for r in read(path)[1:]] == ["a.png", "b.png", "c.png"]
