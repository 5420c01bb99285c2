"""`tumord watch` start-up checks: one clear stderr line and exit code 2 for every configuration problem."""
import os
import subprocess
import sys

import pytest

from tests.service.conftest import REPO, make_model


def watch(cwd, *args, timeout=20):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tumord.cli", "watch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "input").mkdir()
    make_model(tmp_path / "models")
    return tmp_path


@pytest.mark.parametrize("yaml_text,words", [
    ("watch:\n  bogus: 1\n", ["config.yaml", "watch.bogus"]),
    ("watch:\n  batch_size: many\n", ["config.yaml", "watch.batch_size", "whole number"]),
    ("watch:\n  observer: fsevents\n", ["config.yaml", "watch.observer", "native, polling"]),
    ("watch:\n  settle_seconds: -1\n", ["config.yaml", "watch.settle_seconds", "positive"]),
    ("watch:\n  predict_threads: 0\n", ["config.yaml", "watch.predict_threads", "positive"]),
    ("watch:\n  on_success: shred\n", ["config.yaml", "watch.on_success", "archive, delete"]),
    ("paths:\n  input: config.yaml\n", ["config.yaml", "paths.input", "not a folder"]),
    ("paths:\n  output: input\n", ["config.yaml", "paths.output", "inside the input folder"]),
    ("paths:\n  models: empty\n", ["current.json", "no current model"]),
])
def test_config_problems_are_one_line_and_exit_2(folder, yaml_text, words):
    """Unknown keys, wrong types, bad values, an input "folder" that is a file, a missing model: one line
    naming them, exit 2. (A missing input folder is waited for: test_faults.)"""
    (folder / "config.yaml").write_text(yaml_text)
    r = watch(folder)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def test_input_flag_naming_a_file_is_named(folder):
    """--input pointing at a file names the flag and the path."""
    (folder / "notes.txt").write_text("x")
    r = watch(folder, "--input", "notes.txt")
    assert r.returncode == 2 and "--input notes.txt" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_output_folders_are_created_and_a_second_instance_is_refused(folder):
    """output/, archive/ and failed/ are created; a second service on the same output exits 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "tumord.cli", "watch", "--output", "out"], cwd=folder, env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:
            if "service.ready" in line:
                break
        assert (folder / "out" / "archive").is_dir() and (folder / "out" / "failed").is_dir()
        r = watch(folder, "--output", "out")
        assert r.returncode == 2 and "another `tumord watch`" in r.stderr
    finally:
        first.terminate()
        first.wait(10)
    assert first.returncode == 0
