"""The pinzi models: a bidirectional Transformer encoder written here, an LSTM baseline, heads.

Reads top to bottom: config and size presets, the Transformer block, the two encoders,
then the task models that put heads on them (``PinziForPinyin`` converts, ``PinziForClassification``
labels texts). Weights are saved with ``save_pretrained`` as safetensors + config.json, and the
vocabulary (``vocab.json``, see :mod:`pinzi.tokenizer`) beside them.

Shapes in comments: B batch, T tokens, D hidden size, H heads, N selected positions, C chars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutput, ModelOutput
from transformers.utils import logging as hf_logging

from pinzi.errors import ModelLoadError, SettingsError
from pinzi.hf import PinziHFTokenizer
from pinzi.hub import (
    CONFIG_FILE,
    check_config,
    damaged,
    read_config,
    require_converter,
    resolve_model,
)
from pinzi.tokenizer import VOCAB_FILE, PinziTokenizer

# Loading and saving a few-MB model needs no progress bars of its own (they would also
# break the training progress bar and the one-line-per-line output of `pinzi convert`).
hf_logging.disable_progress_bar()

ARCHS = ("transformer", "lstm-attention")
WEIGHTS_FILE = "model.safetensors"

# Named sizes. Parameter counts are for a vocabulary of ~8k characters (see `pinzi info`).
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256),
    "small": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048),
    "large": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}


class PinziConfig(PretrainedConfig):
    """Hyper-parameters of a pinzi model; the vocabulary layout comes from the tokenizer."""

    model_type = "pinzi"

    def __init__(
        self,
        vocab_size: int = 8000,
        char_offset: int = 5,  # first char id: the head scores ids [char_offset, +n_chars)
        n_chars: int = 7000,
        arch: str = "transformer",
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int = 1024,  # MLP width, 4x hidden as in BERT/GPT
        max_position_embeddings: int = 256,  # longest input; the converter windows longer ones
        dropout: float = 0.1,
        initializer_range: float = 0.02,
        num_labels: int | None = None,  # classification only; None: from id2label, else 2
        label_names: list[str] | None = None,  # classification only, index -> name
        pad_token_id: int = 0,
        **kwargs,
    ):
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        check_config(dict(vocab_size=vocab_size, char_offset=char_offset, n_chars=n_chars,
                          hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                          intermediate_size=intermediate_size, dropout=dropout,
                          max_position_embeddings=max_position_embeddings))
        self.vocab_size = vocab_size
        self.char_offset = char_offset
        self.n_chars = n_chars
        self.arch = arch
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.label_names = list(label_names) if label_names else None
        if num_labels is not None:  # an explicit count wins; otherwise a saved id2label
            kwargs["num_labels"] = num_labels  # (3 labels) must not be reset to 2 on load
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> PinziConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


@dataclass
class ModelSettings:
    """The ``model`` section of ``pinzi pretrain``'s settings: a named size, and any field of it
    to set otherwise (None: the preset's value, or :class:`PinziConfig`'s default)."""

    preset: Literal["tiny", "small", "base", "large"] = "small"
    arch: Literal["transformer", "lstm-attention"] = "transformer"
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int | None = None
    dropout: float | None = None
    initializer_range: float | None = None

    def config(self, tokenizer: PinziTokenizer) -> PinziConfig:
        """The config of a new model over ``tokenizer``'s vocabulary."""
        fields = {k: v for k, v in asdict(self).items() if k != "preset" and v is not None}
        try:
            return PinziConfig.from_preset(self.preset, vocab_size=tokenizer.vocab_size,
                                           char_offset=tokenizer.char_offset,
                                           n_chars=tokenizer.n_chars, **fields)
        except ValueError as err:
            raise SettingsError(f"model settings: {err}") from err


# ---- the Transformer ------------------------------------------------------------------------
class SelfAttention(nn.Module):
    def __init__(self, config: PinziConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, D // self.num_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D/H)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: PinziConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.hidden_size)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), attn_bias))
        return x + self.drop(self.mlp(self.ln2(x)))


class TransformerEncoder(nn.Module):
    def __init__(self, config: PinziConfig):
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.pos = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        T = input_ids.shape[1]
        x = self.drop(self.embed(input_ids) + self.pos(torch.arange(T, device=input_ids.device)))
        attn_bias = None
        if attention_mask is not None:  # (B, T) 1 = real token -> additive (B, 1, 1, T)
            padding = 1.0 - attention_mask[:, None, None, :].to(x.dtype)
            attn_bias = padding * torch.finfo(x.dtype).min
        for block in self.blocks:
            x = block(x, attn_bias)
        return self.ln_f(x)  # (B, T, D)


# ---- the LSTM baseline ----------------------------------------------------------------------
class LSTMAttentionEncoder(nn.Module):
    """The seed material's LSTM encoder-decoder with attention, aligned to the input.

    A bidirectional LSTM encodes the tokens; a decoder LSTM runs over the encoder states and
    each of its steps attends (dot-product) over all encoder states. Pinyin-to-hanzi output is
    aligned one character per syllable, so the decoder emits at every input position and needs
    no autoregressive feedback: the same heads and decoding as the Transformer apply.
    """

    def __init__(self, config: PinziConfig):
        super().__init__()
        D = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, D, padding_idx=0)
        self.encoder = nn.LSTM(D, D // 2, num_layers=max(1, config.num_layers // 2),
                               batch_first=True, bidirectional=True)
        self.decoder = nn.LSTM(D, D, batch_first=True)
        self.combine = nn.Linear(2 * D, D)
        self.drop = nn.Dropout(config.dropout)
        self.ln_f = nn.LayerNorm(D)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        memory, _ = self.encoder(self.drop(self.embed(input_ids)))  # (B, T, D)
        state, _ = self.decoder(memory)
        attn_bias = None
        if attention_mask is not None:
            padding = 1.0 - attention_mask[:, None, :].to(state.dtype)
            attn_bias = padding * torch.finfo(state.dtype).min
        context = F.scaled_dot_product_attention(state, memory, memory, attn_mask=attn_bias)
        return self.ln_f(self.combine(self.drop(torch.cat([state, context], dim=-1))))


