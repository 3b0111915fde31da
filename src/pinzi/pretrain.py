"""``pinzi pretrain``: train a converter with the pinyin-denoising objective.

From scratch: the vocabulary comes from the prepared dataset's character counts, the model from
a named size (``model.preset``) and any field set otherwise. With ``base``: the base's
vocabulary, size and decoding settings are kept and its weights trained on. Either way the
character n-gram model that decoding uses is counted anew from the training text (seconds),
and the one training loop (:func:`pinzi.train.train`) does the rest. See docs/training.md.

    pinzi data prepare corpus/*.txt.gz --out work/data
    pinzi pretrain --data work/data --out runs/small --preset small
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from pinzi.corpus import CHARS_FILE, load_prepared
from pinzi.decoding_config import DecodingConfig
from pinzi.denoise import NoiseConfig, PinyinDenoisingTask, TokenTables
from pinzi.errors import SettingsError
from pinzi.hub import resolve_model
from pinzi.lexicon import Lexicon
from pinzi.model import ModelSettings, PinziForPinyin, load_pretrained
from pinzi.ngram import CharNgram
from pinzi.settings import Layers, layers, record, resolve
from pinzi.tokenizer import VOCAB_FILE, PinziTokenizer
from pinzi.train import TrainConfig, run_folder, train

SECTIONS = {"train": TrainConfig, "noise": NoiseConfig, "model": ModelSettings}


def pretrain(data_dir: str | Path, out_dir: str | Path, *, base: str | Path | None = None,
             settings: Layers = None,
             resume: bool = False, overwrite: bool = False, progress: bool = True,
             on_step=None) -> dict[str, Any]:
    """Pretrain a converter from scratch (``base=None``) or continue training ``base``.

    ``settings``: one dict, or a list of them layered in order, of the ``train``, ``noise`` and
    ``model`` sections (see :mod:`pinzi.settings`). Returns the training summary. A folder
    that holds an earlier run is refused unless ``resume`` continues it or ``overwrite``
    replaces it (:func:`pinzi.train.run_folder`).
    """
    config = resolve(SECTIONS, *layers(settings))
    cfg, noise = config["train"], config["noise"]
    out = Path(out_dir)
    splits = load_prepared(data_dir)
    lexicon = Lexicon.default()

    # The model and its vocabulary.
    if base is not None:
        if config["model"] != ModelSettings():
            raise SettingsError("model settings cannot change when training on from a base "
                                "model: its size and vocabulary are kept")
        folder = resolve_model(base)
        model, tokenizer = load_pretrained(PinziForPinyin, folder)
        decoding = DecodingConfig.load(folder)
    else:
        saved_vocab = out / "checkpoints" / VOCAB_FILE
        if resume and saved_vocab.exists():
            tokenizer = PinziTokenizer.load(saved_vocab.parent)
        else:
            tokenizer = PinziTokenizer.from_counts(Path(data_dir) / CHARS_FILE, lexicon=lexicon)
        torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights
        model = PinziForPinyin(config["model"].config(tokenizer))
        decoding = DecodingConfig()
    with run_folder(out, resume=resume, overwrite=overwrite):
        record(out, config)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        tokenizer.save(out / "checkpoints")
        noise = dataclasses.replace(
            noise, max_length=min(noise.max_length, model.config.max_position_embeddings))

        # The task: the text with pinyin noise, and the n-gram model counted from the same text.
        train_corpus = splits["train"].tokenized(tokenizer)
        ngram = CharNgram.build(train_corpus.chars, train_corpus.offsets, tokenizer.char_offset,
                                tokenizer.n_chars)
        task = PinyinDenoisingTask(train_corpus, splits["valid"].tokenized(tokenizer), tokenizer,
                                   TokenTables(tokenizer, lexicon), noise,
                                   batch_tokens=cfg.batch_tokens, seed=cfg.seed, ngram=ngram,
                                   decoding=decoding)
        return train(model, task, cfg, out, resume=resume, progress=progress, on_step=on_step)
