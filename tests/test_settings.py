"""Typed settings sections: layering, routing, validation, config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pinzi.denoise import NoiseConfig
from pinzi.errors import SettingsError
from pinzi.lora import LoraSettings
from pinzi.model import ModelSettings
from pinzi.settings import parse_assignments, read_config_file, record, resolve
from pinzi.train import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SECTIONS = {"train": TrainConfig, "noise": NoiseConfig, "model": ModelSettings}


def test_layers_route_and_later_ones_win():
    got = resolve(SECTIONS, {"train": {"learning_rate": 0.1, "max_steps": 7}},
                  {"learning_rate": "5e-4", "all_pinyin": 0.2},  # flat: routed; YAML's "5e-4"
                  {"model.preset": "tiny", "train.max_steps": 9})
    assert got["train"].learning_rate == 5e-4 and got["train"].max_steps == 9
    assert got["noise"].all_pinyin == 0.2 and got["model"].preset == "tiny"
    assert got["train"].weight_decay == TrainConfig().weight_decay  # untouched: the default


@pytest.mark.parametrize(("layer", "message"), [
    ({"learning_rat": 0.1}, "did you mean 'train.learning_rate'"),
    ({"train": {"all_pinyin": 0.3}}, "'all_pinyin' is not a setting of section 'train'; it "
                                      "belongs in 'noise'"),
    ({"train": {"learnig_rate": 1}}, "did you mean 'learning_rate'"),
    ({"lora.rank": 4}, "unknown section 'lora'"),
    ({"max_steps": "many"}, "train.max_steps in the settings must be an integer"),
    ({"max_steps": 2.5}, "must be an integer"),
    ({"mixed_precision": "fp8"}, "must be one of auto, no, bf16, fp16"),
    ({"preset": "huge"}, "must be one of tiny, small, base, large"),
    ({"hidden_size": True}, "must be a number"),
])
def test_bad_settings_say_what_is_wrong(layer, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        resolve(SECTIONS, layer)


def test_a_name_in_two_sections_must_be_qualified():
    sections = {"train": TrainConfig, "other": LoraSettings, "noise": NoiseConfig}
    assert resolve(sections, {"dropout": 0.2})["other"].dropout == 0.2  # one owner here
    with pytest.raises(SettingsError, match="is a setting of model and lora"):
        resolve({"model": ModelSettings, "lora": LoraSettings}, {"dropout": 0.2})
    both = resolve({"model": ModelSettings, "lora": LoraSettings}, {"lora.dropout": 0.2})
    assert both["lora"].dropout == 0.2 and both["model"].dropout is None


def test_yaml_no_means_no_where_no_is_a_choice(tmp_path):
    (tmp_path / "run.yaml").write_text("train:\n  mixed_precision: no\n  max_steps: 5\n")
    got = resolve(SECTIONS, read_config_file(tmp_path / "run.yaml"))
    assert got["train"].mixed_precision == "no" and got["train"].max_steps == 5
    with pytest.raises(SettingsError, match="must be text"):
        resolve({"lora": LoraSettings}, {"targets": False})


def test_config_files_keep_their_sections(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  learning_rate: 0.01\nmax_steps: 5\n")
    (tmp_path / "b.toml").write_text("[noise]\nall_pinyin = 0.2\n")
    assert read_config_file(tmp_path / "a.yaml") == {"train": {"learning_rate": 0.01},
                                                     "max_steps": 5}
    assert read_config_file(tmp_path / "b.toml") == {"noise": {"all_pinyin": 0.2}}
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(SettingsError, match="not valid"):
        read_config_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SettingsError, match="key: value"):
        read_config_file(tmp_path / "list.yaml")
    with pytest.raises(SettingsError, match="cannot read"):
        read_config_file(tmp_path / "missing.yaml")


def test_the_shipped_recipes_are_valid_settings():
    for name in ("default", "continue"):
        resolve(SECTIONS, read_config_file(CONFIGS / f"{name}.yaml"))


def test_assignments_and_the_record(tmp_path):
    assert parse_assignments(["train.seed=7", "mixed-precision=no", "targets=qkv,out"]) == \
        {"train.seed": 7, "mixed_precision": False, "targets": "qkv,out"}
    with pytest.raises(SettingsError, match="key=value"):
        parse_assignments(["seed"])
    record(tmp_path, resolve(SECTIONS, {"seed": 3}))
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved["train"]["seed"] == 3 and saved["model"]["preset"] == "small"
