"""Where a model lives: the shipped model, a local folder, or a Hugging Face hub id.

One rule decides between a path and a hub id, for every command: a name that exists on disk
is a folder; a name that *looks* local (it starts with ``.``, ``/`` or ``~``, holds a
backslash or more than one ``/``, ends like a file, or its folder part is a folder here, as in
``runs/tyop``) never goes to the hub, so a mistyped path fails at once with "no model folder"
instead of a slow, confusing download attempt; anything else (``name`` or ``owner/name``) is a
hub id, downloaded whole into the hub's cache (the downloads of the tests and of an offline
machine come from that cache). When the hub cannot be reached (``HF_HUB_OFFLINE=1``, or no
answer within :data:`HUB_PROBE_SECONDS`), only the cache is looked at: the hub client would
otherwise retry five times, half a minute, before failing.

It also holds what every loader checks, without torch (the onnxruntime path has none):
:func:`damaged`, the one message of a model folder with a file that cannot be used;
:func:`check_config`, the sizes a pinzi ``config.json`` may have; :func:`require_converter`,
which refuses a classifier or a LoRA adapter where a converter is expected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pinzi.errors import ModelLoadError

_FILE_ENDINGS = (".json", ".safetensors", ".onnx", ".npz", ".txt", ".gz", ".tsv", ".csv",
                 ".jsonl", ".yaml", ".toml")
HUB_PROBE_SECONDS = 3.0
CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"  # what peft saves: a LoRA adapter, not a model
CLASSIFIER_ARCHITECTURES = ("ForSequenceClassification", "ForClassification")
# The sizes in a pinzi config.json, each a whole number of at least 1.
_SIZES = ("vocab_size", "n_chars", "hidden_size", "num_layers", "num_heads", "intermediate_size",
          "max_position_embeddings")
# Far more blocks than any model here has: a config.json asking for more is damaged, and
# building a million blocks would exhaust the memory before the weights could say so.
MAX_LAYERS = 256


def shipped_model_path() -> Path:
    """The folder of the converter that ships inside the package."""
    return Path(str(resources.files("pinzi") / "resources" / "model"))


def damaged(folder: str | Path, problem: str) -> ModelLoadError:
    """The error of a model folder with a file that cannot be used (truncated, empty, of the
    wrong shape or type): ``model folder X is damaged: <file and what is wrong>``."""
    return ModelLoadError(f"model folder {folder} is damaged: {problem}")


def looks_local(name: str) -> bool:
    """Whether ``name`` is meant as a path (never a hub id), whether or not it exists."""
    return (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
            or name.lower().endswith(_FILE_ENDINGS)
            or ("/" in name and Path(name).expanduser().parent.is_dir()))


def hub_reachable() -> bool:
    """Whether the hub may be asked: not ``HF_HUB_OFFLINE``, and it answers within seconds."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:  # the hub client's own session: its proxies and certificates
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_SECONDS)
    except Exception:  # no network, no DNS, a proxy that refuses: the cache alone
        return False
    return True


def _not_found(name: str, online: bool, err: Exception) -> ModelLoadError:
    if online:
        return ModelLoadError(f"no model folder {name!r} here, and it could not be fetched "
                              f"from the Hugging Face hub: {err}")
    return ModelLoadError(f"no model folder {name!r} here, and it is not in the Hugging Face "
                          "cache (the hub cannot be reached, or HF_HUB_OFFLINE is set)")


def resolve_model(name_or_path: str | Path | None) -> Path:
    """The local folder of a model: the shipped one (``None``), a folder, or a hub download.

    Raises :class:`ModelLoadError` for a missing local path, a file where a folder is
    expected, or a hub id that cannot be fetched.
    """
    if name_or_path is None:
        return shipped_model_path()
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return _published(path)
    if path.exists():
        raise ModelLoadError(f"{name} is a file, not a model folder")
    if looks_local(name):
        raise ModelLoadError(f"no model folder {name!r}")
    online = hub_reachable()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=not online))
    except Exception as err:  # unknown repo, bad name, not cached: one clear message
        raise _not_found(name, online, err) from err


def _published(path: Path) -> Path:
    """A training run's folder holds its model once the run ends; until then (an interrupted
    run) the best model so far is in its ``best`` folder."""
    best = path / "best"
    return best if not (path / CONFIG_FILE).exists() and (best / CONFIG_FILE).is_file() else path


