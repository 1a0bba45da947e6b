"""Progress of a long audit: the batch phase (rate, ETA), then one line per aggregation check.

Three displays, chosen by :func:`make_progress`:

``"bar"``
    tqdm bars (``tqdm.auto``: widgets in a notebook, text in a terminal) on stderr: a bar of
    images for the batch phase with rate and ETA, then one bar per check that shows its
    elapsed time while it runs.
``"log"``
    Plain lines on stderr for logs and CI, where a redrawn bar is unreadable: a line about
    every ``interval`` seconds in the batch phase (done/total, rate, ETA), a line when a
    check starts and one when it ends (and a "still running" line every ``interval``
    seconds of a long check).
``"off"``
    Nothing.

``progress=None`` (automatic) gives bars in a terminal or a notebook and nothing otherwise;
the command line asks for ``"log"`` when its stderr is not a terminal, so that redirected
output still shows that the run is alive. tqdm formats both the bars and the plain lines
(:meth:`tqdm.tqdm.format_meter`); only the choice of display and the ticking of long checks
are written here.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

#: Accepted values of the ``progress`` option (``Audit.run``, config key, ``run_config``).
PROGRESS_VALUES = (None, True, False, "auto", "bar", "log", "off")

_LINE_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%), {rate_fmt}, "
    "elapsed {elapsed}, ETA {remaining}"
)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws widget bars)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:  # noqa: BLE001 - any failure means "not a kernel"
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def resolve_mode(progress: Any, stream: IO[str] | None = None, cli: bool = False) -> str:
    """``"bar"``, ``"log"`` or ``"off"`` for a ``progress`` option value.

    Parameters
    ----------
    progress : None, bool or str
        ``None``/``"auto"``: bars in a terminal or a notebook; otherwise nothing (or plain
        lines when ``cli``). ``True``/``"bar"``: bars; ``"log"``: plain lines;
        ``False``/``"off"``: nothing.
    stream : file, optional
        Where progress goes (default ``sys.stderr``).
    cli : bool, default False
        The command line: automatic mode prints plain lines when ``stream`` is not a
        terminal instead of nothing.
    """
    if progress not in PROGRESS_VALUES:
        raise ValueError(
            f"progress must be one of {PROGRESS_VALUES} (None/'auto': bars in a terminal or "
            f"a notebook), got {progress!r}"
        )
    if progress is False or progress == "off":
        return "off"
    if progress is True or progress == "bar":
        return "bar"
    if progress == "log":
        return "log"
    stream = stream if stream is not None else sys.stderr
    if in_notebook() or _isatty(stream):
        return "bar"
    return "log" if cli else "off"


class _Ticker:
    """Calls ``fn`` every ``every`` seconds in a daemon thread until stopped."""

    def __init__(self, fn: Any, every: float) -> None:
        self._stop = threading.Event()
        self._fn, self._every = fn, every
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._fn()
            except Exception:  # noqa: BLE001 - a display hiccup must never stop the audit
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class BatchProgress:
    """Progress of the batch phase; :meth:`advance` after each finished batch."""

    def __init__(self, owner: Progress, total: int, done: int, desc: str, unit: str) -> None:
        self._owner, self.total, self.n, self.desc, self.unit = owner, total, done, desc, unit
        self._initial = done
        self._start = time.monotonic()
        self._last_line = -float("inf")
        self._bar: Any = None
        if owner.mode == "bar":
            self._bar = owner.tqdm(
                total=total,
                initial=done,
                desc=desc,
                unit=unit,
                file=owner.stream,
                dynamic_ncols=True,
                smoothing=0.1,
            )
        elif owner.mode == "log":
            self._line(force=True)

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_line < self._owner.interval:
            return
        self._last_line = now
        from tqdm import tqdm

        elapsed = now - self._start
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        text = tqdm.format_meter(
            self.n,
            self.total,
            elapsed,
            prefix=self.desc,
            unit=self.unit,
            rate=rate,
            initial=self._initial,
            bar_format=_LINE_FORMAT,
        )
        self._owner.write(text)

    def advance(self, n: int) -> None:
        """``n`` more items done."""
        self.n += int(n)
        if self._bar is not None:
            self._bar.update(int(n))
        elif self._owner.mode == "log":
            self._line(force=self.n >= self.total)

    def close(self) -> None:
        """Finish the display (a last line in log mode when it was not complete)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._owner.mode == "log" and self.n < self.total:
            self._line(force=True)


