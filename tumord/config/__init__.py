"""Configuration: read from config.yaml, checked strictly against the table of settings.

An unknown key, a wrong type or a bad value is a ConfigError that names the file and the key;
commands turn it into one line on stderr and exit code 2. `python -m tumord.config` prints the
shipped config.yaml: every setting with its default and what it is for.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tumord.config.table import HEADER, SECTIONS, TABLE, Key, defaults

DEFAULTS: dict[str, Any] = defaults()
COMMENT_COLUMN = 26


class ConfigError(ValueError):
    pass


def _check(value: Any, key: Key, name: str, source: str) -> Any:
    def fail(expected: str):
        raise ConfigError(f"{source}: {name} = {value!r} is not valid; expected {expected}")

    default = key.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            fail("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            fail("a whole number")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            fail("a string")
    elif isinstance(default, list):
        item = type(default[0]) if default else str
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            fail(f"a list of {item.__name__}")
    if not key.allows(value):
        fail(key.expected())
    return value


def _merge(raw: Any, table: dict, name: str, source: str) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {name} = {raw!r} is not valid; expected a mapping of settings")
    unknown = sorted(set(raw) - set(table))
    if unknown:
        raise ConfigError(f"{source}: unknown key {name + '.' if name else ''}{unknown[0]}; "
                          f"expected one of {', '.join(sorted(table))}")
    merged = {}
    for k, entry in table.items():
        full = f"{name}.{k}" if name else k
        if isinstance(entry, dict):
            merged[k] = _merge(raw.get(k, {}), entry, full, source)
        else:
            merged[k] = _check(raw[k], entry, full, source) if k in raw else copy.deepcopy(entry.default)
    return merged


def validate(raw: dict | None, source: str = "config") -> dict:
    return _merge(raw or {}, TABLE, "", source)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Reads and validates a YAML file (defaults alone when path is None), then KEY=VALUE overrides."""
    raw: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the configuration file ({e.strerror})") from e
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=10")
        node = raw
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p} is not a section")
        node[leaf] = yaml.safe_load(text)
    return validate(raw, source if not overrides else f"{source} with --set")


def _line(text: str, doc: str) -> list[str]:
    """`key: value` with its comment in the comment column, and the comment's continuation lines."""
    if not doc:
        return [text]
    first, *more = doc.split("\n")
    lines = [f"{text.ljust(COMMENT_COLUMN - 1)} # {first}"]
    return lines + [f"{' ' * COMMENT_COLUMN}#   {m}" for m in more]


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()


def render(table: dict = TABLE, name: str = "", indent: str = "") -> list[str]:
    """The table as commented YAML lines: the shipped config.yaml."""
    lines = []
    for k, entry in table.items():
        full = f"{name}.{k}" if name else k
        if isinstance(entry, dict):
            if not indent:
                lines.append("")
            lines += _line(f"{indent}{k}:", SECTIONS.get(full, ""))
            lines += render(entry, full, indent + "  ")
        else:
            lines += _line(f"{indent}{k}: {_yaml_value(entry.default)}", entry.doc)
    return lines


def default_yaml() -> str:
    return "\n".join([HEADER, *render()]) + "\n"
