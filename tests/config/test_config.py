"""The table of settings is the one source: defaults, checks and the shipped config.yaml come from it."""
from pathlib import Path

import pytest
import yaml

from tumord.config import DEFAULTS, ConfigError, default_yaml, load_config, validate
from tumord.config.table import TABLE, Key

SHIPPED = Path(__file__).resolve().parents[2] / "config.yaml"


def keys(table=TABLE, prefix=""):
    for name, entry in table.items():
        if isinstance(entry, dict):
            yield from keys(entry, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", entry


def test_shipped_config_is_printed_from_the_table():
    assert SHIPPED.read_text() == default_yaml(), "run: python -m tumord.config > config.yaml"
    assert yaml.safe_load(SHIPPED.read_text()) == DEFAULTS == load_config(SHIPPED)


def test_every_number_has_bounds_and_every_default_is_allowed():
    for name, key in keys():
        if isinstance(key.default, (int, float)) and not isinstance(key.default, bool):
            assert key.at_least is not None or key.above is not None, f"{name} has no lower bound"
        assert key.allows(key.default), f"{name}: the default {key.default!r} is outside its own bounds"
    assert validate(DEFAULTS) == DEFAULTS  # each default also has its own type


@pytest.mark.parametrize("setting,expected", [
    ("train.val_fraction=1.5", "train.val_fraction = 1.5 is not valid; expected a number above 0 and below 1"),
    ("train.epochs=0", "train.epochs = 0 is not valid; expected a positive number"),
    ("watch.stall_seconds=-1", "watch.stall_seconds = -1.0 is not valid; expected a positive number"),
    ("registry.gate.max_drop=2", "registry.gate.max_drop = 2.0 is not valid; expected a number at least 0 "
                                 "and at most 1"),
    ("train.schedule=constant", "train.schedule = 'constant' is not valid; expected one of step, warmup_cosine, "
                                "one_cycle"),
    ("watch.blas_threads=-2", "expected 0 (the BLAS library's default) or a positive number of threads"),
])
def test_values_outside_the_table_name_the_key_and_what_is_allowed(setting, expected):
    with pytest.raises(ConfigError, match="^defaults with --set: .*") as e:
        load_config(None, [setting])
    assert expected in str(e.value)


def test_allowed_edges_pass():
    cfg = load_config(None, ["train.lr=0", "registry.keep=0", "train.mixup=0", "watch.blas_threads=0"])
    assert (cfg["train"]["lr"], cfg["registry"]["keep"], cfg["watch"]["blas_threads"]) == (0.0, 0, 0)


def test_a_key_states_its_expectation():
    assert Key(1, above=0).expected() == "a positive number"
    assert Key(0.5, at_least=0, below=1).expected() == "a number at least 0 and below 1"
    assert Key("a", choices=("a", "b")).expected() == "one of a, b"


@pytest.mark.parametrize("recipe", sorted((SHIPPED.parent / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_in_configs_passes_the_table(recipe):
    """The recipes behind the documented models stay valid, and say what they set, as the table changes."""
    cfg = load_config(recipe)
    for key, value in keys(yaml.safe_load(recipe.read_text())):
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == value, key
