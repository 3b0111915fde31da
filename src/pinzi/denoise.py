"""The pinyin-denoising objective: pretraining and domain fine-tuning of the converter.

Recipe. For each training sentence, some of its characters are replaced by the pinyin tokens
of those characters, and the model learns to recover the characters at those positions:

* which characters (:class:`NoiseConfig`): the whole sentence (``all_pinyin``, as when typing a
  fresh clause), a suffix after a committed hanzi prefix (``suffix``, typing with left context),
  or else one contiguous run covering about ``span_fraction`` of the sentence;
* how each is typed: the full syllable, or its initial only (``initial_rate``: ``bj`` for 北京),
  or a fuzzy variant (``fuzzy_rate``: ``zong`` for 中 under z=zh).

The loss at a pinyin position is a softmax over the characters that token can stand for
(from the lexicon) plus those of the true syllable, never over every character: that is the
task's real output space. Characters left in place are context, which is what lets the model use
committed text, and lets the same encoder read plain hanzi for classification.

Everything per token is vectorised with numpy; the only Python loops run once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pinzi.lexicon import Lexicon
from pinzi.ngram import CharNgram
from pinzi.pinyin import FUZZY_PAIRS, SYLLABLES, fuzzy_variants, initial_of
from pinzi.tokenizer import PAD_ID, UNK_ID, PinziTokenizer


@dataclass
class NoiseConfig:
    all_pinyin: float = 0.5  # share of sentences typed entirely in pinyin
    suffix: float = 0.3  # share typed in pinyin after a committed hanzi prefix; the rest: one span
    span_fraction: float = 0.4  # mean length of that span, as a share of the sentence
    initial_rate: float = 0.08  # a replaced character typed as its initial only
    fuzzy_rate: float = 0.04  # a replaced character typed as a fuzzy variant of its syllable
    max_length: int = 128  # longer lines are cut
    eval_lines: int = 2000  # validation lines used for loss and char_acc


@dataclass
class TokenizedCorpus:
    """A prepared split as flat arrays: char ids, syllable token ids (0: not hanzi), offsets."""

    chars: np.ndarray  # (total,) int32
    syllables: np.ndarray  # (total,) int32
    offsets: np.ndarray  # (lines + 1,) int64

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_table(cls, table: pa.Table, tokenizer: PinziTokenizer,
                   chunk: int = 200_000) -> TokenizedCorpus:
        """Encode a table with ``text`` and ``pinyin`` columns without a per-character loop."""
        syllable_set = pa.array(SYLLABLES)
        chars, syllables, lengths = [], [], []
        for batch in table.to_batches(max_chunksize=chunk):
            text = batch.column("text")
            codepoints = np.frombuffer("".join(text.to_pylist()).encode("utf-32-le"), np.uint32)
            flat = batch.column("pinyin").flatten()
            if len(flat) != len(codepoints):
                raise ValueError("pinyin column is not aligned with the text (one entry per char)")
            index = pc.index_in(flat, value_set=syllable_set).fill_null(-1).to_numpy()
            chars.append(tokenizer.encode_codepoints(codepoints))
            syllables.append(np.where(index >= 0, index + tokenizer.syllable_offset, 0))
            lengths.append(pc.utf8_length(text).to_numpy(zero_copy_only=False))
        lengths_all = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths_all) + 1, np.int64)
        np.cumsum(lengths_all, out=offsets[1:])
        def joined(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)

        return cls(joined(chars), joined(syllables), offsets)

    def gather(self, lines: np.ndarray, max_length: int) -> tuple[np.ndarray, ...]:
        """(chars, syllables, lengths) of ``lines`` as padded (B, T) arrays."""
        lengths = np.minimum(self.lengths[lines], max_length)
        T = max(1, int(lengths.max(initial=1)))
        positions = self.offsets[lines][:, None] + np.arange(T)[None, :]
        real = np.arange(T)[None, :] < lengths[:, None]
        positions = np.where(real, positions, 0)
        if len(self.chars) == 0:
            return np.zeros_like(positions), np.zeros_like(positions), lengths
        return (np.where(real, self.chars[positions], PAD_ID),
                np.where(real, self.syllables[positions], 0), lengths)


class TokenTables:
    """Per-token lookup arrays for the noise and the loss, built once from the lexicon."""

    def __init__(self, tokenizer: PinziTokenizer, lexicon: Lexicon):
        V = tokenizer.vocab_size
        self.candidates = torch.from_numpy(tokenizer.candidate_matrix(lexicon))  # (V, C) bool
        self.initial = np.zeros(V, np.int64)  # syllable token -> its initial's token (0: none)
        variants = {}
        for syllable in SYLLABLES:
            token = tokenizer.syllable_id(syllable)
            initial = initial_of(syllable)
            if initial is not None:
                self.initial[token] = tokenizer.initial_id(initial)
            variants[token] = [tokenizer.syllable_id(v)
                               for v in fuzzy_variants(syllable, frozenset(FUZZY_PAIRS))
                               if v != syllable]
        width = max(1, max(len(v) for v in variants.values()))
        self.fuzzy = np.zeros((V, width), np.int64)  # syllable token -> fuzzy variant tokens
        self.n_fuzzy = np.zeros(V, np.int64)
        for token, tokens in variants.items():
            self.fuzzy[token, : len(tokens)] = tokens
            self.n_fuzzy[token] = len(tokens)


class PinyinDenoisingTask:
    """The :class:`pinzi.train.Task` of pretraining and domain fine-tuning."""

    metric = "char_acc"

    def __init__(self, train: TokenizedCorpus, valid: TokenizedCorpus, tokenizer: PinziTokenizer,
                 tables: TokenTables, noise: NoiseConfig, *, batch_tokens: int, seed: int,
                 ngram: CharNgram | None = None):
        self.train_corpus, self.valid_corpus, self.ngram = train, valid, ngram
        self.tokenizer, self.tables, self.noise = tokenizer, tables, noise
        self.batch_tokens, self.seed = batch_tokens, seed

    # ---- batching ----------------------------------------------------------------------------
    def batches(self, epoch: int) -> list[np.ndarray]:
        """Shuffled lines, grouped by similar length so that little of a batch is padding."""
        lengths = np.minimum(self.train_corpus.lengths, self.noise.max_length)
        order = np.random.default_rng((self.seed, epoch)).permutation(len(lengths))
        batches = []
        for start in range(0, len(order), 50_000):  # sort within windows: still well shuffled
            window = order[start : start + 50_000]
            window = window[np.argsort(lengths[window], kind="stable")]
            begin = 0
            while begin < len(window):
                longest = max(1, int(lengths[window[min(len(window) - 1, begin)]]))
                size = max(1, self.batch_tokens // longest)
                # the window is sorted, so the batch's longest line is its last one
                while size > 1 and int(lengths[window[min(len(window), begin + size) - 1]]) * size \
                        > self.batch_tokens:
                    size = max(1, size * 3 // 4)
                batches.append(window[begin : begin + size])
                begin += size
        np.random.default_rng((self.seed, epoch, 1)).shuffle(batches)
        return batches

    def make_batch(self, lines: np.ndarray, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        chars, syllables, lengths = self.train_corpus.gather(lines, self.noise.max_length)
        return self._noised(chars, syllables, lengths, np.random.default_rng(key))

    def _noised(self, chars, syllables, lengths, rng, everything: bool = False) -> dict:
        B, T = chars.shape
        noise, tables = self.noise, self.tables
        pos = np.arange(T)[None, :]
        hanzi = (syllables > 0) & (chars != UNK_ID) & (chars != PAD_ID)
        if everything:  # validation: every hanzi typed as its full syllable
            selected, typed = hanzi, syllables
        else:
            mode = rng.random(B)[:, None]
            cut = (rng.random(B) * lengths).astype(np.int64)[:, None]
            span = np.maximum(1, (noise.span_fraction * lengths * rng.uniform(0.5, 1.5, B))
                              .astype(np.int64))[:, None]
            start = (rng.random(B) * lengths).astype(np.int64)[:, None]
            spans = (pos >= start) & (pos < start + span)
            selected = hanzi & np.where(mode < noise.all_pinyin, True,
                                        np.where(mode < noise.all_pinyin + noise.suffix,
                                                 pos >= cut, spans))
            selected |= hanzi & ~selected.any(axis=1, keepdims=True)  # at least one pinyin token
            u = rng.random((B, T))
            typed = syllables.copy()
            as_initial = selected & (u < noise.initial_rate) & (tables.initial[syllables] > 0)
            typed[as_initial] = tables.initial[syllables][as_initial]
            as_fuzzy = (selected & (u >= noise.initial_rate)
                        & (u < noise.initial_rate + noise.fuzzy_rate)
                        & (tables.n_fuzzy[syllables] > 0))
            choice = (rng.random((B, T)) * tables.n_fuzzy[syllables]).astype(np.int64)
            typed[as_fuzzy] = tables.fuzzy[syllables, choice][as_fuzzy]
        input_ids = np.where(selected, typed, chars)
        labels = np.where(selected, chars - self.tokenizer.char_offset, -100)
        input_t = torch.from_numpy(input_ids.astype(np.int64))
        labels_t = torch.from_numpy(labels.astype(np.int64))
        sel = torch.from_numpy(selected)
        gold = torch.from_numpy(syllables.astype(np.int64))[sel]
        candidate_mask = tables.candidates[input_t[sel]] | tables.candidates[gold]
        candidate_mask[torch.arange(len(gold)), labels_t[sel]] = True
        attention_mask = torch.from_numpy(pos < lengths[:, None]).long()
        return {"input_ids": input_t, "attention_mask": attention_mask, "labels": labels_t,
                "candidate_mask": candidate_mask}

    # ---- validation --------------------------------------------------------------------------
    def evaluate(self, model) -> dict[str, float]:
        """Loss and character accuracy on fully-typed validation lines (full syllables)."""
        corpus = self.valid_corpus
        lines = np.arange(min(len(corpus), self.noise.eval_lines))
        device = next(model.parameters()).device
        total_loss, correct, count, batches = 0.0, 0, 0, 0
        for begin in range(0, len(lines), 64):
            chars, syllables, lengths = corpus.gather(lines[begin : begin + 64],
                                                      self.noise.max_length)
            batch = self._noised(chars, syllables, lengths, None, everything=True)
            if not (batch["labels"] != -100).any():
                continue
            out = model(**{k: v.to(device) for k, v in batch.items()})
            labels = batch["labels"][batch["labels"] != -100].to(device)
            correct += int((out.logits.argmax(-1) == labels).sum())
            count += len(labels)
            total_loss += float(out.loss)
            batches += 1
        return {"loss": total_loss / max(1, batches), "char_acc": correct / max(1, count)}

    def save(self, model, directory: Path) -> None:
        model.save_pretrained(directory)
        self.tokenizer.save(directory)
        if self.ngram is not None:
            self.ngram.save(directory)


# ---- the `pinzi pretrain` / `pinzi finetune` job ----------------------------------------
def load_prepared(data_dir: str | Path):
    """The DatasetDict written by `pinzi data prepare`, with a clear error when it is not one."""
    from datasets import load_from_disk

    from pinzi.train import TrainingError

    path = Path(data_dir)
    if not (path / "chars.tsv").exists():
        raise TrainingError(f"{path} is not a prepared dataset (no chars.tsv): run "
                            "`pinzi data prepare INPUT... --out DIR` first")
    try:
        splits = load_from_disk(str(path))
    except Exception as err:
        raise TrainingError(f"{path} holds a damaged or incomplete dataset: {err}") from err
    for split in ("train", "valid"):
        if split not in splits:
            raise TrainingError(f"{path} has no {split!r} split")
        missing = {"text", "pinyin"} - set(splits[split].column_names)
        if missing:
            raise TrainingError(f"{path}/{split} lacks the column(s) {', '.join(sorted(missing))}")
    if len(splits["train"]) == 0:
        raise TrainingError(f"{path}: the train split is empty")
    return splits


def train_converter(data_dir: str | Path, out_dir: str | Path, *, base: str | None = None,
                    preset: str = "small", settings: dict | None = None, resume: bool = False,
                    progress: bool = True, on_step=None, prepare=None) -> dict:
    """Pretrain a converter from scratch (``base=None``) or continue training ``base``.

    ``settings`` holds TrainConfig, NoiseConfig and PinziConfig fields (from a config file and
    command-line overrides); unknown names are an error that suggests the closest one.
    ``prepare(model, task) -> (model, task)``, when given, runs just before training: domain
    fine-tuning uses it to put LoRA adapters on the model and save only them (pinzi.finetune).
    """
    from pinzi.model import PinziConfig, PinziForPinyin, load_pretrained
    from pinzi.train import (
        TrainConfig,
        TrainingError,
        build_dataclass,
        check_known,
        split_settings,
        train,
    )

    out = Path(out_dir)
    train_values, noise_values, model_values = split_settings(settings or {}, TrainConfig,
                                                              NoiseConfig)
    cfg = build_dataclass(TrainConfig, train_values, where="the training settings")
    noise = build_dataclass(NoiseConfig, noise_values, where="the noise settings")
    splits = load_prepared(data_dir)
    lexicon = Lexicon.default()

    if base is not None:
        if model_values:
            raise TrainingError(f"model settings ({', '.join(model_values)}) cannot change "
                                "when fine-tuning a base model")
        model, tokenizer = load_pretrained(PinziForPinyin, base)
    elif resume and (out / "checkpoints" / "vocab.json").exists():
        tokenizer = PinziTokenizer.load(out / "checkpoints")
        model = None
    else:
        tokenizer = PinziTokenizer.from_counts(Path(data_dir) / "chars.tsv", lexicon=lexicon)
        model = None
    if model is None:
        import inspect

        known = set(inspect.signature(PinziConfig.__init__).parameters) - {"self", "kwargs"}
        check_known(model_values, known | {f.name for f in fields(TrainConfig)}
                    | {f.name for f in fields(NoiseConfig)}, where="the settings")
        try:
            config = PinziConfig.from_preset(preset, vocab_size=tokenizer.vocab_size,
                                             char_offset=tokenizer.char_offset,
                                             n_chars=tokenizer.n_chars, **model_values)
        except (ValueError, TypeError) as err:
            raise TrainingError(str(err)) from err
        torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights
        model = PinziForPinyin(config)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / "checkpoints")
    noise.max_length = min(noise.max_length, model.config.max_position_embeddings)

    train_corpus = TokenizedCorpus.from_table(splits["train"].data.table, tokenizer)
    # The decoder's n-gram model comes from the same text, counted in seconds.
    ngram = CharNgram.build(train_corpus.chars, train_corpus.offsets, tokenizer.char_offset,
                              tokenizer.n_chars)
    task = PinyinDenoisingTask(
        train_corpus, TokenizedCorpus.from_table(splits["valid"].data.table, tokenizer),
        tokenizer, TokenTables(tokenizer, lexicon), noise,
        batch_tokens=cfg.batch_tokens, seed=cfg.seed, ngram=ngram)
    if prepare is not None:  # pinzi.finetune: LoRA adapters, the base's n-gram model
        model, task = prepare(model, task)
    return train(model, task, cfg, out, resume=resume, progress=progress, on_step=on_step)
