"""One progress line per long step, on stderr: done/total, the rate and the time left.

    with Progress("ingest", total=n_prompts, unit="prompts", enabled=show) as bar:
        bar.advance(k, info="1,234 tok/s")

Lines nest: a `Progress` entered while another is shown joins its display as one more line
(the study's overall line above the stage's own), so a run never draws two displays at once.
Every line shows its rate and an ETA from the work done so far; a disabled one does nothing.
`note(text)` prints a line above the display. rich is imported only when a line is shown.
"""

from __future__ import annotations

import time
from typing import Any

_LIVE: list[Any] = []  # the shown rich Progress (at most one), shared by nested lines
_USERS: list[int] = [0]  # lines entered into it


class Progress:
    """One line: `label`, a bar, done/total `unit`, the rate, the time left, and `info`."""

    def __init__(
        self, label: str, total: int, *, unit: str = "", enabled: bool = True, done: int = 0
    ) -> None:
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.enabled = enabled
        self.done = done
        self._task: Any = None
        self._t0 = time.perf_counter()
        self._start = done  # the rate counts the work done since this line appeared

    def __enter__(self) -> Progress:
        if self.enabled:
            if not _LIVE:
                _LIVE.append(_display())
                _LIVE[0].__enter__()
            _USERS[0] += 1
            self._t0, self._start = time.perf_counter(), self.done
            self._task = _LIVE[0].add_task(
                self.label,
                total=self.total or None,
                completed=self.done,
                unit=self.unit,
                rate=self._rate(),
                info="",
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is None:
            return
        if _USERS[0] > 1:  # a nested line goes; the outer lines stay
            _LIVE[0].remove_task(self._task)
        self._task = None
        _USERS[0] -= 1
        if _USERS[0] == 0:
            _LIVE.pop().__exit__(*exc)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        self._update(info)

    def set(self, done: int, info: str | None = None) -> None:
        """Show `done` (never past the total: a retried shard counts its work again)."""
        self.done = min(done, self.total) if self.total else done
        self._update(info)

    def add_total(self, n: int) -> None:
        """More work became known (the study learns its eval requests after its stats)."""
        self.total += n
        if self._task is not None:
            _LIVE[0].update(self._task, total=self.total)

    def relabel(self, label: str, total: int) -> None:
        """The same line for the next piece of work (the evaluator's next condition)."""
        self.label, self.total, self.done = label, total, 0
        self._t0, self._start = time.perf_counter(), 0
        if self._task is not None:
            _LIVE[0].reset(
                self._task, total=total, description=label, unit=self.unit, rate="", info=""
            )

    def note(self, text: str) -> None:
        """`note(text)` when this line is enabled."""
        if self.enabled:
            note(text)

    def _rate(self) -> str:
        """Work per second since the line appeared (seconds per item when slower than 1/s)."""
        seconds, n = time.perf_counter() - self._t0, self.done - self._start
        if seconds <= 0 or n <= 0:
            return ""
        return f"{n / seconds:,.1f}/s" if n >= seconds else f"{seconds / n:,.1f} s each"

    def _update(self, info: str | None) -> None:
        if self._task is not None:
            fields = {"rate": self._rate()} | ({} if info is None else {"info": info})
            _LIVE[0].update(self._task, completed=self.done, **fields)


def note(text: str) -> None:
    """A line (rich markup) printed above the display, or alone when nothing is shown."""
    console = _LIVE[0].console if _LIVE else _console()
    console.print(text, highlight=False)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _display() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=12),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=_console(),
    )
