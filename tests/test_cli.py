"""The `pinzi` command line, through typer's runner (no subprocess, no network)."""

from __future__ import annotations

import json

from typer.main import get_command
from typer.testing import CliRunner

from pinzi import __version__
from pinzi.cli import app

runner = CliRunner()


COMMANDS = {(): {"convert", "data", "pretrain", "eval", "serve", "export", "finetune", "merge",
                  "classify"},
            ("data",): {"prepare"}, ("classify",): {"train", "eval", "predict"}}


def _listed(output: str) -> set[str]:
    """The command names of a rich help screen's Commands panel (a row: "│ name  help")."""
    panel = output.split("Commands")[1]
    return {line.split()[1] for line in panel.splitlines()
            if line.startswith("│ ") and not line.startswith("│  ") and len(line.split()) > 1}


def test_help_lists_every_command_and_each_one_has_help():
    for group, names in COMMANDS.items():
        result = runner.invoke(app, [*group, "--help"])
        assert result.exit_code == 0
        assert _listed(result.output) == names, group
        registered = get_command(app)
        for part in group:
            registered = registered.commands[part]
        assert set(registered.commands) == names  # the test knows every command
        for name in names - {"data", "classify"}:
            result = runner.invoke(app, [*group, name, "--help"])
            assert result.exit_code == 0 and "Usage:" in result.output, (group, name)
            assert "--help" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_convert_argument(tiny_model):
    result = runner.invoke(app, ["convert", "woaibeijingtiananmen", "--model", str(tiny_model)])
    assert result.exit_code == 0
    assert result.stdout == "我爱北京天安门\n"


def test_convert_nbest_and_json(tiny_model):
    result = runner.invoke(app, ["convert", "woaibeijing", "-m", str(tiny_model), "--nbest", "3"])
    assert result.stdout.rstrip("\n").split("\t")[0] == "我爱北京"
    assert len(result.stdout.split("\t")) == 3
    result = runner.invoke(app, ["convert", "nihao", "-m", str(tiny_model), "--json"])
    row = json.loads(result.stdout)
    assert row["input"] == "nihao" and row["output"] == "你好"


def test_stdin_keeps_one_line_per_line_whatever_comes_in(tiny_model):
    lines = [b"woaibeijing", b"", b"ni\xffhao", b"x" * 5000, b"wo\x07aibeijing\r", b"12 ab"]
    result = runner.invoke(app, ["convert", "-m", str(tiny_model)], input=b"\n".join(lines) + b"\n")
    assert result.exit_code == 0
    out = result.stdout.split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == ""
    assert out[0] == "我爱北京"
    assert out[1] == ""
    assert "\ufffd" in out[2]
    assert out[3] == ""
    assert out[4] == "我爱北京"
    assert "invalid UTF-8" in result.stderr and "line 4" in result.stderr


def test_missing_model_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["convert", "nihao", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "nope" in result.stderr


def test_corrupt_model_is_a_clear_error(tiny_model, tmp_path):
    for name in ("config.json", "vocab.json"):
        (tmp_path / name).write_bytes((tiny_model / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    result = runner.invoke(app, ["convert", "nihao", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "cannot be loaded" in result.stderr


def test_unknown_fuzzy_pair_is_a_clear_error(tiny_model):
    result = runner.invoke(app, ["convert", "nihao", "-m", str(tiny_model), "--fuzzy", "q=x"])
    assert result.exit_code == 2 and "q=x" in result.stderr


def test_pretrain_reports_bad_settings_without_traceback(tiny_corpus, tmp_path):
    result = runner.invoke(app, ["pretrain", "--data", str(tiny_corpus), "--out", str(tmp_path),
                                 "--preset", "tiny", "--set", "learning_rat=1"])
    assert result.exit_code == 2 and "did you mean 'train.learning_rate'" in result.stderr


def test_pretrain_continues_from_a_base(tiny_model, tiny_corpus, tmp_path):
    from safetensors.numpy import load_file

    result = runner.invoke(app, ["pretrain", "--base", str(tiny_model), "--data",
                                 str(tiny_corpus), "--out", str(tmp_path), "--max-steps", "2",
                                 "--set", "learning_rate=1e-9", "--set", "eval_every=2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "vocab.json").read_bytes() == (tiny_model / "vocab.json").read_bytes()
    assert (tmp_path / "ngram.npz").exists()  # counted anew from --data
    # two steps at a vanishing learning rate: the weights are still the base's
    before, after = load_file(tiny_model / "model.safetensors"), load_file(
        tmp_path / "model.safetensors")
    assert before.keys() == after.keys()
    assert max(abs(before[k] - after[k]).max() for k in before) < 1e-4
