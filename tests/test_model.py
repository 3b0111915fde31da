"""Tests for pinzi.model on tiny random models: the candidate scoring graph against the full
logits, padding, the candidate-restricted loss, persistence, the LSTM baseline, classification
pooling, and config validation."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from pinzi.errors import ModelLoadError
from pinzi.model import (
    PinziConfig,
    PinziForClassification,
    PinziForPinyin,
    load_pretrained,
)
from pinzi.tokenizer import PAD_ID, PinziTokenizer

CHARS = list("中国人民银行北京天安门")
TOKENIZER = PinziTokenizer(CHARS)


def config(arch: str = "transformer", **overrides) -> PinziConfig:
    return PinziConfig.from_preset("tiny", vocab_size=TOKENIZER.vocab_size,
                                   char_offset=TOKENIZER.char_offset, n_chars=TOKENIZER.n_chars,
                                   arch=arch, dropout=0.0, **overrides)


def pinyin_model(arch: str = "transformer", seed: int = 0) -> PinziForPinyin:
    torch.manual_seed(seed)
    model = PinziForPinyin(config(arch))
    with torch.no_grad():  # a non-zero bias, so that the tests see it
        model.char_bias.normal_()
    return model.eval()


def syllables(*names: str) -> list[int]:
    return [TOKENIZER.syllable_id(s) for s in names]


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows: five tokens, and three tokens padded to five."""
    rows = [syllables("zhong", "guo", "ren", "min", "yin"),
            syllables("bei", "jing", "tian") + [PAD_ID, PAD_ID]]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return torch.tensor(rows), mask


# ---- PinziForPinyin ------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["transformer", "lstm-attention"])
def test_score_candidates_equals_gathering_the_full_logits(arch: str) -> None:
    model = pinyin_model(arch)
    input_ids, mask = batch()
    T = input_ids.shape[1]
    with torch.no_grad():
        logits = model(input_ids, attention_mask=mask).logits  # labels=None: every position
        assert logits.shape == (2, T, TOKENIZER.n_chars)
        slots = torch.tensor([0 * T + 1, 0 * T + 4, 1 * T + 0, 1 * T + 2])
        candidates = torch.tensor([0, 3, 7, 2, 2, 5, 10, 1, 9])
        owner = torch.tensor([0, 0, 0, 1, 2, 2, 2, 3, 3])
        scores = model.score_candidates(input_ids, mask, slots, candidates, owner)
    expected = logits.flatten(0, 1)[slots[owner], candidates]
    assert scores.shape == (len(candidates),)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    # the char bias is part of both
    assert not torch.allclose(scores - model.char_bias[candidates], expected, atol=1e-3)


def test_padding_does_not_change_the_scores_of_real_tokens() -> None:
    model = pinyin_model()
    input_ids, mask = batch()
    with torch.no_grad():
        padded = model(input_ids, attention_mask=mask).logits[1, :3]
        alone = model(input_ids[1:, :3], attention_mask=mask[1:, :3]).logits[0]
        # whatever sits in the padded slots is ignored
        other = input_ids.clone()
        other[1, 3:] = torch.tensor(syllables("an", "men"))
        replaced = model(other, attention_mask=mask).logits[1, :3]
        unmasked = model(other, attention_mask=torch.ones_like(mask)).logits[1, :3]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(replaced, alone, rtol=1e-5, atol=1e-5)
    # the mask is what does it: attended, the same two tokens change the scores
    assert not torch.allclose(unmasked, alone, atol=1e-3)


def labelled() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    input_ids, mask = batch()
    labels = torch.full_like(input_ids, -100)
    labels[0, 0], labels[0, 1], labels[1, 0], labels[1, 2] = 0, 1, 6, 8  # 中 国 北 天
    candidate_mask = torch.zeros(4, TOKENIZER.n_chars, dtype=torch.bool)
    candidate_mask[0, [0, 2, 5]] = True
    candidate_mask[1, [1, 4]] = True
    candidate_mask[2, [6, 2, 3]] = True
    candidate_mask[3, [8]] = True  # a single candidate: nothing to learn there
    return input_ids, mask, labels, candidate_mask


