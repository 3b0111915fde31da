"""Learning from the user's picks: what it changes, what it refuses, what it keeps on disk."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pinzi.converter import Converter
from pinzi.errors import DataError, OutputError
from pinzi.learning import LEARNED_FILE, LearnedWords


@pytest.fixture
def converter(tiny_model) -> Converter:
    return Converter.from_pretrained(tiny_model, backend="torch", learned=LearnedWords())


def test_a_pick_wins_next_time_and_forgetting_undoes_it(converter):
    assert converter.convert("beijing") == "北京"
    runner_up = converter.candidates("beijing", k=2, partial=False)[1].hanzi
    converter.learn("beijing", runner_up)
    assert converter.convert("beijing") == runner_up
    assert converter.convert("woaibeijing") == "我爱" + runner_up  # inside longer input too
    assert converter.forget() == 1
    assert converter.convert("beijing") == "北京"


def test_a_new_word_becomes_a_candidate_also_by_its_initials(converter):
    assert converter.convert("yinhang") == "银行"
    converter.learn("yin hang", "音航")
    assert converter.convert("yinhang") == "音航"
    assert converter.convert("tazaiyinhanggongzuo") == "他在音航工作"
    assert "音航" in [c.hanzi for c in converter.candidates("yh", k=9)]


def test_a_learned_character_wins_only_when_typed_alone(converter):
    converter.learn("ta", "她")
    assert converter.convert("ta") == "她"
    assert converter.convert("tamenzhengzaikaihui") == "他们正在开会"


def test_picks_that_are_no_conversion_of_the_pinyin_are_refused(converter):
    for pinyin, hanzi in [("nihao", "北京"), ("nihao", "你"), ("", "你"), ("nihao", "ni好"),
                          ("nihao", ""), ("nihao", "你好" * 20)]:
        with pytest.raises(DataError, match="cannot learn"):
            converter.learn(pinyin, hanzi)
    assert len(converter.learned) == 0


def test_traditional_picks_and_shuangpin_keys_are_learned_as_what_they_stand_for(converter):
    converter.learn("yinhang", "音航")
    converter.learn("nihc", "你号", scheme="xiaohe")  # ni'hao
    assert set(converter.learned.words.words) == {"音航", "你号"}
    converter.learn("yinhang", "銀行")  # traditional
    assert "银行" in converter.learned.words.words


def test_what_is_learned_is_kept_in_the_folder_and_read_back(tiny_model, tmp_path):
    first = Converter.from_pretrained(tiny_model, backend="torch", user_dir=tmp_path)
    first.learn("yinhang", "音航")
    first.learn("yinhang", "音航")
    stored = json.loads((tmp_path / LEARNED_FILE).read_text(encoding="utf-8"))
    assert stored["words"] == {"音航": [2, 2]}
    first.learned.close()
    again = Converter.from_pretrained(tiny_model, backend="torch", user_dir=tmp_path)
    assert again.convert("yinhang") == "音航"
    assert again.learned.words.words["音航"] == first.learned.words.words["音航"]  # 2 picks
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("content", ["{", '{"format": "other"}', "[]",
                                     '{"format": "pinzi-learned", "version": 1, "clock": 1, '
                                     '"words": {"音航": "x"}}'])
def test_a_damaged_file_is_a_clear_error_and_is_left_alone(tmp_path, content):
    (tmp_path / LEARNED_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="is damaged.*move it away"):
        LearnedWords(tmp_path)
    assert (tmp_path / LEARNED_FILE).read_text(encoding="utf-8") == content


def test_the_store_is_bounded_dropping_the_least_used_first(tmp_path):
    store = LearnedWords(tmp_path, capacity=10)
    for _ in range(3):
        store.record("常用")
    for i in range(12):
        store.record("字" + chr(0x4E00 + i))
    assert len(store) <= 10 and "常用" in store.words.words
    assert "字" + chr(0x4E00 + 11) in store.words.words  # the latest stays
    assert len(json.loads((tmp_path / LEARNED_FILE).read_text())["words"]) == len(store)


def test_a_second_process_cannot_learn_into_the_same_folder(tmp_path):
    held = LearnedWords(tmp_path)
    other = subprocess.run(
        [sys.executable, "-c", "import sys; from pinzi.learning import LearnedWords\n"
         "try:\n    LearnedWords(sys.argv[1])\nexcept Exception as e:\n    print(e)",
         str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert "is being written by another pinzi process" in other.stdout
    held.close()


def test_a_full_disk_keeps_the_file_and_the_pick_in_memory(tmp_path, monkeypatch):
    store = LearnedWords(tmp_path)
    store.record("音航")
    before = (tmp_path / LEARNED_FILE).read_bytes()

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pinzi.learning.write_atomic", full)
    with pytest.raises(OutputError, match="cannot save what was learned.*No space left"):
        store.record("银航")
    assert (tmp_path / LEARNED_FILE).read_bytes() == before
    assert set(store.words.words) == {"音航", "银航"}
