"""Pinyin -> hanzi conversion: the public API behind `pinzi convert`, the server and the benchmarks.

>>> from pinzi import Converter
>>> converter = Converter.from_pretrained()          # the model that ships in the package
>>> converter.convert("woaibeijingtiananmen")        # doctest: +SKIP
'我爱北京天安门'

How a line is converted: the pinyin core proposes the few most plausible readings of the input
(``fan gan`` / ``fang an``), each reading becomes one model input (committed context characters,
then pass-through text as characters and pinyin pieces as syllable or initial tokens), one
batched forward pass scores every position's candidates (only characters some word reads that
way), and a beam search ranks whole conversions; the best reading wins on its conversion's
score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from pinzi.backends import CandidateScorer, TorchScorer, choose_backend, load_onnx
from pinzi.decode import Position, UserDict, beam_search, place_user_words
from pinzi.decoding_config import DECODING_FILE, DecodingConfig
from pinzi.errors import DataError, InputTooLong
from pinzi.hub import require_converter, resolve_model
from pinzi.learning import LearnedWords
from pinzi.lexicon import Lexicon
from pinzi.ngram import NGRAM_FILE, CharNgram
from pinzi.partial import Candidate, PrefixScorer, page_order, typed_lengths
from pinzi.pinyin import Piece, parse_fuzzy, scored_segmentations
from pinzi.predict import Prediction, Predictor
from pinzi.shuangpin import check_scheme, to_pinyin
from pinzi.text import is_hanzi, to_simplified, to_traditional
from pinzi.tokenizer import PAD_ID, TOKENIZER_CONFIG_FILE, UNK_ID, VOCAB_FILE, PinziTokenizer
from pinzi.words import WORDS_FILE, WordModel

MAX_INPUT_CHARS = 4096  # longer lines are refused: no IME buffer is that long
WINDOW = 64  # pinyin pieces per model call; longer inputs are converted window by window
# Fitting words are looked for in buffers of at most this many pinyin pieces: an input method's
# buffer is shorter, and a longer one (pasted text, a hostile client) would cost 2 to 3 times
# the decoding of characters alone.
FITTING_PIECES = 32
WHOLE_DEPTH = 16  # whole conversions a page of candidates may list
MAX_LEARNED_CHARS = 32  # the longest pick learned (a phrase; longer picks are pasted text)
LEARN_READINGS = 8  # readings of the pinyin in which a pick is looked for
# What a converter folder holds beside its weights (and config.json), all of which conversion
# reads: a copy of the model (merged, exported) takes them along.
SIDE_FILES = (VOCAB_FILE, TOKENIZER_CONFIG_FILE, NGRAM_FILE, WORDS_FILE, DECODING_FILE)
# Fuzzy pinyin as every interface takes it: "all", "z=zh,n=l", or a list of pair names.
Fuzzy = str | Iterable[str] | None


class Converter:
    """Converts pinyin to hanzi with a pinzi model; thread-safe for concurrent reads."""

    def __init__(self, scorer: CandidateScorer, tokenizer: PinziTokenizer,
                 lexicon: Lexicon | None = None, *, decoding: DecodingConfig | None = None,
                 userdict: UserDict | None = None, ngram: CharNgram | None = None,
                 words: WordModel | None = None, fuzzy: Fuzzy = None, punct: bool = False,
                 traditional: bool = False, scheme: str | None = None,
                 learned: LearnedWords | None = None):
        """``userdict``, ``fuzzy``, ``punct``, ``traditional`` and ``scheme`` are the defaults
        of every conversion; each call may give its own. ``learned``: what :meth:`learn`
        records, and the conversions then use (default: a store in memory)."""
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.lexicon = lexicon or Lexicon.attested()
        self.decoding = decoding or DecodingConfig()
        self.userdict = userdict or UserDict()
        self.fuzzy, self.punct, self.scheme = parse_fuzzy(fuzzy), punct, check_scheme(scheme)
        self.traditional = traditional
        self.ngram, self.words = ngram, words
        self.learned = learned if learned is not None else LearnedWords()
        self._prefix_scorer = PrefixScorer(ngram, self.decoding.lm_weight, words,
                                           self.decoding.word_weight)
        self._predictor = None if ngram is None else Predictor(
            ngram, tokenizer.chars, words, length_bonus=self.decoding.predict_length_bonus,
            word_weight=self.decoding.predict_word_weight)
        self._chars = np.array(tokenizer.chars, dtype=object)
        self._candidates = lru_cache(maxsize=65536)(self._piece_candidates)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *,
                        adapter: str | Path | None = None, backend: str = "auto",
                        threads: int | None = None, user_dir: str | Path | None = None,
                        **options) -> Converter:
        """Load a converter: the shipped model (default), a folder, or a Hugging Face repo id.

        ``backend``: ``onnx`` runs the folder's model.onnx with onnxruntime, ``torch`` the
        safetensors weights with PyTorch, and ``auto`` (default) takes onnx when the folder
        has a model.onnx, onnxruntime is installed and no ``adapter`` is given. ``threads``:
        onnxruntime's per call (default 1), or PyTorch's process-wide count when given
        (``torch.set_num_threads``). ``user_dir``: a folder where what :meth:`learn` records
        is kept and read back (:class:`~pinzi.learning.LearnedWords`; locked while this
        process runs). Other keyword arguments go to the constructor; without ``decoding``
        the folder's own :class:`~pinzi.decoding_config.DecodingConfig` applies. Raises
        :class:`~pinzi.errors.ModelLoadError` with a reason.
        """
        folder = resolve_model(name_or_path)
        require_converter(folder, name_or_path)
        if choose_backend(folder, backend, adapter) == "onnx":
            scorer, tokenizer = load_onnx(folder, threads or 1)
        else:
            # PyTorch is imported only here: the onnxruntime path, which `pinzi convert` takes
            # with the shipped model, starts without it.
            import torch

            from pinzi.model import PinziForPinyin, load_pretrained

            if threads:
                torch.set_num_threads(threads)
            model, tokenizer = load_pretrained(PinziForPinyin, folder)
            if adapter is not None:  # folded into the weights: as fast as the base
                from pinzi.lora import load_adapter, merge_into_base

                model = merge_into_base(load_adapter(model, adapter, tokenizer=tokenizer))
            scorer = TorchScorer(model)
        options.setdefault("decoding", DecodingConfig.load(folder))
        if "ngram" not in options:  # a given one (None too) spares reading the tables
            options["ngram"] = CharNgram.load(folder, tokenizer.n_chars)
        if "words" not in options:
            options["words"] = WordModel.load(folder)
        if user_dir is not None:
            options["learned"] = LearnedWords(user_dir)
        return cls(scorer, tokenizer, **options)

    # ---- public API -----------------------------------------------------------------------------
    def convert(self, pinyin: str, context: str = "", *, fuzzy: Fuzzy = None,
                punct: bool | None = None, userdict: UserDict | None = None,
                traditional: bool | None = None, scheme: str | None = None) -> str:
        """The best conversion of ``pinyin`` (``""`` for blank input); the options as for
        :meth:`candidates`."""
        best = self.candidates(pinyin, k=1, context=context, partial=False, fuzzy=fuzzy,
                               punct=punct, userdict=userdict, traditional=traditional,
                               scheme=scheme)
        return best[0].hanzi if best else ""

    def convert_batch(self, pinyin: Sequence[str], context: str = "", *, fuzzy: Fuzzy = None,
                      punct: bool | None = None, userdict: UserDict | None = None,
                      traditional: bool | None = None, scheme: str | None = None
                      ) -> list[str]:
        """The best conversion of each buffer, each with the same left ``context``."""
        return [self.convert(line, context, fuzzy=fuzzy, punct=punct, userdict=userdict,
                             traditional=traditional, scheme=scheme) for line in pinyin]

    def candidates(self, pinyin: str, k: int = 5, context: str = "", *, offset: int = 0,
                   partial: bool = True, fuzzy: Fuzzy = None, punct: bool | None = None,
                   userdict: UserDict | None = None, traditional: bool | None = None,
                   scheme: str | None = None) -> list[Candidate]:
        """Up to ``k`` ranked candidates, from the ``offset``-th on: ``(hanzi, score,
        consumed)``, where ``consumed`` is how many characters of ``pinyin`` the candidate
        covers (``len(pinyin)`` for a conversion of all of it).

        The best whole conversion comes first; with ``partial`` (the default) the page goes on
        as an input method's does: the whole conversions close to the best, the words and
        characters the buffer starts with (the longest first), then the other whole
        conversions (:mod:`pinzi.partial`). A client commits a candidate's hanzi and keeps
        ``pinyin[consumed:]``. Pages are stable: ``offset=9`` continues ``k=9``.

        ``context``: hanzi already committed to the left. ``fuzzy``: sounds not told apart
        (``"all"``, ``"z=zh,n=l"`` or a list of pair names: :func:`pinzi.pinyin.parse_fuzzy`);
        ``punct``: ASCII punctuation becomes Chinese; ``userdict``: words that win where they
        fit (written in simplified characters); ``traditional``: the hanzi written in
        traditional characters (:func:`pinzi.text.to_traditional`; a traditional ``context``
        is read as simplified); ``scheme``: the shuangpin scheme the keys are typed in
        (``"xiaohe"``: :mod:`pinzi.shuangpin`; ``"pinyin"``: full pinyin). Each defaults to the
        converter's own (its constructor's arguments).
        """
        fuzzy = self.fuzzy if fuzzy is None else parse_fuzzy(fuzzy)
        punct = self.punct if punct is None else punct
        traditional = self.traditional if traditional is None else traditional
        scheme = self.scheme if scheme is None else check_scheme(scheme)
        # The model reads and writes simplified characters: the script changes at the edges.
        written = to_traditional if traditional else _as_written
        if traditional:
            context = to_simplified(context)
        if len(pinyin) > MAX_INPUT_CHARS:
            raise InputTooLong(f"input of {len(pinyin)} characters exceeds {MAX_INPUT_CHARS}")
        if k < 1 or offset < 0:
            raise ValueError("k must be at least 1 and offset at least 0")
        typed = pinyin
        # Shuangpin keys become pinyin first: fuzzy, punct and user words then work unchanged.
        pinyin = to_pinyin(pinyin, scheme)
        userdicts = [userdict if userdict is not None else self.userdict]
        decoding = self.decoding
        found = scored_segmentations(pinyin, fuzzy=fuzzy, chinese_punct=punct,
                                     limit=decoding.readings)
        if not found:
            return []
        best_cost, best = found[0]
        # Letters kept as typed cost nothing in the model's score, so a reading may not keep
        # more of them than the best reading does, or it would win for free ("nin eng").
        kept = [self._kept_letters(r) for _, r in found]
        readings = [r for (cost, r), letters in zip(found, kept, strict=True)
                    if cost - best_cost <= decoding.max_cost_gap and letters <= kept[0]]
        if sum(map(_size, best)) > WINDOW:  # long text: one reading, window by window
            text = self._convert_long(best, context, self._with_learned(userdicts, best))
            return [Candidate(written(text), 0.0, len(typed))][offset:offset + k]
        # Whole conversions to a depth that does not depend on the page: pages stay stable.
        depth = max(decoding.word_nbest, WHOLE_DEPTH) if partial else offset + k
        scored: dict[str, float] = {}
        taught: set[str] = set()  # conversions holding a user word: listed after the best
        history = self._history(context)
        decoded = []
        for rank, (reading, positions) in enumerate(
                zip(readings, self._score(readings, context), strict=True)):
            userdicts_here = self._with_learned(userdicts, reading)
            penalty = decoding.reading_penalty * rank
            found, holding = self._search(reading, positions, depth, userdicts_here, history)
            taught |= {written(text) for text in holding}
            decoded.append((reading, positions, userdicts_here, penalty, found[0][0]))
            for text, score in found:
                text, score = written(text), score - penalty
                if score > scored.get(text, -math.inf):
                    scored[text] = score
        whole = [Candidate(text, score, len(typed)) for text, score in
                 sorted(scored.items(), key=lambda item: (-item[1], item[0]))]
        if not partial or offset + k == 1:  # the best whole conversion always leads
            return whole[offset:offset + k]
        prefixes = []  # (parsed length, hanzi, score)
        for reading, positions, userdicts_here, penalty, best_text in decoded:
            ends = np.cumsum([len(piece.text) for piece in reading]).tolist()
            # The words of the best conversion start the page's prefixes; those of a reading
            # that lost are not offered (ti'a'nan'men's 逖锕腩 would lead them).
            best_text = best_text if written(best_text) == whole[0].hanzi else ""
            prefixes += [(ends[pieces - 1], written(text), score - penalty)
                         for pieces, text, score in self._prefix_scorer.prefixes(
                             reading, positions, userdicts_here, best_text, history)]
        covered = typed_lengths(typed, scheme, (length for length, _, _ in prefixes))
        return page_order(whole, [Candidate(text, score, covered[length])
                                  for length, text, score in prefixes],
                          decoding.whole_margin, taught,
                          self.words.logprobs if self.words is not None else ())[offset:offset + k]

    def predict(self, context: str, k: int = 5, *,
                traditional: bool | None = None) -> list[Prediction]:
        """The ``k`` likeliest next words after the committed ``context``, best first, as
        ``(hanzi, score)`` (:mod:`pinzi.predict`); none when the folder has no n-gram model.
        ``traditional`` as for :meth:`candidates`."""
        traditional = self.traditional if traditional is None else traditional
        if self._predictor is None or k < 1:
            return []
        found = self._predictor.predict(to_simplified(context) if traditional else context, k,
                                        self.learned.words)
        return [Prediction(to_traditional(p.hanzi), p.score) for p in found] if traditional \
            else found

    def learn(self, pinyin: str, hanzi: str, *, fuzzy: Fuzzy = None,
              scheme: str | None = None) -> None:
        """Record that the user picked ``hanzi`` for ``pinyin`` (typed as for
        :meth:`candidates`; traditional hanzi are learned as simplified): later conversions
        prefer it where it fits (:mod:`pinzi.learning`). Raises
        :class:`~pinzi.errors.DataError` when ``hanzi`` is not a conversion of all of
        ``pinyin``: one character for each syllable or initial, each read that way."""
        fuzzy = self.fuzzy if fuzzy is None else parse_fuzzy(fuzzy)
        word = to_simplified(hanzi) if not all(map(self._is_known, hanzi)) else hanzi
        if not 0 < len(word) <= MAX_LEARNED_CHARS or not all(map(self._is_known, word)):
            raise DataError(f"cannot learn {hanzi!r}: a word of 1 to {MAX_LEARNED_CHARS} "
                            "characters the model knows is expected")
        typed = to_pinyin(pinyin, self.scheme if scheme is None else check_scheme(scheme))
        for _, reading in scored_segmentations(typed[:MAX_INPUT_CHARS], fuzzy=fuzzy,
                                               limit=LEARN_READINGS):
            if len(reading) == len(word) and all(
                    piece.kind != "other" and char in self._chars[self._candidates(piece)[0]]
                    for piece, char in zip(reading, word, strict=True)):
                self.learned.record(word)
                return
        raise DataError(f"cannot learn {hanzi!r} for {pinyin!r}: it is not a conversion of "
                        "that pinyin (one character for each syllable or initial)")

    def forget(self) -> int:
        """Forget everything :meth:`learn` recorded; how many words that was."""
        return self.learned.forget()

    # ---- internals ---------------------------------------------------------------------------
    def _search(self, reading: list[Piece], positions: list[Position | str], k: int,
                userdicts: list[UserDict], history: tuple[int, int] | None = None
                ) -> tuple[list[tuple[str, float]], set[str]]:
        """The ``k`` best conversions of one reading: the beam search over characters; with a
        word model, its ``word_nbest`` best ranked again with the words' score; then the user
        words put in place. Also the conversions that hold a user word (up to ``k`` more,
        however low they score: a word typed by its initials must stay on offer)."""
        decoding = self.decoding
        if self.words is None or decoding.word_weight <= 0:
            found = beam_search(positions, beam=decoding.beam, k=k, lm=self.ngram,
                                lm_weight=decoding.lm_weight, history=history)
        else:
            found = beam_search(positions, beam=decoding.beam, k=max(k, decoding.word_nbest),
                                lm=self.ngram, lm_weight=decoding.lm_weight,
                                keep=self._fitting_words(reading), history=history)
            found = [(text, score + decoding.word_weight * self.words.score(text))
                     for text, score in found]
            found.sort(key=lambda item: (-item[1], item[0]))
        if not any(userdicts):
            return found[:k], set()
        abbreviated = [piece.kind in ("initial", "prefix") for piece in reading]
        searched = {text for text, _ in found}
        placed = place_user_words(found, positions, userdicts, abbreviated,
                                  self.words.split if self.words is not None else None)
        taught = [item for item in placed if item[0] not in searched][:k]
        return placed[:k] + [item for item in taught if item not in placed[:k]], \
            {text for text, _ in taught}

    def _with_learned(self, userdicts: list[UserDict], reading: list[Piece]) -> list[UserDict]:
        """The given user words and the learned ones that may go in place in ``reading``."""
        pinyin_pieces = sum(piece.kind != "other" for piece in reading)
        return userdicts + self.learned.userdicts(pinyin_pieces)

    def _fitting_words(self, reading: list[Piece]) -> list[tuple[int, str]]:
        """``(start, word)`` of the listed words that fit the reading's pieces
        (``word_fitting`` per start and length, the most probable first), to be kept alive in
        the beam while they are spelled."""
        pinyin_pieces = sum(p.kind != "other" for p in reading)
        if not self.decoding.word_fitting or pinyin_pieces > FITTING_PIECES:
            return []
        allowed = [frozenset(p.syllables) if p.kind != "other" else None for p in reading]
        return self.words.fitting(allowed, self.decoding.word_fitting)

    def _history(self, context: str) -> tuple[int, int] | None:
        """The n-gram's two characters before what is typed: the committed text's last."""
        if self.ngram is None:
            return None
        return self.ngram.history([self.tokenizer.char_id(c) - self.tokenizer.char_offset
                                   for c in context[-2:]])

    def _is_known(self, char: str) -> bool:
        return is_hanzi(char) and self.tokenizer.char_id(char) != UNK_ID

    def _kept_letters(self, reading: list[Piece]) -> int:
        """Letters a reading copies to the output: those of pass-through text, and pinyin
        pieces that no character of the vocabulary reads (``eng``)."""
        return sum(sum(c.isalpha() for c in p.text) if p.kind == "other"
                   else len(p.text) * (len(self._candidates(p)[0]) == 0) for p in reading)

    def _piece_candidates(self, piece: Piece) -> tuple[np.ndarray, np.ndarray]:
        """A piece's candidates (indices in the tokenizer's char section) and the
        log-probability of each being read as the piece says."""
        ids = self.tokenizer.piece_candidates(self.lexicon, piece).astype(np.int64)
        prior = self.lexicon.reading_logprobs(piece, self._chars[ids])
        return ids, np.asarray(prior, dtype=np.float32)

    def _encode(self, reading: list[Piece], context: str) -> tuple[list[int], list[int]]:
        """Token ids of context + reading, and the index of each pinyin piece's token."""
        cut = self.decoding.max_context
        ids = self.tokenizer.encode_text(context[-cut:]) if context else []
        slots = []
        for piece in reading:
            if piece.kind == "other":  # copied to the output whole; the model sees its start
                ids += self.tokenizer.encode_text(piece.output[:WINDOW])
            else:
                slots.append(len(ids))
                ids.append(self.tokenizer.piece_id(piece))
        return ids, slots

    def _score(self, readings: list[list[Piece]], context: str) -> list[list[Position | str]]:
        """Per reading, the decoding positions: Position for pinyin pieces, text for the rest.

        One scorer call for everything: the readings are the rows of a padded batch, and the
        candidates of all their pinyin pieces are one flat array with the piece each belongs to.
        """
        encoded = [self._encode(r, context) for r in readings]
        T = max(1, max(len(ids) for ids, _ in encoded))
        input_ids = np.full((len(encoded), T), PAD_ID, dtype=np.int64)
        attention = np.zeros((len(encoded), T), dtype=np.int64)
        slots = []
        for row, (ids, row_slots) in enumerate(encoded):
            input_ids[row, : len(ids)] = ids
            attention[row, : len(ids)] = 1
            slots += [row * T + slot for slot in row_slots]
        pieces = [piece for reading in readings for piece in reading if piece.kind != "other"]
        found = [self._candidates(piece) for piece in pieces]  # (ids, reading log-probs)
        sizes = [len(ids) for ids, _ in found]
        logits = np.zeros(0, dtype=np.float32)
        if sum(sizes):
            logits = self.scorer(input_ids, attention, np.array(slots, dtype=np.int64),
                                 np.concatenate([ids for ids, _ in found]),
                                 np.repeat(np.arange(len(pieces), dtype=np.int64), sizes))
        ends = np.cumsum(sizes)
        positions = iter([self._position(piece, ids, logits[end - len(ids):end], prior)
                          for piece, (ids, prior), end in zip(pieces, found, ends, strict=True)])
        return [[piece.output if piece.kind == "other" else next(positions) for piece in reading]
                for reading in readings]

    def _position(self, piece: Piece, candidates: np.ndarray, logits: np.ndarray,
                  prior: np.ndarray) -> Position | str:
        if len(candidates) == 0:  # nothing in the vocabulary reads this way: keep the letters
            return piece.text
        shifted = logits - logits.max()
        scores = shifted - np.log(np.exp(shifted).sum())  # log-softmax over the candidates
        if self.decoding.reading_prior:
            scores = scores + self.decoding.reading_prior * prior
        order = np.argsort(-scores, kind="stable")
        return Position(self._chars[candidates[order]], candidates[order], scores[order])

    def _convert_long(self, reading: list[Piece], context: str,
                      userdicts: list[UserDict]) -> str:
        output = ""
        window: list[Piece] = []
        size = 0
        for piece in [*reading, None]:
            if piece is not None:
                window.append(piece)
                size += _size(piece)
            if window and (piece is None or size >= WINDOW):
                positions = self._score([window], context + output)[0]
                history = self._history(context + output)
                output += self._search(window, positions, 1, userdicts, history)[0][0][0]
                window, size = [], 0
        return output


def _as_written(text: str) -> str:
    return text


def _size(piece: Piece) -> int:
    """Model tokens a piece takes (pass-through text is capped at one window)."""
    return 1 if piece.kind != "other" else min(WINDOW, len(piece.output))
