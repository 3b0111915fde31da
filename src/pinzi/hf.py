"""pinzi's vocabulary as a Hugging Face tokenizer, for ``AutoTokenizer``: :class:`PinziHFTokenizer`.

:mod:`pinzi.model` registers it, with the config and the models, when it is imported::

    >>> import pinzi.model                                      # doctest: +SKIP
    >>> from transformers import AutoModel, AutoTokenizer      # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained("runs/htl")       # doctest: +SKIP
    >>> tok("中国x")["input_ids"]                              # doctest: +SKIP
    [2, 5, 6, 1]

Text is read one character at a time, after :func:`pinzi.text.normalise` (as pinzi's classifier
reads it), and with ``add_special_tokens`` (the default) behind a ``[CLS]``, also as the
classifier reads it; a second text of a pair follows a ``[SEP]``. Characters outside the
vocabulary are ``[UNK]``. In :meth:`~PinziHFTokenizer.get_vocab` the syllable and initial tokens,
whose strings can also be characters (``a``, ``m``), are named ``<py:zhong>`` and ``<ini:zh>``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizer

from pinzi.pinyin import INITIALS, SYLLABLES
from pinzi.text import normalise
from pinzi.tokenizer import CLS_ID, SEP_ID, SPECIALS, UNK_ID, VOCAB_FILE, PinziTokenizer


class PinziHFTokenizer(PreTrainedTokenizer):
    """A :class:`~pinzi.tokenizer.PinziTokenizer` (``vocab.json``) behind the Hugging Face API."""

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]  # pinzi models take no token_type_ids

    def __init__(self, vocab_file: str | None = None, *,
                 pinzi_tokenizer: PinziTokenizer | None = None, **kwargs):
        if pinzi_tokenizer is None:
            if vocab_file is None or Path(vocab_file).name != VOCAB_FILE:
                raise ValueError(f"PinziHFTokenizer reads a {VOCAB_FILE}, not {vocab_file!r}")
            pinzi_tokenizer = PinziTokenizer.load(Path(vocab_file).parent)
        self.pinzi = pinzi_tokenizer
        names = [*SPECIALS, *pinzi_tokenizer.chars, *(f"<py:{s}>" for s in SYLLABLES),
                 *(f"<ini:{i}>" for i in INITIALS)]
        self._ids = {name: i for i, name in enumerate(names)}
        self._names = names
        for key, token in zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"),
                              SPECIALS, strict=True):
            kwargs.setdefault(key, token)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return self.pinzi.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return {**self._ids, **self.added_tokens_encoder}

    def prepare_for_tokenization(self, text: str, is_split_into_words: bool = False, **kwargs):
        return normalise(text).strip(), kwargs

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return list(text)

    def _convert_token_to_id(self, token: str) -> int:
        return self._ids.get(token, UNK_ID)

    def _convert_id_to_token(self, index: int) -> str:
        return self._names[index] if 0 <= index < len(self._names) else SPECIALS[UNK_ID]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int],
                                         token_ids_1: list[int] | None = None) -> list[int]:
        if token_ids_1 is None:
            return [CLS_ID, *token_ids_0]
        return [CLS_ID, *token_ids_0, SEP_ID, *token_ids_1]

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        if already_has_special_tokens:
            return [int(i < len(SPECIALS)) for i in [*token_ids_0, *(token_ids_1 or [])]]
        pair = [] if token_ids_1 is None else [1] + [0] * len(token_ids_1)
        return [1] + [0] * len(token_ids_0) + pair

    def save_vocabulary(self, save_directory: str,
                        filename_prefix: str | None = None) -> tuple[str, ...]:
        # pinzi's own vocab.json; PinziTokenizer.save would also rewrite tokenizer_config.json,
        # which save_pretrained has just written with this tokenizer's settings.
        target = Path(save_directory, f"{filename_prefix}-{VOCAB_FILE}" if filename_prefix
                      else VOCAB_FILE)
        with tempfile.TemporaryDirectory() as tmp:
            self.pinzi.save(tmp)
            shutil.copyfile(Path(tmp, VOCAB_FILE), target)
        return (str(target),)
