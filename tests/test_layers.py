"""The import graph of tumord/ runs one way: each package imports only packages below it.

The layers are written down once, here. A module in no layer, an import upward or sideways,
and a command importing another command each fail with the file, the line and the rule.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tumord"

# Bottom to top. A unit (a package under tumord/, or a module at its root) may import units of
# lower layers, never one of its own layer or above. `tumord` is tumord/__init__.py (the version).
LAYERS = [
    ("nn",),                                 # numpy math: imports nothing else of tumord, so no I/O
    ("syncfs",),                             # one syncfs(2) for many files: imports nothing else of tumord
    ("tumord", "atomic", "logs", "config"),  # version, durable writes, logging, settings
    ("data",),                               # reading scans and preparing them
    ("model",),                              # the model file, its registry, prediction
    ("abstain",),                            # input checks, abstention decisions, drift tracking
    ("judge",),                              # how one scan is judged: checks, records (watch and batch)
    ("training", "service", "labelling", "batch"),  # side by side: none imports another
    ("web",),                                # tumord watch's HTTP server: listens to the service's events
    ("commands",),                           # one module per command; they share commands.common
    ("cli",),
]
SHARED_COMMAND_MODULES = {"tumord.commands", "tumord.commands.common"}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """tumord.model.registry -> model; tumord -> tumord; tumord.cli -> cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported(tree: ast.AST, module: str, is_package: bool, root: Path):
    """(line, module) of every tumord import, at the top or inside a function."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:  # `from tumord import checkpoint` imports a submodule
                sub = f"{base}.{alias.name}"
                as_path = root.parent.joinpath(*sub.split("."))
                found = as_path.with_suffix(".py").is_file() or as_path.is_dir()
                yield node.lineno, sub if found else base


def violations(root: Path, layers=LAYERS) -> list[str]:
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        where = path.relative_to(root.parent)
        own = unit(module)
        if own not in rank:
            found.append(f"{where}: {own!r} is in no layer; add it to LAYERS in tests/test_layers.py")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, target in imported(tree, module, path.name == "__init__.py", root):
            if target.split(".")[0] != root.name:
                continue
            other = unit(target)
            if other == own:
                if (own == "commands" and module not in SHARED_COMMAND_MODULES
                        and target not in SHARED_COMMAND_MODULES and target != module):
                    found.append(f"{where}:{line}: imports {target}: no command imports another command")
                continue
            if other not in rank:
                found.append(f"{where}:{line}: imports {target}, which is in no layer")
            elif rank[other] >= rank[own]:
                way = "sideways" if rank[other] == rank[own] else "upward"
                found.append(f"{where}:{line}: imports {target}: {own} may not import {other} ({way})")
    return found


def test_no_import_runs_upward_and_no_command_imports_another():
    assert violations(PACKAGE) == []


def test_the_check_finds_upward_sideways_and_command_imports(tmp_path):
    """The checker itself: each kind of breach in a small tree shaped like tumord/."""
    root = tmp_path / "tumord"
    files = {
        "__init__.py": "",
        "nn/__init__.py": "",
        "nn/net.py": "import numpy\nfrom tumord.nn import layers\n",
        "nn/layers.py": "def f():\n    from tumord.model import checkpoint\n",  # upward, inside a function
        "model/__init__.py": "",
        "model/checkpoint.py": "from tumord.training.trainer import fit\nfrom tumord import __version__\n",
        "training/__init__.py": "",
        "training/trainer.py": "from tumord.service import run\nfrom ..nn import net\n",  # sideways; fine
        "service/__init__.py": "def run(): pass\n",
        "commands/__init__.py": "",
        "commands/common.py": "",
        "commands/models.py": "from tumord.commands.common import x\nfrom tumord.commands import train\n",
        "commands/train.py": "from . import common\nfrom .models import y\n",
        "extra.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    layers = [("nn",), ("tumord",), ("model",), ("training", "service"), ("commands",)]
    assert violations(root, layers) == [
        "tumord/commands/models.py:2: imports tumord.commands.train: no command imports another command",
        "tumord/commands/train.py:2: imports tumord.commands.models: no command imports another command",
        "tumord/extra.py: 'extra' is in no layer; add it to LAYERS in tests/test_layers.py",
        "tumord/model/checkpoint.py:1: imports tumord.training.trainer: model may not import training (upward)",
        "tumord/nn/layers.py:2: imports tumord.model.checkpoint: nn may not import model (upward)",
        "tumord/training/trainer.py:1: imports tumord.service: training may not import service (sideways)",
    ]


def test_the_service_and_prediction_load_no_training_code():
    """A fresh interpreter imports every service module and the watch and predict commands:
    classifying scans must not pull in training code."""
    service = sorted(module_name(p, PACKAGE) for p in (PACKAGE / "service").rglob("*.py"))
    modules = [*service, "tumord.commands.watch", "tumord.commands.predict", "tumord.model.explain"]
    code = (f"import importlib, json, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tumord'))))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout)
    assert "tumord.service.service" in loaded and "tumord.model.checkpoint" in loaded
    assert [m for m in loaded if m.startswith("tumord.training")] == []
