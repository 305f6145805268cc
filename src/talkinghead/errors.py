"""Errors that the CLI prints as one line (``error: ...``) instead of a traceback."""
from __future__ import annotations


class TalkingHeadError(Exception):
    """Base of the errors a user can fix: the message says what to fix, in the Python API's words.  ``option``:
    the API parameter it is about (``backend``, ``overwrite``, ...), so that a surface can add its own name for
    it (the CLI: its flag, :func:`talkinghead.cli.main`)."""

    def __init__(self, *args: object, option: str | None = None) -> None:
        super().__init__(*args)
        self.option = option


class ConfigError(TalkingHeadError, ValueError):
    """A config key, value or experiment name is wrong."""


class NonFiniteError(TalkingHeadError):
    """Training met a non-finite loss term, gradient or parameter (``talkinghead.callbacks.health``)."""


class EvaluationError(TalkingHeadError, ValueError):
    """An evaluation protocol cannot run on this data (no held-out video, too few frames, ...)."""
