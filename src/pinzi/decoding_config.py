"""How a model's scores become conversions: the decoding knobs saved beside its weights.

``decoding_config.json`` is to a pinzi folder what ``generation_config.json`` is to a generative
model: the weights of the search (beam, n-gram, word list), of the page of candidates and of
next-word prediction, tuned per model on validation text (``bench/tune_decoding.py``,
``bench/typing_sim.py``, ``bench/predict.py``) and read by :class:`pinzi.converter.Converter`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pinzi.hub import damaged

DECODING_FILE = "decoding_config.json"


@dataclass(frozen=True)
class DecodingConfig:
    """How a model's scores become conversions; saved beside the weights (``decoding_config.json``,
    as ``generation_config.json`` is for a generative model), since the weights are tuned per
    model: the defaults are those tuned on validation text for the shipped model
    (``bench/tune_decoding.py``, docs/model_card.md)."""

    beam: int = 8  # hypotheses kept per position
    readings: int = 4  # segmentations of the input considered (fan'gan / fang'an)
    max_context: int = 32  # characters of committed left context given to the model
    lm_weight: float = 1.5  # weight of the character n-gram model's log-probability
    # Readings costing more than this above the best one are not decoded (pinyin's
    # scored_segmentations prices them): that keeps readings that move a boundary (fan'gan /
    # fang'an) and drops those with one more piece (xi'an, an extra initial), whose decoding
    # cost 2.5 times the model's work for no accuracy on dev text. "xi'an" typed apart is
    # still read so.
    max_cost_gap: float = 10
    reading_penalty: float = 1.0  # log-score cost per rank of a less likely reading
    # Weight of log P(reading | character), from the lexicon's per-reading counts: a
    # polyphone's rare reading (从 read zong: 3 uses in 163,484) costs what it is rare.
    reading_prior: float = 0.0
    # Word knowledge (pinzi.words, when the folder has words.tsv.gz): the n-best conversions
    # of each reading are ranked again with this weight times their best segmentation's
    # word log-probability. 0: characters alone.
    word_weight: float = 0.0
    word_nbest: int = 16  # conversions per reading that the word model ranks again
    # Listed words whose reading fits the typed pieces (bj: 北京), per start position, that the
    # beam search keeps alive while they are spelled. 0: none.
    word_fitting: int = 0
    # A page of candidates lists the whole conversions scoring within this of the best one
    # before the words the buffer starts with (pinzi.partial), the other ones after them
    # (tuned with bench/typing_sim.py on valid: the fewest picks and page turns a clause).
    whole_margin: float = 6.0
    # Next-word prediction (pinzi.predict): the score of each character a predicted word has
    # beyond its first, and the weight of the word model's log-probability.
    predict_length_bonus: float = 1.0
    predict_word_weight: float = 0.5

    def save(self, directory: str | Path) -> None:
        Path(directory, DECODING_FILE).write_text(
            json.dumps(dataclasses.asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> DecodingConfig:
        """The folder's decoding config; the defaults when it has none."""
        path = Path(directory, DECODING_FILE)
        if not path.is_file():
            return cls()
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
            config = cls(**values)
            numbers = [getattr(config, f.name) for f in dataclasses.fields(cls)]
            if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and
                       math.isfinite(n) and n >= 0 for n in numbers):
                raise ValueError("every value must be a number >= 0")
            counts = [config.beam, config.readings, config.word_nbest, config.max_context,
                      config.word_fitting]
            if not all(isinstance(n, int) for n in counts) or min(counts[:3]) < 1:
                raise ValueError("beam, readings, word_nbest, max_context and word_fitting must "
                                 "be whole numbers, the first three at least 1")
        except (OSError, ValueError, TypeError) as err:
            raise damaged(directory, f"{DECODING_FILE}: {err}") from err
        return config
