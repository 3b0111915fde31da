"""LoRA adapters (``peft``) on pinzi models and Hugging Face encoders: the one implementation.

An adapter adds low-rank updates ``B @ A`` (rank ``r``, scaled by ``alpha / r``) beside the
Linear layers named in ``targets`` and trains only those (plus any module named in
``train_also``, such as a new classifier); the base weights stay bit-identical. The model class
knows nothing of LoRA: peft swaps the named modules for wrapped ones in place
(``inject_adapter_in_model``). A target matches a module whose name is it or ends in ``.`` + it
(``qkv`` matches ``encoder.blocks.3.attn.qkv``); with no targets, peft's own table of the usual
Hugging Face encoders decides (``query``, ``value`` for BERT).

An adapter folder is ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's formats)
+ ``adapter_base.json`` (the base it was trained on and its fingerprint, see
:func:`fingerprint`). It loads on top of its base (:func:`load_adapter`) or is folded into
the weights (:func:`merge_into_base`); an adapter on a base with another vocabulary or
configuration is a :class:`~pinzi.errors.ModelLoadError`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import (
    LoraConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from torch import nn

from pinzi.errors import ModelLoadError, SettingsError
from pinzi.tokenizer import VOCAB_FILE, PinziTokenizer

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_BASE = "adapter_base.json"
ADAPTER_FORMAT = "pinzi-lora-1"
PINZI_TARGETS = ("qkv", "out", "mlp.0", "mlp.2")  # of every block: attention in/out, MLP in/out

# What must agree between an adapter's base and the model it is loaded on.
_ARCH_FIELDS = ("arch", "vocab_size", "char_offset", "n_chars", "hidden_size", "num_layers",
                "num_heads", "intermediate_size", "max_position_embeddings")


@dataclass
class LoraSettings:
    """The ``lora`` section of the fine-tuning settings."""

    rank: int = 8  # r: the rank of the update B @ A
    alpha: float = 16  # updates are scaled by alpha / r
    dropout: float = 0.05  # on the adapter's input
    targets: str = ""  # comma-separated module names; "": qkv,out,mlp.0,mlp.2 (peft's for HF)

    def target_names(self, model: nn.Module) -> list[str] | None:
        """The module names to adapt in ``model``; None leaves the choice to peft's table."""
        names = [t.strip() for t in self.targets.split(",") if t.strip()]
        if names:
            return names
        return list(PINZI_TARGETS) if getattr(model.config, "model_type", "") == "pinzi" else None

    def check(self) -> None:
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise SettingsError(f"LoRA needs rank >= 1, alpha > 0 and 0 <= dropout < 1 (got "
                                f"rank {self.rank}, alpha {self.alpha}, dropout {self.dropout})")


def apply_lora(model: nn.Module, settings: LoraSettings, *,
               train_also: Sequence[str] = ()) -> nn.Module:
    """Put fresh LoRA layers on ``model`` (in place) and freeze every other weight, except
    those of the modules named in ``train_also``. ``B`` starts at zero, so the outputs do not
    change until it trains. SettingsError when a target matches no Linear layer."""
    settings.check()
    targets = settings.target_names(model)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                        lora_dropout=settings.dropout, target_modules=targets)
    _inject(model, config)
    for name, param in model.named_parameters():
        if any(f".{t}." in f".{name}" for t in train_also):
            param.requires_grad = True
    return model


def check_targets(model: nn.Module, targets: Sequence[str] | None) -> None:
    """SettingsError when a LoRA target matches no Linear layer of ``model``."""
    if targets is None:
        return
    linear = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in linear)]
    if missing:
        arch = getattr(model.config, "arch", getattr(model.config, "model_type", "?"))
        raise SettingsError(f"LoRA target(s) {', '.join(missing)} match no Linear layer of this "
                            f"{arch} model (pinzi's Transformer blocks have attn.qkv, attn.out, "
                            "mlp.0, mlp.2); name others with --set lora.targets=a,b, or train "
                            "every weight")


def _inject(model: nn.Module, config) -> nn.Module:
    if hasattr(model, "peft_config"):
        raise SettingsError("the model already has a LoRA adapter; load the base model again")
    check_targets(model, None if config.target_modules is None else list(config.target_modules))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers/peft deprecation chatter
        try:
            return inject_adapter_in_model(config, model)
        except ValueError as err:  # e.g. peft knows no default targets for this model
            raise SettingsError(f"LoRA cannot be applied to this model: {err}; name its "
                                "layers with --set lora.targets=a,b") from err