def model_config(name_or_path: str | Path) -> tuple[str, dict]:
    """``(folder or hub id, its config.json)`` without downloading any weights.

    A hub model that turns out to be pinzi's is then downloaded whole (pinzi's loaders want a
    folder); any other is left to ``transformers``' own ``from_pretrained``, which caches
    only the files it needs (from the cache's folder when the hub cannot be reached).
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists() or looks_local(name):
        path = _published(path)
        if not (path / CONFIG_FILE).is_file():
            raise ModelLoadError(f"{name} is not a model folder (no config.json in it)"
                                 if path.exists() else f"no model folder {name!r}")
        return str(path), read_config(path)
    online = hub_reachable()
    try:
        from huggingface_hub import hf_hub_download

        config_path = Path(hf_hub_download(name, CONFIG_FILE, local_files_only=not online))
    except Exception as err:  # unknown repo, bad name, not cached: one clear message
        raise _not_found(name, online, err) from err
    config = read_config(config_path.parent)
    if config.get("model_type") == "pinzi":
        return str(resolve_model(name)), config
    return (name if online else str(config_path.parent)), config


def read_config(folder: Path) -> dict:
    """The folder's ``config.json`` as a dict; :func:`damaged` when it is not one."""
    try:
        values = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise damaged(folder, f"{CONFIG_FILE} cannot be read: {err}") from err
    if not isinstance(values, dict):
        raise damaged(folder, f"{CONFIG_FILE} is not a JSON object")
    return values


def check_config(values: Mapping[str, Any]) -> None:
    """ValueError naming the first value of a pinzi config that describes no model: a size that
    is not a whole number of at least 1 (``char_offset``: 0), more than :data:`MAX_LAYERS`
    blocks, characters beyond the vocabulary, heads that do not divide the hidden size, a
    dropout outside [0, 1). Keys left out are not checked: the config's defaults apply."""
    for name in (*_SIZES, "char_offset"):
        least = 0 if name == "char_offset" else 1
        size = values.get(name, least)
        if not isinstance(size, int) or isinstance(size, bool) or size < least:
            raise ValueError(f"{name} must be a whole number of at least {least}, not {size!r}")
    if values.get("num_layers", 1) > MAX_LAYERS:
        raise ValueError(f"num_layers {values['num_layers']} is over {MAX_LAYERS}")
    if {"vocab_size", "char_offset", "n_chars"} <= values.keys() and (
            values["char_offset"] + values["n_chars"] > values["vocab_size"]):
        raise ValueError(f"the {values['n_chars']} characters from id {values['char_offset']} "
                         f"do not fit in a vocabulary of {values['vocab_size']}")
    if {"hidden_size", "num_heads"} <= values.keys() and (
            values["hidden_size"] % values["num_heads"]):
        raise ValueError(f"hidden_size {values['hidden_size']} is not divisible by num_heads "
                         f"{values['num_heads']}")
    dropout = values.get("dropout", 0)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ValueError(f"dropout {dropout!r} is not in [0, 1)")


def require_converter(folder: Path, name: str | Path | None = None) -> None:
    """:class:`ModelLoadError` unless ``folder`` holds a converter: a LoRA adapter must be
    merged first, a text classifier converts nothing (its head is not a converter's), a model
    of another kind is no pinzi model, and a config.json with impossible sizes is
    :func:`damaged`, whichever engine runs the model."""
    name = folder if name is None else name
    if not (folder / CONFIG_FILE).is_file():
        if (folder / ADAPTER_CONFIG_FILE).is_file():
            raise ModelLoadError(f"{name} is a LoRA adapter, not a model: merge it first "
                                 "(`pinzi merge`); `pinzi convert` and `pinzi serve` also "
                                 "take it as --adapter")
        raise ModelLoadError(f"{name} is not a model folder (no {CONFIG_FILE} in it)")
    config = read_config(folder)
    architectures = config.get("architectures") or []
    if architectures and all(str(a).endswith(CLASSIFIER_ARCHITECTURES) for a in architectures):
        raise ModelLoadError(f"{name} is a classifier, not a converter")
    if config.get("model_type") != "pinzi":
        raise ModelLoadError(f"{name} is not a pinzi converter (its {CONFIG_FILE} has "
                             f"model_type {config.get('model_type')!r})")
    try:
        check_config(config)
    except ValueError as err:
        raise damaged(folder, f"{CONFIG_FILE}: {err}") from err
