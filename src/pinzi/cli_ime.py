"""The input-method commands of `pinzi`: predict (next words) and learn (picks).

What the page and the HTTP API do per keystroke (/v1/predict, /v1/learn), for the shell: a
script can feed picks to ``pinzi learn`` and convert with what was learned (``pinzi convert
--user-dir``). Registered on the app by :mod:`pinzi.cli`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pinzi.console import argument_or_lines, emit, stdin_lines, warn, without_controls

UserDirOption = Annotated[Path | None, typer.Option(
    help="Folder of what pinzi learns from your picks (`pinzi learn`, `pinzi serve "
         "--user-dir`): learned words win where their pinyin fits. Without it nothing is "
         "learned or stored.")]
ModelOption = Annotated[str | None, typer.Option(
    "--model", "-m", help="Model folder or Hugging Face repo id (default: the shipped model).")]


def predict(
    context: Annotated[str | None, typer.Argument(
        help="Text committed so far, e.g. 我爱北京. Omit it to predict after each line of "
             "standard input.")] = None,
    model: ModelOption = None,
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="How many next words.")] = 5,
    traditional: Annotated[bool, typer.Option(
        "--traditional", help="Write traditional characters (OpenCC s2t).")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line: the context and the predictions with their "
                       "scores, as /v1/predict answers.")] = False,
) -> None:
    """Next-word prediction (联想): [bold]pinzi predict 我爱北京[/] -> 天安门 …

    Prints the K likeliest next words, TAB-separated, best first, from the model folder's
    character n-gram and word list. Without CONTEXT it reads standard input and writes one
    line per input line.
    """
    from pinzi.converter import Converter

    converter = Converter.from_pretrained(model, traditional=traditional)

    def predict_line(line: str) -> None:
        found = converter.predict(line, k)
        if as_json:
            emit(json.dumps({"context": line, "predictions": [
                {"hanzi": p.hanzi, "score": round(p.score, 4)} for p in found]},
                ensure_ascii=False))
        else:
            emit("\t".join(p.hanzi for p in found))

    for _, line in argument_or_lines(context):
        predict_line(line)


def learn(
    user_dir: Annotated[Path, typer.Option(
        help="Folder that keeps what is learned (created if needed); `pinzi convert "
             "--user-dir` and `pinzi serve --user-dir` use it.")],
    pinyin: Annotated[str | None, typer.Argument(
        help="What was typed, e.g. yinhang. Omit PINYIN and HANZI to read 'pinyin<TAB>hanzi' "
             "lines from standard input.")] = None,
    hanzi: Annotated[str | None, typer.Argument(help="What was picked for it, e.g. 音航.")
                     ] = None,
    model: ModelOption = None,
    forget: Annotated[bool, typer.Option(
        "--forget", help="Forget everything learned in --user-dir instead.")] = False,
) -> None:
    """Learn picks: [bold]pinzi learn --user-dir ~/.pinzi yinhang 音航[/].

    A learned word then wins where its pinyin fits (`pinzi convert --user-dir`), and is
    listed when typed by its initials; each pick makes it stronger. A pick that is not a
    conversion of its pinyin (one character per syllable or initial) is refused with a
    message; from standard input such lines are skipped with a warning, the rest learned.
    Prints how many words the folder holds.
    """
    from pinzi.converter import Converter
    from pinzi.errors import DataError, PinziError
    from pinzi.learning import LearnedWords

    if forget:
        if pinyin is not None:
            raise PinziError("--forget takes no PINYIN or HANZI")
        emit(f"forgot {LearnedWords(user_dir).forget()} words")
        return
    if (pinyin is None) != (hanzi is None):
        raise PinziError("give both PINYIN and HANZI, or neither to read standard input")
    converter = Converter.from_pretrained(model, user_dir=user_dir)
    if pinyin is not None and hanzi is not None:
        converter.learn(without_controls(pinyin), without_controls(hanzi))
    else:
        for number, line in stdin_lines():
            typed, _, picked = line.partition("\t")
            if not line.strip():
                continue
            try:
                converter.learn(typed.strip(), picked.strip())
            except DataError as problem:
                warn(f"line {number}: {problem}; skipped")
    emit(f"{len(converter.learned)} words learned")