def set_adapter_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every LoRA layer of ``model`` on or off (off: exactly the base model's outputs)."""
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(enabled)


def has_adapter(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def merge_into_base(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base Linear (``W + (alpha / r) B A``), in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def merged_copy(model: nn.Module) -> nn.Module:
    """``model`` itself without an adapter, else a copy with the adapter folded in."""
    return merge_into_base(copy.deepcopy(model)) if has_adapter(model) else model


# ---- fingerprints -------------------------------------------------------------------------------
def fingerprint(model: nn.Module, tokenizer: PinziTokenizer | None = None) -> dict[str, Any]:
    """What identifies a base model: its architecture, its vocabulary and its weights.

    ``config``/``vocab`` must match for an adapter to load; ``weights`` (a hash of the base
    weights, LoRA layers ignored) only warns, since a retrained base of the same shape loads.
    """
    arch = {name: getattr(model.config, name) for name in _ARCH_FIELDS}
    weights = hashlib.sha256()
    for name, tensor in sorted(_base_state_dict(model).items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        weights.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        weights.update(flat.view(torch.uint8).numpy().tobytes())
    return {"arch": arch, "config": _sha(json.dumps(arch, sort_keys=True)),
            "vocab": _sha(json.dumps(list(tokenizer.chars), ensure_ascii=False))
            if tokenizer is not None else None,
            "weights": weights.hexdigest()}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict under the base's own names, whether or not LoRA layers are in place."""
    return {name.replace(".base_layer.", "."): tensor
            for name, tensor in model.state_dict().items() if ".lora_" not in name}


# ---- adapter folders ----------------------------------------------------------------------------
def save_adapter(model: nn.Module, directory: str | Path, *, base: str, base_path: str,
                 base_fingerprint: dict[str, Any]) -> None:
    """Write the adapter alone: its weights, its peft config and the base it belongs to."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
              str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = model.peft_config["default"]
    config.base_model_name_or_path = base
    config.save_pretrained(str(directory))
    info = {"format": ADAPTER_FORMAT, "base": base, "base_path": base_path,
            "fingerprint": base_fingerprint,
            "adapter_parameters": sum(v.numel() for v in state.values())}
    (directory / ADAPTER_BASE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")


def read_adapter(directory: str | Path) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """(LoraConfig, weights, base info) of an adapter folder; ModelLoadError if it is none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"no adapter folder {str(directory)!r}")
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_BASE)
               if not (directory / n).is_file()]
    if missing:
        raise ModelLoadError(f"{directory} is not a pinzi LoRA adapter (no "
                             f"{', '.join(missing)}); adapters come from "
                             "`pinzi finetune --lora`")
    try:
        info = json.loads((directory / ADAPTER_BASE).read_text(encoding="utf-8"))
        config = LoraConfig.from_pretrained(str(directory))
        weights = load_file(str(directory / ADAPTER_WEIGHTS))
    except Exception as err:  # bad JSON, a foreign peft config, truncated safetensors
        raise ModelLoadError(f"the adapter in {directory} cannot be read: {err}") from err
    if info.get("format") != ADAPTER_FORMAT:
        raise ModelLoadError(f"{directory}/{ADAPTER_BASE} is not of format {ADAPTER_FORMAT}")
    return config, weights, info


def load_adapter(model: nn.Module, adapter_dir: str | Path, *,
                 tokenizer: PinziTokenizer | None = None) -> nn.Module:
    """Put the adapter saved in ``adapter_dir`` on ``model`` (in place) and return it.

    The base's architecture and vocabulary must be those the adapter was trained on (the
    vocabulary is read from ``tokenizer``, else from the model's folder): otherwise a
    :class:`ModelLoadError` names the base it needs. Other base weights of the same shape
    (e.g. a later checkpoint) load with a warning.
    """
    config, weights, info = read_adapter(adapter_dir)
    if tokenizer is None and model.name_or_path and Path(model.name_or_path, VOCAB_FILE).is_file():
        tokenizer = PinziTokenizer.load(model.name_or_path)
    _check_base(fingerprint(model, tokenizer), info, adapter_dir)
    config.inference_mode = True
    try:
        _inject(model, config)
    except SettingsError as err:
        raise ModelLoadError(f"adapter {adapter_dir}: {err}") from err
    result = set_peft_model_state_dict(model, weights)
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if result.unexpected_keys or missing:
        raise ModelLoadError(f"adapter {adapter_dir} does not fit the model: "
                             f"{len(missing)} missing and {len(result.unexpected_keys)} "
                             f"unexpected tensors, e.g. {(missing + result.unexpected_keys)[0]}")
    return model.eval()


def _check_base(found: dict[str, Any], info: dict[str, Any], adapter_dir) -> None:
    wanted = info.get("fingerprint", {})
    base = info.get("base", "?")
    if info.get("base_path") and info["base_path"] != base:
        base += f" ({info['base_path']})"
    differ = [f"{k} {found['arch'][k]} instead of {v}"
              for k, v in wanted.get("arch", {}).items() if found["arch"].get(k) != v]
    if differ or found["config"] != wanted.get("config"):
        raise ModelLoadError(f"adapter {adapter_dir} was trained on base {base} and does not fit "
                             f"this model ({'; '.join(differ) or 'another configuration'}): "
                             "load it on its base model")
    if found["vocab"] is not None and found["vocab"] != wanted.get("vocab"):
        raise ModelLoadError(f"adapter {adapter_dir} was trained on base {base}, whose vocabulary "
                             "differs from this model's: load it on its base model")
    if found["weights"] != wanted.get("weights"):
        warnings.warn(f"adapter {adapter_dir} was trained on other weights of this architecture "
                      f"(base {base}); the results may suffer", UserWarning, stacklevel=3)
