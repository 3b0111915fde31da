"""Settings of the training jobs: typed sections, read from defaults, a file and the command line.

Each job names its sections, each a dataclass whose fields are the settings and whose defaults
are the documented ones (``pinzi pretrain``: ``train``, ``noise``, ``model``; ``pinzi
finetune``: ``train``, ``noise``, ``lora``; ``pinzi classify train``: ``train``, ``classify``,
``lora``). Values are layered, later ones winning: the field defaults, the job's own defaults,
a YAML or TOML file (``--config``), then ``--set`` and the command's flags. A file groups its
settings under their section names; a setting outside any section, or ``--set key=value``, is
routed to the one section that has it (``--set train.learning_rate=5e-4`` names it outright).

Everything is checked before a job starts: an unknown name (with the closest known one), a key
in the wrong section (with the right one), a section the job does not have, a value of the
wrong type, or a text that is not one of its field's choices (``Literal``) is a
:class:`~pinzi.errors.SettingsError`. YAML reads ``no`` as false: for a field whose choices
include ``"no"`` (``mixed_precision``) false means ``"no"``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the package tomli
    import tomli as tomllib

from pinzi.errors import SettingsError
from pinzi.io import write_atomic

Sections = dict[str, type]
Layers = dict[str, Any] | Sequence[dict[str, Any]] | None
SETTINGS_FILE = "settings.json"  # the settings a run used, written into its folder


def layers(settings: Layers) -> list[dict[str, Any]]:
    """Settings as a list of layers, later ones winning (one dict is one layer)."""
    if settings is None:
        return []
    return [settings] if isinstance(settings, dict) else list(settings)


def record(out: Path, resolved: dict[str, Any]) -> None:
    """Write the settings a run uses into its folder (``settings.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(as_dict(resolved), indent=2, ensure_ascii=False) + "\n"
    write_atomic(out / SETTINGS_FILE, text.encode())


def read_config_file(path: str | Path | None) -> dict[str, Any]:
    """The settings of a YAML or TOML file, as written (sections stay nested)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except OSError as err:
        raise SettingsError(f"cannot read config file {path}: {err.strerror}") from err
    except Exception as err:  # a parser error: show where, not a traceback
        raise SettingsError(f"config file {path} is not valid: {err}") from err
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold key: value settings")
    return data


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    """``["train.learning_rate=5e-4", "seed=7"]`` -> settings, values read as YAML scalars."""
    settings: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"--set expects key=value, got {item!r}")
        settings[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else ""
    return settings


def resolve(sections: Sections, *layers: dict[str, Any], where: str = "the settings"
            ) -> dict[str, Any]:
    """One instance per section from ``layers`` (each a file's dict, ``--set`` values or
    flags; later ones win), every value checked and typed."""
    values: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for layer in layers:
        for key, value in layer.items():
            if key in sections and isinstance(value, dict):
                for field, item in value.items():
                    values[key][_check_field(sections, key, str(field))] = item
            else:
                section, field = _route(sections, key)
                values[section][field] = value
    return {name: _build(cls, values[name], name, where) for name, cls in sections.items()}


def as_dict(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Resolved sections as plain JSON-able dicts (for run folders and reports)."""
    return json.loads(json.dumps({k: dataclasses.asdict(v) for k, v in resolved.items()},
                                 default=str))


# ---- routing ------------------------------------------------------------------------------------
def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _route(sections: Sections, key: str) -> tuple[str, str]:
    """(section, field) of a flat or dotted key."""
    if "." in key:
        section, _, field = key.partition(".")
        if section not in sections:
            raise SettingsError(f"unknown section {section!r} in {key!r}; this job's sections "
                                f"are {', '.join(sections)}")
        return section, _check_field(sections, section, field)
    owners = [name for name, cls in sections.items() if key in _fields(cls)]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise SettingsError(f"{key!r} is a setting of {' and '.join(owners)}: name one, as in "
                            f"{owners[0]}.{key}")
    if key in sections:
        raise SettingsError(f"section {key!r} must hold key: value settings")
    every = [f"{name}.{f}" for name, cls in sections.items() for f in _fields(cls)]
    close = difflib.get_close_matches(key, [e.split(".", 1)[1] for e in every], n=1)
    hint = f" (did you mean {next(e for e in every if e.endswith('.' + close[0]))!r}?)" \
        if close else ""
    raise SettingsError(f"unknown setting {key!r}{hint}")


def _check_field(sections: Sections, section: str, field: str) -> str:
    known = _fields(sections[section])
    if field in known:
        return field
    elsewhere = [name for name, cls in sections.items() if field in _fields(cls)]
    if elsewhere:
        raise SettingsError(f"{field!r} is not a setting of section {section!r}; it belongs "
                            f"in {elsewhere[0]!r}")
    close = difflib.get_close_matches(field, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SettingsError(f"unknown setting {field!r} in section {section!r}{hint}")


# ---- typing -------------------------------------------------------------------------------------
def _build(cls: type, values: dict[str, Any], section: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    typed = {key: _coerce(value, hints[key], f"{section}.{key}", where)
             for key, value in values.items()}
    return cls(**typed)


def _coerce(value: Any, kind: Any, name: str, where: str) -> Any:
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name, where)
    if origin is Literal:
        if isinstance(value, bool) and "no" in args and not value:
            value = "no"  # YAML's `no`
        if value not in args:
            raise SettingsError(f"{name} in {where} must be one of "
                                f"{', '.join(map(str, args))}; got {value!r}")
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{name} in {where} must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise SettingsError(f"{name} in {where} must be a number, got {value!r}")
        try:
            number = float(value) if kind is float else _integer(value)
        except (TypeError, ValueError):
            wanted = "an integer" if kind is int else "a number"
            raise SettingsError(f"{name} in {where} must be {wanted}, got {value!r}") from None
        return number
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise SettingsError(f"{name} in {where} must be text, got {value!r} (quote it)")
    raise TypeError(f"settings of type {kind} are not supported")  # a bug in a dataclass


def _integer(value: Any) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    return int(value)
