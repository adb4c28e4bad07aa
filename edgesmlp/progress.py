"""One progress style for long work, on stderr: a rich bar with ETA on a terminal; elsewhere (CI logs, pipes) a
line with done/total and ETA at least every ``LOG_EVERY`` seconds of a step that takes longer than that."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOG_EVERY = 30.0  # seconds between progress lines outside a terminal
_QUIET = [False]  # set by quiet(): the Python API and --quiet show no progress


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No progress bars or progress lines inside this block (``on``), as the Python API runs by default."""
    before, _QUIET[0] = _QUIET[0], on or _QUIET[0]
    try:
        yield
    finally:
        _QUIET[0] = before


@contextmanager
def foreign_output() -> Iterator[None]:
    """Where a library's own progress bars go (NNCF draws rich bars on stdout): stderr, so stdout keeps only
    results (tables, JSON); nowhere under ``quiet()``."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO() if _QUIET[0] else sys.stderr):
        yield


def eta(done: int, total: int, elapsed: float) -> str:
    """``1:05 left`` from the mean time per step so far ('' before the first step)."""
    if done <= 0 or done >= total:
        return ""
    left = int(round(elapsed / done * (total - done)))
    return f"{left // 60}:{left % 60:02d} left"


@contextmanager
def progress_bar(description: str, total: int, log_every: float = LOG_EVERY,
                 stream=None) -> Iterator[Callable[..., None]]:
    """Yield ``advance(status="")``, called once per step of ``total``."""
    if _QUIET[0]:
        yield lambda status="": None
        return
    stream = stream or sys.stderr
    if not stream.isatty():
        start = last = time.monotonic()
        done = 0

        def advance(status: str = "") -> None:
            nonlocal done, last
            done += 1
            now = time.monotonic()
            if now - last >= log_every and done < total:
                last = now
                left = eta(done, total, now - start)
                print(f"{description}: {done}/{total}, {left}" + (f" ({status})" if status else ""), file=stream,
                      flush=True)

        yield advance
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=Console(file=stream), transient=True) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(status: str = "") -> None:
            progress.update(task, advance=1, **({"status": status} if status else {}))

        yield advance
