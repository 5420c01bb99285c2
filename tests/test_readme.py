"""README.md's Layout lists every module in tumord/ and nothing that is not there."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1]
    return section.split("```\n", 2)[1].splitlines()


def listed_modules(lines: list[str]) -> set[str]:
    """`tumord/x/   what it is: a.py b.py` and its indented continuation lines -> tumord/x/a.py, ..."""
    listed, folder = set(), None
    for line in lines:
        if not line.startswith(" "):
            folder = line.split()[0] if line.strip() else None
        if folder and folder.startswith("tumord/"):
            listed |= {folder + name for name in re.findall(r"[\w]+\.py\b", line)}
    return listed


def modules() -> set[str]:
    """Every .py file under tumord/ but empty package markers (an empty __init__.py)."""
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "tumord").rglob("*.py")
            if p.name != "__init__.py" or p.stat().st_size > 0}


def test_layout_lists_every_module_and_no_other():
    listed, real = listed_modules(layout_lines()), modules()
    missing = [f"{m}: add `{m.rsplit('/', 1)[1]}` to README.md's Layout line starting "
               f"`{m.rsplit('/', 1)[0]}/` (or start a line `{m.rsplit('/', 1)[0]}/   what it is: "
               f"{m.rsplit('/', 1)[1]}`)" for m in sorted(real - listed)]
    gone = [f"{m}: listed in README.md's Layout but not in tumord/; remove it" for m in sorted(listed - real)]
    assert not missing + gone, "\n".join(missing + gone)


def test_the_parser_reads_continuation_lines_and_only_tumord_folders():
    lines = ["tumord/nn/   math: a.py b.py", "             c.py", "tumord/      root: d.py", "bench/       x.py"]
    assert listed_modules(lines) == {"tumord/nn/a.py", "tumord/nn/b.py", "tumord/nn/c.py", "tumord/d.py"}


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 200
