"""The one error base of pinzi: a problem the user can fix, shown as a message, never a traceback.

Every module raises a subclass of :class:`PinziError` for bad input, bad settings, missing or
damaged files; the command line turns any of them into ``error: <message>`` and exit status 2
in one place (:func:`pinzi.cli.main`). Anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations


class PinziError(Exception):
    """A problem the user can fix (a missing file, a bad setting, a damaged model)."""


class ModelLoadError(PinziError):
    """A model folder or hub id that cannot be loaded: missing, corrupt or mismatched."""


class DataError(PinziError):
    """Input data that cannot be used: an unreadable file, a missing column, an unknown label."""


class SettingsError(PinziError):
    """A setting that does not exist, has the wrong type, or is not one of its choices."""


class TrainingError(PinziError):
    """A training run that cannot start or go on (no checkpoint to resume, a full disk)."""


class InputTooLong(PinziError):
    """A line longer than the converter accepts."""


class OutputError(PinziError):
    """An output folder pinzi cannot write: a file in its place, another process writing it,
    or a finished run that would be lost."""