ENCODERS = {"transformer": TransformerEncoder, "lstm-attention": LSTMAttentionEncoder}


# ---- task models ----------------------------------------------------------------------------
class PinziPreTrainedModel(PreTrainedModel):
    config_class = PinziConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"

    def __init__(self, config: PinziConfig):
        super().__init__(config)
        self.encoder = ENCODERS[config.arch](config)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.encoder(input_ids, attention_mask)


class PinziModel(PinziPreTrainedModel):
    """The bare encoder, what ``AutoModel`` loads: hidden states (B, T, D), no head.

    Its weights are named as in the task models (``encoder.*``), so it loads the encoder of a
    converter or a classifier folder and leaves their heads out.
    """

    _keys_to_ignore_on_load_unexpected = [r"^char_bias$", r"^classifier\."]  # the task heads

    def __init__(self, config: PinziConfig):
        super().__init__(config)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=self.encode(input_ids, attention_mask))


@dataclass
class PinyinOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (N, C) at the selected positions


class PinziForPinyin(PinziPreTrainedModel):
    """Encoder + conversion head tied to the character embeddings.

    At each pinyin position the head scores every character (``hidden @ char_embeddings.T``);
    the loss is a softmax over the *candidate set* only (the characters the token can be read
    as), which is the task's real output space.
    """

    def __init__(self, config: PinziConfig):
        super().__init__(config)
        self.char_bias = nn.Parameter(torch.zeros(config.n_chars))
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, PinziForPinyin):
            nn.init.zeros_(module.char_bias)

    def char_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., C) scores over every character of the vocabulary."""
        start = self.config.char_offset
        chars = self.encoder.embed.weight[start : start + self.config.n_chars]
        return hidden @ chars.T + self.char_bias

    def score_candidates(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         slots: torch.Tensor, candidates: torch.Tensor,
                         owner: torch.Tensor) -> torch.Tensor:
        """Logits of just the candidates that decoding needs: the inference graph.

        ``slots`` (N,) are flat indices ``row * T + t`` of the pinyin positions, ``candidates``
        (M,) char indices, and ``owner`` (M,) the slot each candidate belongs to. Scoring a
        position's ~100 candidates instead of all C characters is what makes a keystroke cheap.
        """
        hidden = self.encode(input_ids, attention_mask).flatten(0, 1)[slots]  # (N, D)
        rows = self.encoder.embed.weight[self.config.char_offset + candidates]  # (M, D)
        return (hidden[owner] * rows).sum(-1) + self.char_bias[candidates]  # (M,)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T)
        labels: torch.Tensor | None = None,  # (B, T) char index in [0, C) or -100
        candidate_mask: torch.Tensor | None = None,  # (N, C) bool for the N labelled positions
    ) -> PinyinOutput:
        hidden = self.encode(input_ids, attention_mask)
        if labels is None:
            return PinyinOutput(logits=self.char_logits(hidden))
        selected = labels != -100
        logits = self.char_logits(hidden[selected])  # (N, C)
        if candidate_mask is not None:
            logits = logits.masked_fill(~candidate_mask, torch.finfo(logits.dtype).min)
        loss = F.cross_entropy(logits.float(), labels[selected])
        return PinyinOutput(loss=loss, logits=logits)


@dataclass
class ClassificationOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, num_labels)


class PinziForClassification(PinziPreTrainedModel):
    """Encoder + mean pooling + a linear classifier; an optional per-class loss weight."""

    def __init__(self, config: PinziConfig):
        super().__init__(config)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,  # (B,)
        class_weights: torch.Tensor | None = None,  # (num_labels,)
    ) -> ClassificationOutput:
        hidden = self.encode(input_ids, attention_mask)
        if attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        logits = self.classifier(self.drop(pooled))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels, weight=class_weights)
        return ClassificationOutput(loss=loss, logits=logits)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def load_pretrained(cls: type[PinziPreTrainedModel], name_or_path: str | Path | None,
                    **overrides):
    """Load ``cls`` and its tokenizer from a folder, a Hugging Face hub id, or the shipped model
    (``None``); safetensors only.

    Returns ``(model, tokenizer)``; raises :class:`ModelLoadError` with a readable reason: a
    damaged folder (:func:`pinzi.hub.damaged`), a classifier loaded as a converter.
    """
    folder = resolve_model(name_or_path)
    if cls is PinziForPinyin:
        require_converter(folder, name_or_path)
    tokenizer = PinziTokenizer.load(folder)
    config = _saved_config(folder, tokenizer)
    _check_weights(cls, config, folder, new_heads=overrides.get("ignore_mismatched_sizes", False))
    try:
        # float32 whatever the file holds: the shipped weights are float16 to halve the size
        model = cls.from_pretrained(folder, use_safetensors=True, dtype=torch.float32,
                                    **overrides)
    except Exception as err:  # what the checks above cannot see: the tensors' bytes
        raise damaged(folder, f"{WEIGHTS_FILE} cannot be loaded: {err}") from err
    model.eval()
    return model, tokenizer


def _saved_config(folder: Path, tokenizer: PinziTokenizer) -> PinziConfig:
    """The folder's config, checked, and matching its vocabulary's layout."""
    values = read_config(folder)
    if values.get("model_type") != PinziConfig.model_type:
        raise ModelLoadError(f"{folder} is not a pinzi model (its config.json has model_type "
                             f"{values.get('model_type')!r})")
    try:
        config = PinziConfig.from_dict(values)
    except (ValueError, TypeError) as err:
        raise damaged(folder, f"{CONFIG_FILE}: {err}") from err
    layout = (config.vocab_size, config.char_offset, config.n_chars)
    if layout != (tokenizer.vocab_size, tokenizer.char_offset, tokenizer.n_chars):
        raise damaged(folder, f"{VOCAB_FILE} has {tokenizer.vocab_size} tokens, "
                      f"{tokenizer.n_chars} characters from id {tokenizer.char_offset}, but "
                      f"{CONFIG_FILE} says {config.vocab_size}, {config.n_chars} from id "
                      f"{config.char_offset}")
    return config


def _check_weights(cls: type[PinziPreTrainedModel], config: PinziConfig, folder: Path,
                   new_heads: bool) -> None:
    """:func:`damaged` unless the weights file holds the encoder ``config`` describes, checked
    on the file's header against the model built on the meta device (no memory): otherwise
    ``from_pretrained`` would fill missing blocks with random numbers, drop extra ones, or
    allocate the absurd sizes of a damaged config. With ``new_heads`` (a base for another
    task) the heads may differ."""
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        return  # from_pretrained says what is missing
    try:
        with safe_open(path, "pt") as weights:
            names = weights.keys()
            found = {key: tuple(weights.get_slice(key).get_shape()) for key in names}
    except Exception as err:  # safetensors' own error type for a truncated or foreign file
        raise damaged(folder, f"{WEIGHTS_FILE} cannot be loaded: {err}") from err
    try:
        with torch.device("meta"):
            expected = {key: tuple(tensor.shape)
                        for key, tensor in cls(config).state_dict().items()}
    except RuntimeError as err:  # sizes whose product overflows
        raise damaged(folder, f"{CONFIG_FILE} describes no model that can be built: {err}"
                      ) from err
    shared = found.keys() & expected.keys()
    checked = {key for key in found.keys() | expected.keys() if key.startswith("encoder.")}
    wrong = sorted(key for key in checked | (set() if new_heads else shared)
                   if found.get(key) != expected.get(key))
    if wrong:
        key = wrong[0]
        raise damaged(folder, f"{WEIGHTS_FILE} does not hold the model {CONFIG_FILE} describes: "
                      f"{len(wrong)} weights differ, {key} is {found.get(key) or 'missing'} in "
                      f"the file and {expected.get(key) or 'absent'} in the model")


# ---- Hugging Face Auto classes ---------------------------------------------------------------
# Importing this module (``import pinzi.model``, which any use of a pinzi model does) makes
# AutoConfig / AutoModel* / AutoTokenizer.from_pretrained(folder) understand pinzi folders.
# `import pinzi` alone does not: it must stay free of torch and transformers.
AutoConfig.register(PinziConfig.model_type, PinziConfig, exist_ok=True)
AutoModel.register(PinziConfig, PinziModel, exist_ok=True)
# PinziForPinyin is masked-LM-like: at each position typed as pinyin (a syllable, an initial or
# [MASK]) it predicts the character, with a head tied to the input embeddings. Its logits score
# the C characters only, index i being vocabulary id char_offset + i, not the whole vocabulary.
AutoModelForMaskedLM.register(PinziConfig, PinziForPinyin, exist_ok=True)
AutoModelForSequenceClassification.register(PinziConfig, PinziForClassification, exist_ok=True)
AutoTokenizer.register(PinziConfig, tokenizer_class=PinziHFTokenizer, exist_ok=True)
