"""The `pinzi` command line, through typer's runner (no subprocess, no network)."""

from __future__ import annotations

import json
import sys

from typer.main import get_command
from typer.testing import CliRunner

from pinzi import __version__
from pinzi.cli import app

runner = CliRunner()


COMMANDS = {(): {"convert", "pinyin", "data", "pretrain", "eval", "serve", "export", "finetune",
                  "merge", "classify", "predict", "learn"},
            ("data",): {"prepare"}, ("classify",): {"train", "keras", "eval", "predict"}}


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
    row = json.loads(result.stdout)  # the shape of /v1/candidates' answer, plus the best
    assert row["pinyin"] == "nihao" and row["hanzi"] == "你好"
    assert row["candidates"][0] == {**row["candidates"][0], "hanzi": "你好", "consumed": 5}
    assert set(row["candidates"][0]) == {"hanzi", "score", "consumed"}


def test_convert_json_pages_through_partial_candidates(tiny_model):
    def page(*args: str) -> dict:
        result = runner.invoke(app, ["convert", "woaibeijing", "-m", str(tiny_model), "--json",
                                     *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    first, second = page("-n", "4"), page("-n", "4", "--offset", "4")
    both = page("-n", "8")["candidates"]
    assert first["candidates"] + second["candidates"] == both
    assert second["hanzi"] == first["hanzi"] == "我爱北京" and second["offset"] == 4
    assert {c["consumed"] for c in both} > {len("woaibeijing")}  # some cover only the start


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


# ---- a CLI that teaches: choices, help texts, missing extras, completion, eval's output --------
def _commands(group=None, path=()):
    """(path, click command) of every command under ``group`` (default: the whole CLI)."""
    group = group or get_command(app)
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


def test_choices_are_shown_in_help_and_completed():
    shown = {("pretrain",): ["<tiny|small|base|large>", "<transformer|lstm-attention>"],
             ("eval",): ["<spaced|continuous|abbreviated|all>", "<auto|torch|onnx>"],
             ("serve",): ["<auto|torch|onnx>"], ("export",): ["<onnx>", "<int8>"],
             ("finetune",): ["<spaced|continuous|abbreviated>"],
             ("classify", "train"): ["<accuracy|macro_f1>"]}
    for command, choices in shown.items():
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        for choice in choices:
            assert choice in result.output, (command, choice)
    result = runner.invoke(app, ["pretrain", "--data", "d", "--out", "o", "--preset", "huge"])
    assert result.exit_code == 2 and "'huge' is not one of 'tiny'" in result.output
    result = runner.invoke(app, [], prog_name="pinzi", env={
        "_PINZI_COMPLETE": "complete_bash", "COMP_WORDS": "pinzi eval --form ", "COMP_CWORD": "3"})
    assert result.output.split() == ["spaced", "continuous", "abbreviated", "all"]


def test_choices_written_out_are_those_of_the_settings():
    from typing import get_args, get_type_hints

    from pinzi import cli_train
    from pinzi.classify_task import METRICS
    from pinzi.export import QUANTIZE
    from pinzi.model import ModelSettings

    hints = get_type_hints(ModelSettings)
    assert get_args(cli_train.Preset) == get_args(hints["preset"])
    assert get_args(cli_train.Arch) == get_args(hints["arch"])
    assert get_args(cli_train.Metric) == METRICS
    from pinzi.cli import export

    quantize = get_type_hints(export)["quantize"]  # Literal[...] | None
    assert get_args(get_args(quantize)[0]) == QUANTIZE


def test_help_texts_lose_nothing_to_markup_and_have_no_stray_spaces():
    import re

    # rich reads "[word ...]" as markup and drops it: a literal bracket is written "\["
    unescaped = re.compile(r"(?<!\\)\[(?!bold\]|/\])")
    stray_space = re.compile(r"\w \.(\s|$)|\w ,|\( | \)")  # "label ." "a , b" "( x )"
    for path, command in _commands():
        texts = [command.help or ""] + [param.help or "" for param in command.params]
        for text in texts:
            assert not unescaped.search(text), (path, text)
        output = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
        assert not stray_space.search(output), (path, stray_space.search(output))
    export_help = runner.invoke(app, ["export", "--help"]).output
    assert 'pip install "pinzi[onnx]"' in export_help
    assert "[default: all cores]" in runner.invoke(
        app, ["data", "prepare", "--help"], env={"COLUMNS": "200"}).output


def test_a_missing_extra_names_the_pip_install(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if pinzi[serve] were not installed
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert 'needs uvicorn, which is not installed: pip install "pinzi[serve]"' in result.stderr
    monkeypatch.setitem(sys.modules, "torch", None)  # a model without model.onnx needs torch
    result = runner.invoke(app, ["convert", "nihao", "-m", str(tiny_model)])
    assert result.exit_code == 2 and 'pip install "pinzi[train]"' in result.stderr
    monkeypatch.setitem(sys.modules, "pinzi.decode", None)  # not optional: a bug, kept as one
    result = runner.invoke(app, ["convert", "nihao"])
    assert result.exit_code == 1 and isinstance(result.exception, ModuleNotFoundError)


def test_eval_shows_progress_on_a_terminal(tmp_path, monkeypatch):
    gold = tmp_path / "gold.txt"
    gold.write_text("我爱北京天安门。今天天气很好\n", encoding="utf-8")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich then draws as on a terminal
    result = runner.invoke(app, ["eval", str(gold), "--form", "all"])
    assert result.exit_code == 0, result.output
    for form in ("spaced", "continuous", "abbreviated"):
        assert f"gold.txt {form}" in result.stderr and "2/2" in result.stderr
    monkeypatch.delenv("TTY_COMPATIBLE")
    result = runner.invoke(app, ["eval", str(gold)])
    assert result.stderr == ""  # in a log: no bar
    assert "100.00%" in result.stdout


def test_eval_table_fits_80_columns(tmp_path, monkeypatch):
    import pinzi.evaluate
    from pinzi.converter import Converter

    widest = {"form": "abbreviated", "nbest": 5, "clauses": 999_999, "chars": 9_999_999,
              "char_acc": 1.0, "exact": 1.0, "p_at_k": 1.0, "bleu": 100.0,
              "clauses_per_s": 99_999.9}
    monkeypatch.setattr(Converter, "from_pretrained", classmethod(lambda cls, *a, **k: None))
    monkeypatch.setattr(pinzi.evaluate, "evaluate_clauses",
                        lambda converter, clauses, form, bleu: {**widest, "form": form})
    monkeypatch.setattr(pinzi.evaluate, "require_bleu", lambda: None)
    files = []
    for name in ("pku_test.txt", "a-much-longer-name-of-a-gold-test-file.txt"):
        files.append(tmp_path / name)
        files[-1].write_text("你好\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", *map(str, files), "--form", "all", "--bleu"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    assert sum("100.00%  100.00%  100.00%  100.00" in line for line in lines) == 6
    assert all(path.name in result.stdout for path in files)


# ---- traditional output, hanzi -> pinyin --------------------------------------------------------
def test_convert_writes_traditional_characters(tiny_model, tmp_path):
    def convert(*args: str) -> str:
        result = runner.invoke(app, ["convert", *args, "-m", str(tiny_model), "--traditional"])
        assert result.exit_code == 0, result.output
        return result.stdout

    assert convert("woaibeijing") == "我愛北京\n"
    row = json.loads(convert("woaibeijing", "--json", "--nbest", "5"))
    texts = [c["hanzi"] for c in row["candidates"]]
    assert row["hanzi"] == texts[0] == "我愛北京" and len(set(texts)) == len(texts)
    assert "爱" not in "".join(texts)
    # fuzzy pinyin and the user dictionary (written in simplified) work as without the flag
    assert convert("zongguo", "--fuzzy", "z=zh") == "中國\n"
    words = tmp_path / "words.txt"
    words.write_text("银航 20\n", encoding="utf-8")
    assert convert("yinhang", "--userdict", str(words)) == "銀航\n"
    assert convert("yinhang") == "銀行\n"


def pinyin(*args: str, stdin: bytes | None = None) -> str:
    result = runner.invoke(app, ["pinyin", *args], input=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_pinyin_reads_a_character_in_its_word():
    assert pinyin("中文") == "zhōng wén\n"
    assert pinyin("重庆") == "chóng qìng\n"
    assert pinyin("银行") == "yín háng\n"
    assert pinyin("行走") == "xíng zǒu\n"


def test_pinyin_tone_styles_and_separator():
    assert pinyin("绿了吗", "--tone", "number") == "lv4 le5 ma5\n"
    assert pinyin("绿了吗", "--tone", "none") == "lv le ma\n"
    assert pinyin("绿了吗", "--tone", "mark") == "lǜ le ma\n"
    assert pinyin("重庆银行", "--separator", "-") == "chóng-qìng-yín-háng\n"
    assert pinyin("中文", "--separator", "", "--tone", "none") == "zhongwen\n"
    result = runner.invoke(app, ["pinyin", "中文", "--tone", "digits"])
    assert result.exit_code == 2 and "mark" in result.output


def test_pinyin_passes_other_text_through():
    # words of letters or digits stand apart like readings; punctuation and spaces are kept
    assert pinyin("我用Python3写，你呢？") == "wǒ yòng Python3 xiě，nǐ ne？\n"
    assert pinyin("你好  世界!", "--separator", "-") == "nǐ-hǎo  shì-jiè!\n"
    assert pinyin("abc, 123") == "abc, 123\n"


def test_pinyin_stdin_keeps_one_line_per_line():
    lines = ["中文".encode(), b"", b"ok", b"\xff" + "银行".encode(), b"\x07" + "行".encode()]
    out = pinyin("--tone", "none", stdin=b"\n".join(lines) + b"\n").split("\n")
    assert out == ["zhong wen", "", "ok", "\ufffdyin hang", "xing", ""]


def test_learn_then_convert_with_what_was_learned(tiny_model, tmp_path):
    def run(*args: str, stdin: str | None = None):
        return runner.invoke(app, [*args, "-m", str(tiny_model)], input=stdin)

    learned = run("learn", "--user-dir", str(tmp_path), "yinhang", "音航")
    assert learned.exit_code == 0 and learned.stdout == "1 words learned\n"
    assert run("convert", "yinhang", "--user-dir", str(tmp_path)).stdout == "音航\n"
    assert run("convert", "yinhang").stdout == "银行\n"  # without the folder: nothing learned
    refused = run("learn", "--user-dir", str(tmp_path), "nihao", "北京")
    assert refused.exit_code == 2 and "cannot learn" in refused.output
    piped = run("learn", "--user-dir", str(tmp_path), stdin="nihao\t你号\nnihao\t北京\n\n")
    assert piped.exit_code == 0 and "line 2: cannot learn" in piped.output
    assert "2 words learned" in piped.stdout
    forgot = runner.invoke(app, ["learn", "--user-dir", str(tmp_path), "--forget"])
    assert forgot.exit_code == 0 and forgot.stdout == "forgot 2 words\n"


def test_predict_prints_next_words(tiny_model):
    result = runner.invoke(app, ["predict", "我爱北京", "-m", str(tiny_model), "-k", "3"])
    assert result.exit_code == 0 and len(result.stdout.rstrip("\n").split("\t")) == 3
    result = runner.invoke(app, ["predict", "-m", str(tiny_model), "--json"], input="我\n你\n")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["context"] for row in rows] == ["我", "你"] and len(rows[0]["predictions"]) == 5


def test_serve_refuses_workers_with_a_user_dir(tmp_path):
    result = runner.invoke(app, ["serve", "--user-dir", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 2 and "--user-dir takes one worker" in result.output
