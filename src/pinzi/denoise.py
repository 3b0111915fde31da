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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pinzi.corpus import TokenizedCorpus
from pinzi.decoding_config import DecodingConfig
from pinzi.lexicon import Lexicon
from pinzi.lora import has_adapter, save_adapter
from pinzi.ngram import CharNgram
from pinzi.pinyin import FUZZY_PAIRS, SYLLABLES, fuzzy_variants, initial_of
from pinzi.tokenizer import PAD_ID, UNK_ID, PinziTokenizer


@dataclass
class NoiseConfig:
    """The ``noise`` section of the pretraining and fine-tuning settings."""

    all_pinyin: float = 0.5  # share of sentences typed entirely in pinyin
    suffix: float = 0.3  # share typed in pinyin after a committed hanzi prefix; the rest: one span
    # The span's drawn length as a share of the sentence (x 0.5 to 1.5); it starts anywhere and
    # is cut at the end, so it covers about 0.31 of a sentence on average at 0.4.
    span_fraction: float = 0.4
    initial_rate: float = 0.08  # a replaced character typed as its initial only
    fuzzy_rate: float = 0.04  # a replaced character typed as a fuzzy variant of its syllable
    max_length: int = 128  # longer lines are cut
    eval_lines: int = 2000  # validation lines used for loss and char_acc


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
                 ngram: CharNgram | None = None, decoding: DecodingConfig | None = None,
                 adapter_base: dict[str, Any] | None = None):
        """``ngram`` and ``decoding`` are saved with the model; ``adapter_base`` (the base's
        name, path and fingerprint) makes a model with a LoRA adapter save the adapter alone."""
        self.train_corpus, self.valid_corpus, self.ngram = train, valid, ngram
        self.tokenizer, self.tables, self.noise = tokenizer, tables, noise
        self.batch_tokens, self.seed = batch_tokens, seed
        self.decoding, self.adapter_base = decoding or DecodingConfig(), adapter_base

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
    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Loss and character accuracy on fully-typed validation lines (full syllables)."""
        corpus = self.valid_corpus
        lines = np.arange(min(len(corpus), self.noise.eval_lines))
        device = next(model.parameters()).device
        total_loss, correct, count, batches = 0.0, 0, 0, 0
        # As many lines as a training batch holds tokens: every position is scored over all
        # characters here, so the batch size bounds the memory of validation too.
        rows = max(1, self.batch_tokens // self.noise.max_length)
        for begin in range(0, len(lines), rows):
            chars, syllables, lengths = corpus.gather(lines[begin : begin + rows],
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
        """A converter folder, or the adapter alone when the model carries one."""
        if has_adapter(model):
            save_adapter(model, directory, **self.adapter_base)
            return
        model.save_pretrained(directory)
        self.tokenizer.save(directory)
        self.decoding.save(directory)
        if self.ngram is not None:
            self.ngram.save(directory)
