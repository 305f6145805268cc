"""Honest stops: SIGTERM (what ``kill``, service managers and schedulers send) ends a command as Ctrl-C does.

:func:`sigterm_raises` turns SIGTERM into :class:`Interrupted`, raised where the program is, so that ``finally``
blocks and the writers' cleanup run (a partial output removed).  The CLI prints one line saying what was kept and
exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).  :class:`Interrupted` is a ``BaseException``: no
``except Exception`` swallows it, and Lightning re-raises it from ``trainer.fit`` (Lightning turns a
``KeyboardInterrupt`` into ``sys.exit(1)`` instead; ``talkinghead.inference.fewshot`` turns that back).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(BaseException):
    """The command was stopped by ``signum`` (SIGINT or SIGTERM); ``kept``: what it left behind, in words."""

    def __init__(self, signum: int, kept: str = "") -> None:
        super().__init__(signum, kept)
        self.signum, self.kept = int(signum), kept

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def as_interrupted(exc: BaseException) -> Interrupted | None:
    """``exc`` as an :class:`Interrupted` (a ``KeyboardInterrupt`` is SIGINT's), or None for any other error."""
    if isinstance(exc, Interrupted):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(signal.SIGINT)
    return None


@contextmanager
def sigterm_raises(*signals: int) -> Iterator[None]:
    """Within the block SIGTERM (or each of ``signals``) raises :class:`Interrupted`; the handlers before it come back
    after.  With SIGINT among them, Ctrl-C takes the same path as SIGTERM: Lightning re-raises :class:`Interrupted`
    from ``trainer.fit`` rather than running its own Ctrl-C shutdown, which ends in ``sys.exit(1)``."""

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in signals or (signal.SIGTERM,):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


__all__ = ["Interrupted", "as_interrupted", "sigterm_raises"]