class Progress:
    """What an audit shows while it runs (see the module docstring).

    Parameters
    ----------
    mode : {"bar", "log", "off"}
    stream : file, optional
        Default ``sys.stderr``.
    interval : float, default 30
        Seconds between plain lines (``"log"``) of the batch phase and of a long check.
    prefix : str, default "xai-audit"
        Start of every plain line.
    """

    def __init__(
        self,
        mode: str = "off",
        stream: IO[str] | None = None,
        interval: float = 30.0,
        prefix: str = "xai-audit",
    ) -> None:
        if mode not in ("bar", "log", "off"):
            raise ValueError(f"mode must be 'bar', 'log' or 'off', got {mode!r}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.interval = float(interval)
        self.prefix = prefix
        self._step: tuple[str, float, Any, Any] | None = None
        self.steps: list[tuple[str, float]] = []  # (name, seconds) of every finished step

    @property
    def enabled(self) -> bool:
        """Whether anything is shown."""
        return self.mode != "off"

    @property
    def tqdm(self) -> Any:
        """tqdm.auto's bar class (a notebook widget in Jupyter, text elsewhere)."""
        from tqdm.auto import tqdm

        return tqdm

    def write(self, text: str) -> None:
        """One plain line (through tqdm, so that it does not break a bar being drawn)."""
        if self.mode == "off":
            return
        from tqdm import tqdm

        line = f"{self.prefix}: {text}" if self.prefix else text
        tqdm.write(line, file=self.stream)
        try:
            self.stream.flush()
        except (AttributeError, ValueError):
            pass

    # ------------------------------------------------------------------ batches
    def batches(
        self, total: int, done: int = 0, desc: str = "predict + explain", unit: str = "img"
    ) -> BatchProgress:
        """Start the batch phase: ``total`` items, ``done`` of them already finished."""
        return BatchProgress(self, int(total), int(done), desc, unit)

    # ------------------------------------------------------------------ checks
    def step(self, name: str) -> None:
        """Start the check ``name`` (ending the previous one)."""
        self.end()
        start = time.monotonic()
        bar = ticker = None
        if self.mode == "bar":
            bar = self.tqdm(
                total=1,
                desc=name,
                file=self.stream,
                bar_format="{desc}: {elapsed}{postfix}",
                postfix="running",
                leave=True,
            )
            if not in_notebook():  # widget updates stay on the kernel's own thread
                ticker = _Ticker(bar.refresh, 1.0)
        elif self.mode == "log":
            self.write(f"{name} ...")

            def still() -> None:
                self.write(f"{name}: still running ({_fmt_s(time.monotonic() - start)})")

            ticker = _Ticker(still, max(self.interval, 1.0))
        self._step = (name, start, bar, ticker)

    def end(self) -> None:
        """End the current check, if any."""
        if self._step is None:
            return
        name, start, bar, ticker = self._step
        self._step = None
        if ticker is not None:
            ticker.stop()
        seconds = time.monotonic() - start
        self.steps.append((name, seconds))
        if bar is not None:
            bar.set_postfix_str("done", refresh=False)
            bar.update(1)
            bar.close()
        elif self.mode == "log":
            self.write(f"{name} done in {_fmt_s(seconds)}")

    def close(self) -> None:
        """End whatever is still open (called when the run finishes or fails)."""
        self.end()


def _fmt_s(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


def make_progress(
    progress: Any = None,
    stream: IO[str] | None = None,
    cli: bool = False,
    interval: float = 30.0,
) -> Progress:
    """A :class:`Progress` for a ``progress`` option value (see :func:`resolve_mode`).

    An existing :class:`Progress` is returned as it is (so that a caller, e.g. the command
    line, can share one display between the audit and the report).
    """
    if isinstance(progress, Progress):
        return progress
    return Progress(resolve_mode(progress, stream, cli=cli), stream=stream, interval=interval)


def step(progress: Progress | None, name: str | None) -> None:
    """Hook for the audit: start check ``name`` (``None``: end the current one).

    A no-op when ``progress`` is ``None`` (an audit driven without :meth:`Audit.run`).
    """
    if progress is None:
        return
    if name is None:
        progress.end()
    else:
        progress.step(name)


class BatchPhase:
    """The batch phase's display, driven by the audit's ``on_batch`` callback.

    Both batch engines (the local loop and Ray) report each finished batch through
    ``on_batch(k, n_batches, status)``; :attr:`callback` advances the display by the batch's
    number of images and then calls the user's own callback, if any.
    """

    def __init__(
        self,
        progress: Progress | None,
        n_rows: int,
        batch_size: int,
        todo: list[int],
        user_callback: Any = None,
    ) -> None:
        self.n_rows, self.batch_size, self.user_callback = n_rows, batch_size, user_callback
        remaining = sum(self._rows(k) for k in todo)
        self._bar = (
            progress.batches(n_rows, n_rows - remaining)
            if progress is not None and progress.enabled and todo
            else None
        )

    def _rows(self, k: int) -> int:
        return max(0, min((k + 1) * self.batch_size, self.n_rows) - k * self.batch_size)

    def callback(self, k: int, n_batches: int, status: str) -> None:
        """``on_batch`` for the engines."""
        if self._bar is not None and status == "computed":
            self._bar.advance(self._rows(k))
        if self.user_callback is not None:
            self.user_callback(k, n_batches, status)

    def close(self) -> None:
        """End the display."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
