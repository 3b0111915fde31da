"""Where a model lives: the shipped model, a local folder, or a Hugging Face hub id.

One rule decides between a path and a hub id, for every command: a name that exists on disk
is a folder; a name that *looks* local (it starts with ``.``, ``/`` or ``~``, holds a
backslash or more than one ``/``, or ends like a file) never goes to the hub, so a mistyped
path fails at once with "no such folder" instead of a slow, confusing download attempt;
anything else (``name`` or ``owner/name``) is a hub id, downloaded whole into the hub's
cache (the downloads of the tests and of an offline machine come from that cache).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from pinzi.errors import ModelLoadError

_FILE_ENDINGS = (".json", ".safetensors", ".onnx", ".npz", ".txt", ".gz", ".tsv", ".csv",
                 ".jsonl", ".yaml", ".toml")


def shipped_model_path() -> Path:
    """The folder of the converter that ships inside the package."""
    return Path(str(resources.files("pinzi") / "resources" / "model"))


def looks_local(name: str) -> bool:
    """Whether ``name`` is meant as a path (never a hub id), whether or not it exists."""
    return (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
            or name.lower().endswith(_FILE_ENDINGS))


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
        return path
    if path.exists():
        raise ModelLoadError(f"{name} is a file, not a model folder")
    if looks_local(name):
        raise ModelLoadError(f"no model folder {name!r}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name))
    except Exception as err:  # offline, unknown repo, bad name: one clear message
        raise ModelLoadError(f"no model folder {name!r} here, and it could not be fetched from "
                             f"the Hugging Face hub: {err}") from err


def model_config(name_or_path: str | Path) -> tuple[str, dict]:
    """``(folder or hub id, its config.json)`` without downloading any weights.

    A hub model that turns out to be pinzi's is then downloaded whole (pinzi's loaders want a
    folder); any other is left to ``transformers``' own ``from_pretrained``, which caches
    only the files it needs.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    try:
        if path.exists() or looks_local(name):
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"{name} is not a model folder (no config.json in it)"
                                     if path.exists() else f"no model folder {name!r}")
            return str(path), _read_json_object(path / "config.json")
        from huggingface_hub import hf_hub_download

        config = _read_json_object(Path(hf_hub_download(name, "config.json")))
    except ModelLoadError:
        raise
    except Exception as err:  # offline, unknown repo, bad name: one clear message
        raise ModelLoadError(f"no model folder {name!r} here, and it could not be fetched from "
                             f"the Hugging Face hub: {err}") from err
    if config.get("model_type") == "pinzi":
        return str(resolve_model(name)), config
    return name, config


def _read_json_object(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path} cannot be read as a model config: {err}") from err
    if not isinstance(values, dict):
        raise ModelLoadError(f"{path} is not a model config (not a JSON object)")
    return values
