"""Progress bars that behave on a terminal and in a log file.

Every long loop of the project (dataset generation, training, the cost-accuracy front)
takes its bar from :func:`progress_bar`:

- ``enabled=False`` gives a disabled bar: every call is a no-op and nothing is written;
- on a terminal it is an ordinary :mod:`tqdm` bar, redrawn in place;
- on anything else (a log file, a pipe, Hydra's captured stderr, an ``io.StringIO``) it
  writes one plain line per ``fraction_step`` of the total (every 10 % by default) or
  per ``interval_s`` seconds, whichever comes first, and a last line when closed,
  instead of tqdm's carriage-return frames, which flood a log with thousands of
  overwritten lines.

It lives in ``datasets/`` because that is the lowest layer with a bar: ``surrogate/``
already depends on ``datasets/``, never the reverse.
"""

from __future__ import annotations

import math
import sys
from typing import IO, Any

from tqdm.std import tqdm as _std_tqdm

LINE_FORMAT = (
    "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)
LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class LineProgress(_std_tqdm):
    """A tqdm bar for non-terminals: plain, newline-terminated lines at a bounded rate.

    A line is written at the start, whenever the count crosses the next multiple of
    ``fraction_step * total``, whenever ``interval_s`` seconds passed since the last line
    (and the count moved), and once at :meth:`close`. The number of lines is therefore at
    most ``2 + ceil(1 / fraction_step) + elapsed / interval_s``. tqdm's cursor movements
    and line clearing are switched off, so no ``\\r`` or escape sequence is written.
    """

    monitor_interval = 0  # no monitor thread: lines are only written from update/close

    def __init__(
        self, *args: Any, fraction_step: float = 0.1, interval_s: float = 60.0, **kwargs: Any
    ) -> None:
        # Set before tqdm's __init__, which already calls display() once.
        self._fraction_step = float(fraction_step)
        self._interval_s = float(interval_s)
        self._last_line_t: float | None = None
        self._last_line_n: float | None = None
        self._last_bucket = -1
        super().__init__(*args, **kwargs)

    def _line(self) -> str:
        fmt = LINE_FORMAT if self.total else LINE_FORMAT_NO_TOTAL
        d = {**self.format_dict, "bar_format": fmt, "ncols": None}
        return self.format_meter(**d).rstrip()

    def _write_line(self) -> None:
        self.fp.write(self._line() + "\n")
        self.fp.flush()
        self._last_line_t = self._time()
        self._last_line_n = self.n
        if self.total:
            self._last_bucket = self._bucket()

    def _bucket(self) -> int:
        return math.floor(self.n / self.total / self._fraction_step + 1e-9)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Write a line when one is due (called by tqdm on its refreshes)."""
        if msg is not None:  # a request to clear or overwrite the line: nothing to undo
            return True
        if self._last_line_t is None:
            self._write_line()
            return True
        moved = self.n != self._last_line_n
        late = self._time() - self._last_line_t >= self._interval_s
        crossed = bool(self.total) and self._bucket() > self._last_bucket
        if moved and (crossed or late):
            self._write_line()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: lines are never overwritten."""

    def moveto(self, n: int) -> None:
        """No cursor movement outside a terminal."""

    def close(self) -> None:
        """Write the last line (if the count moved since the previous one) and close."""
        if getattr(self, "disable", True):
            return
        if self._last_line_n != self.n:
            self._ema_dt = lambda: None  # the last line shows the overall rate, as tqdm does
            self._write_line()
        self.disable = True
        self._decr_instances(self)


def _is_terminal(file: IO[str]) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def progress_bar(
    *,
    total: int | None,
    desc: str,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    file: IO[str] | None = None,
    fraction_step: float = 0.1,
    interval_s: float = 60.0,
) -> _std_tqdm:
    """A tqdm bar: in place on a terminal, plain periodic lines elsewhere, or silent.

    Use it like a tqdm bar (``update``, ``set_postfix``, ``set_postfix_str``, ``close``,
    context manager); ``bar.n`` is the count.

    Args:
        total: expected count (``None``: unknown, lines then come every ``interval_s``).
        desc: label at the start of the bar or line, e.g. ``"train"``.
        unit: what is counted, e.g. ``"step"``, ``"traj"``.
        initial: count already done (a resumed job), shown from the start.
        enabled: ``False`` returns a disabled bar that writes nothing (``progress=false``).
        file: stream to write to (default ``sys.stderr``). A stream whose ``isatty()`` is
            true gets the redrawn terminal bar, any other the plain lines.
        fraction_step: outside a terminal, a line each time the count crosses another
            multiple of ``fraction_step * total``, in (0, 1].
        interval_s: outside a terminal, a line at least every ``interval_s`` seconds
            while the count moves (> 0).

    Returns:
        A :class:`tqdm.std.tqdm` (a :class:`LineProgress` outside a terminal).

    Raises:
        ValueError: ``fraction_step`` outside (0, 1] or ``interval_s`` <= 0.
    """
    if not 0.0 < fraction_step <= 1.0:
        raise ValueError(f"progress_bar: fraction_step must be in (0, 1], got {fraction_step}")
    if not interval_s > 0:
        raise ValueError(f"progress_bar: interval_s must be > 0, got {interval_s}")
    stream = sys.stderr if file is None else file
    if not enabled:
        return _std_tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=True)
    if _is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(
            total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True
        )
    return LineProgress(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=stream,
        fraction_step=fraction_step,
        interval_s=interval_s,
    )


__all__ = ["LineProgress", "progress_bar"]