def test_loss_is_cross_entropy_over_the_candidates_only() -> None:
    model = pinyin_model()
    input_ids, mask, labels, candidate_mask = labelled()
    with torch.no_grad():
        out = model(input_ids, attention_mask=mask, labels=labels, candidate_mask=candidate_mask)
        full = model(input_ids, attention_mask=mask).logits[labels != -100]  # (4, C)
    targets = labels[labels != -100]
    by_hand = []
    for row, target, allowed in zip(full, targets, candidate_mask, strict=True):
        log_probs = row[allowed].log_softmax(-1)
        by_hand.append(-log_probs[allowed.nonzero().flatten().tolist().index(int(target))])
    torch.testing.assert_close(out.loss, torch.stack(by_hand).mean(), rtol=1e-5, atol=1e-6)
    assert float(by_hand[3]) == 0.0
    # the returned logits are the full ones at candidates and -inf-like elsewhere
    torch.testing.assert_close(out.logits[candidate_mask], full[candidate_mask])
    assert (out.logits[~candidate_mask] == torch.finfo(out.logits.dtype).min).all()
    # without a mask, the softmax is over every character: a larger loss
    unrestricted = model(input_ids, attention_mask=mask, labels=labels).loss
    assert unrestricted > out.loss
    torch.testing.assert_close(unrestricted, F.cross_entropy(full, targets))


def test_loss_ignores_the_logits_of_non_candidates() -> None:
    model = pinyin_model()
    input_ids, mask, labels, candidate_mask = labelled()
    never = 7  # 京: a candidate of no labelled position
    assert not candidate_mask[:, never].any()
    with torch.no_grad():
        before = model(input_ids, attention_mask=mask, labels=labels,
                       candidate_mask=candidate_mask).loss
        unrestricted = model(input_ids, attention_mask=mask, labels=labels).loss
        model.char_bias[never] += 50.0
        after = model(input_ids, attention_mask=mask, labels=labels,
                      candidate_mask=candidate_mask).loss
        unrestricted_after = model(input_ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(after, before)
    assert unrestricted_after > unrestricted + 10


def test_save_and_load_give_identical_outputs(tmp_path) -> None:
    model = pinyin_model(seed=3)
    input_ids, mask = batch()
    model.save_pretrained(tmp_path)
    again = PinziForPinyin.from_pretrained(tmp_path).eval()
    assert again.config.arch == "transformer"
    assert (again.config.n_chars, again.config.char_offset) == (len(CHARS), 5)
    with torch.no_grad():
        assert torch.equal(again(input_ids, attention_mask=mask).logits,
                           model(input_ids, attention_mask=mask).logits)
    assert torch.equal(again.char_bias, model.char_bias)


def test_load_pretrained_returns_model_and_tokenizer_and_checks_they_match(tmp_path) -> None:
    model = pinyin_model(seed=4)
    model.save_pretrained(tmp_path)
    TOKENIZER.save(tmp_path)
    loaded, tokenizer = load_pretrained(PinziForPinyin, str(tmp_path))
    assert tokenizer.chars == TOKENIZER.chars
    assert not loaded.training
    input_ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids, attention_mask=mask).logits,
                           model(input_ids, attention_mask=mask).logits)
    PinziTokenizer([*CHARS, "新"]).save(tmp_path)  # one char more than the weights know
    with pytest.raises(ModelLoadError, match=r"is damaged: vocab.json has 466 tokens, 12 "
                                             r"characters from id 5, but config.json says 465"):
        load_pretrained(PinziForPinyin, str(tmp_path))


def _saved(tmp_path, **config_changes) -> None:
    """A saved tiny converter whose config.json then says otherwise."""
    pinyin_model().save_pretrained(tmp_path)
    TOKENIZER.save(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config_changes}))


@pytest.mark.parametrize(("changes", "problem"), [
    ({"num_layers": -3}, "num_layers must be a whole number of at least 1, not -3"),
    ({"num_layers": 10**6}, "num_layers 1000000 is over 256"),
    ({"num_layers": "2"}, "num_layers must be a whole number of at least 1, not '2'"),
    ({"num_heads": 0}, "num_heads must be a whole number of at least 1, not 0"),
    ({"hidden_size": 10**9}, "config.json describes no model that can be built"),
    ({"intermediate_size": 10**5}, "model.safetensors does not hold the model config.json"),
    ({"num_layers": 1}, r"12 weights differ, encoder.blocks.1.attn.out.bias is \(64,\) in the "
                        "file and absent in the model"),
    ({"num_layers": 3}, "encoder.blocks.2.attn.out.bias is missing in the file"),
    ({"dropout": 1.5}, r"dropout 1.5 is not in \[0, 1\)"),
    ({"char_offset": -1}, "char_offset must be a whole number of at least 0"),
])
def test_a_damaged_config_is_refused_before_any_weight_is_built(tmp_path, changes, problem):
    _saved(tmp_path, **changes)
    folder = re.escape(str(tmp_path))
    with pytest.raises(ModelLoadError, match=f"model folder {folder} is damaged: .*{problem}"):
        load_pretrained(PinziForPinyin, tmp_path)


