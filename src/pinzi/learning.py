"""What the user picks, learned: the words then win where their pinyin fits.

Every pick an input method reports (:meth:`pinzi.converter.Converter.learn`) counts one use of
its hanzi. A learned word of two or more characters joins the conversion as a user word
(:func:`pinzi.decode.place_user_words`): it wins wherever its characters fit the typed
pinyin in place of whole words of the conversion (几个 does not turn 自己哥哥 into 自几个个),
and is listed when typed by its initials (each initial costs
:data:`~pinzi.decode.ABBREVIATED_COST`, so a word picked often enough wins there too). A
learned single character wins only when it is typed alone: inside longer input the context
decides (picking 她 for ``ta`` must not turn 他们 into 她们).

With a folder (``pinzi serve --user-dir DIR``) what is learned is kept in ``DIR/learned.json``,
rewritten atomically after every pick and read back on start; the folder is locked, so that
two processes never overwrite each other's picks. At most ``capacity`` words are kept: past
it the least used tenth goes, the longest unused first. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import math
import threading
from contextlib import ExitStack
from pathlib import Path

from pinzi.decode import UserDict
from pinzi.errors import DataError, OutputError
from pinzi.io import exclusive, write_atomic

LEARNED_FILE = "learned.json"
FORMAT = "pinzi-learned"
VERSION = 1
CAPACITY = 20_000  # words kept: a heavy user's year of new words and phrases, ~1 MB of JSON
# A learned word's weight (its margin over the conversion it replaces) grows with its picks:
# 5 at the first, 5 + ln(n) after n. Typed by two initials (8 off), it is listed 3 below the
# best conversion at once, among the close ones a page shows first, and wins after 20 picks.
FIRST_PICK_WEIGHT = 5.0


class LearnedWords:
    """Picked words and how often and how lately each was picked; thread-safe."""

    def __init__(self, directory: str | Path | None = None, *, capacity: int = CAPACITY):
        """``directory``: where to keep what is learned (created, locked and read back when
        given); None keeps it in memory only."""
        self.directory = None if directory is None else Path(directory)
        self.capacity = capacity
        self.words = UserDict(whole_words=True)  # of two or more characters
        self.singles = UserDict()  # single characters: they win only when typed alone
        self._uses: dict[str, tuple[int, int]] = {}  # word -> (picks, clock of the last)
        self._clock = 0
        self._lock = threading.Lock()
        self._held = ExitStack()
        if self.directory is not None:
            self._held.enter_context(exclusive(self.directory))
            try:
                self._read()
            except BaseException:
                self.close()
                raise

    def __len__(self) -> int:
        return len(self._uses)

    def userdicts(self, pinyin_pieces: int) -> list[UserDict]:
        """The learned words that may go in place in a reading of so many pinyin pieces."""
        return [self.words, self.singles] if pinyin_pieces == 1 else [self.words]

    def record(self, hanzi: str) -> None:
        """One more pick of ``hanzi`` (saved at once when there is a folder)."""
        with self._lock:
            self._clock += 1
            picks = self._uses.get(hanzi, (0, 0))[0] + 1
            self._set(hanzi, picks, self._clock)
            if len(self._uses) > self.capacity:
                self._drop_least_used()
            self._save()

    def forget(self) -> int:
        """Forget every learned word (and empty the folder's file); how many there were."""
        with self._lock:
            count = len(self._uses)
            for word in list(self._uses):
                self._dict_of(word).discard(word)
            self._uses.clear()
            self._clock = 0
            self._save()
            return count

    def close(self) -> None:
        """Release the folder's lock (it also ends with the process)."""
        self._held.close()

    # ---- internals ------------------------------------------------------------------------------
    def _dict_of(self, word: str) -> UserDict:
        return self.words if len(word) > 1 else self.singles

    def _set(self, word: str, picks: int, last: int) -> None:
        self._uses[word] = (picks, last)
        self._dict_of(word).add(word, FIRST_PICK_WEIGHT + math.log(picks))

    def _drop_least_used(self) -> None:
        keep = max(1, self.capacity * 9 // 10)
        ranked = sorted(self._uses.items(), key=lambda item: item[1], reverse=True)
        for word, _ in ranked[keep:]:
            del self._uses[word]
            self._dict_of(word).discard(word)

    def _path(self) -> Path:
        assert self.directory is not None
        return self.directory / LEARNED_FILE

    def _save(self) -> None:
        if self.directory is None:
            return
        payload = {"format": FORMAT, "version": VERSION, "clock": self._clock,
                   "words": {word: list(uses) for word, uses in self._uses.items()}}
        try:
            write_atomic(self._path(), json.dumps(payload, ensure_ascii=False).encode("utf-8"))
        except OSError as err:  # a full disk: the file keeps what it had, memory the pick
            raise OutputError(f"cannot save what was learned in {self._path()} ({err}): it "
                              "counts until the server stops, and is saved with the next "
                              "pick once there is room") from err

    def _read(self) -> None:
        path = self._path()
        if not path.exists():
            return
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            if not (isinstance(payload, dict) and payload.get("format") == FORMAT
                    and payload.get("version") == VERSION):
                raise ValueError(f"not a {FORMAT} file of version {VERSION}")
            clock, words = payload["clock"], payload["words"]
            entries = [(word, int(picks), int(last)) for word, (picks, last) in words.items()
                       if isinstance(word, str) and word and picks >= 1]
            if not isinstance(clock, int) or len(entries) != len(words):
                raise ValueError("a malformed entry")
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError,
                AttributeError) as err:
            raise DataError(f"{path} is damaged ({err}): move it away to start learning "
                            "afresh, or restore it from a backup") from err
        self._clock = clock
        for word, picks, last in entries:
            self._set(word, picks, last)
        if len(self._uses) > self.capacity:
            self._drop_least_used()
