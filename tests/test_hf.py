"""Tests for the Hugging Face registration (pinzi.model, pinzi.hf): AutoConfig, AutoModel*,
AutoTokenizer load local pinzi folders once ``pinzi.model`` is imported; no network."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from pinzi.hf import PinziHFTokenizer
from pinzi.model import (
    PinziConfig,
    PinziForClassification,
    PinziForPinyin,
    PinziModel,
)
from pinzi.tokenizer import CLS_ID, PAD_ID, SEP_ID, UNK_ID, PinziTokenizer

TOKENIZER = PinziTokenizer(list("中国人民银行"))


def config(**overrides) -> PinziConfig:
    return PinziConfig.from_preset("tiny", vocab_size=TOKENIZER.vocab_size,
                                   char_offset=TOKENIZER.char_offset,
                                   n_chars=TOKENIZER.n_chars, dropout=0.0, **overrides)


@pytest.fixture(scope="module")
def converter_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("converter")
    torch.manual_seed(0)
    model = PinziForPinyin(config())
    with torch.no_grad():
        model.char_bias.normal_()
    model.save_pretrained(out)
    TOKENIZER.save(out)
    return out


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(1)
    PinziForClassification(config(num_labels=3)).save_pretrained(out)
    TOKENIZER.save(out)
    return out


def ids(text: str) -> torch.Tensor:
    return torch.tensor([[CLS_ID, *TOKENIZER.encode_text(text)]])


def test_tokenizer_save_writes_a_tokenizer_config(converter_dir, tmp_path) -> None:
    saved = json.loads((converter_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert saved["tokenizer_class"] == PinziHFTokenizer.__name__
    assert saved["model_max_length"] == config().max_position_embeddings  # from config.json
    assert [saved[k] for k in ("pad_token", "unk_token", "cls_token", "sep_token",
                               "mask_token")] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    TOKENIZER.save(tmp_path)  # no model in the folder: no length
    assert "model_max_length" not in json.loads((tmp_path / "tokenizer_config.json").read_text())


def test_auto_classes_load_a_converter_folder(converter_dir) -> None:
    assert type(AutoConfig.from_pretrained(converter_dir)) is PinziConfig
    encoder, info = AutoModel.from_pretrained(converter_dir, output_loading_info=True)
    assert type(encoder) is PinziModel
    assert not info["missing_keys"] and not info["unexpected_keys"]  # heads ignored quietly
    masked_lm = AutoModelForMaskedLM.from_pretrained(converter_dir)
    assert type(masked_lm) is PinziForPinyin
    original = PinziForPinyin.from_pretrained(converter_dir).eval()
    x = ids("中国人")
    with torch.no_grad():
        hidden = encoder.eval()(input_ids=x).last_hidden_state
        torch.testing.assert_close(hidden, original.encode(x))
        torch.testing.assert_close(masked_lm.eval()(x).logits, original(x).logits)


def test_auto_tokenizer_reads_text_as_pinzi_does(converter_dir) -> None:
    tok = AutoTokenizer.from_pretrained(converter_dir)
    assert type(tok) is PinziHFTokenizer
    zhong, guo = TOKENIZER.char_id("中"), TOKENIZER.char_id("国")
    # [CLS] first, as pinzi's classifier reads texts; "x" is not in the vocabulary
    assert tok("中国x")["input_ids"] == [CLS_ID, zhong, guo, UNK_ID]
    assert tok("中国x", add_special_tokens=False)["input_ids"] == [zhong, guo, UNK_ID]
    assert tok("中国", "人")["input_ids"] == [CLS_ID, zhong, guo, SEP_ID, TOKENIZER.char_id("人")]
    assert tok("中\u200b国")["input_ids"] == [CLS_ID, zhong, guo]  # normalised first
    assert tok.decode([CLS_ID, zhong, guo, UNK_ID]) == "[CLS]中国[UNK]"
    assert tok.decode([CLS_ID, zhong, guo], skip_special_tokens=True) == "中国"
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id) == (PAD_ID, UNK_ID, CLS_ID)
    assert tok.model_max_length == config().max_position_embeddings
    vocab = tok.get_vocab()
    assert len(vocab) == len(tok) == TOKENIZER.vocab_size
    assert vocab["中"] == zhong
    assert vocab["<py:zhong>"] == TOKENIZER.syllable_id("zhong")
    assert vocab["<ini:zh>"] == TOKENIZER.initial_id("zh")
    assert tok.convert_ids_to_tokens([zhong, TOKENIZER.syllable_id("guo")]) == ["中", "<py:guo>"]
    batch = tok(["中国", "人民银行"], padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "attention_mask"}  # no token_type_ids: the models take none
    assert batch["input_ids"][0].tolist()[-2:] == [PAD_ID, PAD_ID]
    with torch.no_grad():
        AutoModel.from_pretrained(converter_dir)(**batch)


def test_auto_tokenizer_save_pretrained_round_trip(converter_dir, tmp_path) -> None:
    tok = AutoTokenizer.from_pretrained(converter_dir)
    tok.save_pretrained(tmp_path)
    assert PinziTokenizer.load(tmp_path).chars == TOKENIZER.chars  # pinzi's own vocab.json
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == \
        PinziHFTokenizer.__name__
    again = AutoTokenizer.from_pretrained(tmp_path)  # tokenizer files only: no config.json
    assert again("中国x")["input_ids"] == tok("中国x")["input_ids"]


def test_auto_classes_load_a_classifier_folder(classifier_dir) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    assert type(model) is PinziForClassification
    assert model.config.num_labels == 3
    encoder = AutoModel.from_pretrained(classifier_dir)  # the classifier's encoder, head left out
    x = ids("人民银行")
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(x).last_hidden_state, model.eval().encode(x))
        assert model(x).logits.shape == (1, 3)


def test_auto_tokenizer_reads_a_folder_saved_before_tokenizer_config(converter_dir,
                                                                      tmp_path) -> None:
    for name in ("config.json", "vocab.json"):  # the model type alone picks the tokenizer
        (tmp_path / name).write_bytes((converter_dir / name).read_bytes())
    assert AutoTokenizer.from_pretrained(tmp_path)("中x")["input_ids"] == \
        [CLS_ID, TOKENIZER.char_id("中"), UNK_ID]