@pytest.mark.parametrize("weights", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", "half"])
def test_damaged_weights_are_refused(tmp_path, weights):
    _saved(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2] if weights == "half"
                     else weights)
    folder = re.escape(str(tmp_path))
    with pytest.raises(ModelLoadError,
                       match=f"model folder {folder} is damaged: model.safetensors cannot be"):
        load_pretrained(PinziForPinyin, tmp_path)


def test_a_classifier_is_no_converter_but_a_converter_is_a_classifiers_base(tmp_path):
    classifier = PinziForClassification(config(num_labels=3))
    classifier.save_pretrained(tmp_path / "classifier")
    TOKENIZER.save(tmp_path / "classifier")
    with pytest.raises(ModelLoadError, match="classifier is a classifier, not a converter"):
        load_pretrained(PinziForPinyin, tmp_path / "classifier")
    _saved(tmp_path / "converter")  # its encoder is a base; the new head may differ
    model, _ = load_pretrained(PinziForClassification, tmp_path / "converter", num_labels=4,
                               ignore_mismatched_sizes=True)
    assert model.classifier.out_features == 4


def test_lstm_attention_runs_trains_and_round_trips(tmp_path) -> None:
    model = pinyin_model("lstm-attention")
    input_ids, mask, labels, candidate_mask = labelled()
    model.train()
    out = model(input_ids, attention_mask=mask, labels=labels, candidate_mask=candidate_mask)
    assert torch.isfinite(out.loss) and out.logits.shape == (4, TOKENIZER.n_chars)
    out.loss.backward()
    for name in ("encoder.encoder.weight_ih_l0", "encoder.decoder.weight_ih_l0",
                 "encoder.combine.weight", "encoder.embed.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    model.eval()
    model.save_pretrained(tmp_path)
    again = PinziForPinyin.from_pretrained(tmp_path).eval()
    assert again.config.arch == "lstm-attention"
    with torch.no_grad():
        assert torch.equal(again(input_ids, attention_mask=mask).logits,
                           model(input_ids, attention_mask=mask).logits)


# ---- PinziForClassification -----------------------------------------------------------------


def test_classification_mean_pooling_ignores_padding() -> None:
    torch.manual_seed(0)
    model = PinziForClassification(config(num_labels=3)).eval()
    text = TOKENIZER.encode_text("北京天安门")
    padded = torch.tensor([text + [PAD_ID] * 3, TOKENIZER.encode_text("中国人民银行北京")])
    mask = (padded != PAD_ID).long()
    with torch.no_grad():
        alone = model(torch.tensor([text]), attention_mask=torch.ones(1, 5)).logits[0]
        in_batch = model(padded, attention_mask=mask).logits
        other = padded.clone()
        other[0, 5:] = torch.tensor(TOKENIZER.encode_text("中国人"))  # content under the mask
        replaced = model(other, attention_mask=mask).logits[0]
        unmasked = model(other, attention_mask=torch.ones_like(mask)).logits[0]
        no_mask = model(torch.tensor([text])).logits[0]
    assert in_batch.shape == (2, 3)
    torch.testing.assert_close(in_batch[0], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(replaced, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(no_mask, alone, rtol=1e-5, atol=1e-5)  # no mask: every token
    assert not torch.allclose(unmasked, alone, atol=1e-3)


def test_classification_loss_and_class_weights() -> None:
    torch.manual_seed(1)
    model = PinziForClassification(config(num_labels=3)).eval()
    input_ids = torch.tensor([TOKENIZER.encode_text("北京天安门"),
                              TOKENIZER.encode_text("中国人民银")])
    labels = torch.tensor([2, 0])
    weights = torch.tensor([1.0, 1.0, 3.0])
    with torch.no_grad():
        out = model(input_ids, labels=labels, class_weights=weights)
    expected = F.cross_entropy(out.logits, labels, weight=weights)
    torch.testing.assert_close(out.loss, expected)
    assert out.logits.shape == (2, 3)


# ---- PinziConfig --------------------------------------------------------------------------


def test_config_rejects_unknown_arch_and_indivisible_heads() -> None:
    with pytest.raises(Exception, match="unknown arch 'gru'"):
        PinziConfig(arch="gru")
    with pytest.raises(Exception, match="hidden_size 65 is not divisible by num_heads 2"):
        PinziConfig(hidden_size=65, num_heads=2)
    with pytest.raises(Exception, match="unknown preset 'huge'"):
        PinziConfig.from_preset("huge")
    tiny = config(num_heads=4)  # an override of a preset field wins
    assert (tiny.hidden_size, tiny.num_heads, tiny.num_layers) == (64, 4, 2)
