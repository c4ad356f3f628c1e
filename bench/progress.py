"""Progress of a grid of cells and of the training inside a cell, for people watching a terminal or reading a log.

- Over cells: on a terminal a tqdm bar (cells done / to run, elapsed, ETA); elsewhere (CI, cluster logs) one plain
  line per finished cell with the same elapsed time and ETA.
- Inside a cell: a deep method's training loop logs its loss terms through ``bench.deep.LossLog``, whose entries
  (one per epoch, or every few hundred iterations) are reported here: a live line on a terminal, one plain line
  per entry otherwise. At most ``MAX_LINES_PER_CELL`` plain lines per cell, so no schedule floods a log.

Reporting is off unless a command turns it on (``reporting``): library calls and tests stay quiet.
"""

from __future__ import annotations

import contextlib
import sys
import time

MAX_LINES_PER_CELL = 25
_sink = None  # the active cell's reporter, or None


def training_step(method: str, step: int, total: int | None, entry: dict, losses: list[str]) -> None:
    """Called by ``LossLog.close`` for every log entry (``losses``: its loss terms' keys): passed on to the
    active reporter, if any."""
    if _sink is not None:
        _sink(method, step, total, entry, losses)


@contextlib.contextmanager
def reporting(stream=None):
    """Report training steps to ``stream`` (default stderr) within the block."""
    global _sink
    previous, _sink = _sink, TrainingLines(stream or sys.stderr)
    try:
        yield _sink
    finally:
        _sink = previous


def _terms(entry: dict, losses: list[str], limit: int = 4) -> str:
    """The entry's main numbers: validation scores, then the first ``limit`` loss terms, 4 significant digits."""
    scores = [k for k in entry if k.startswith(("val", "map")) and isinstance(entry[k], float)]
    return ", ".join(f"{k} {entry[k]:.4g}" for k in scores + losses[:limit])


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class TrainingLines:
    """Training progress as text: the line rewritten in place on a terminal, else thinned plain lines."""

    def __init__(self, stream):
        self.stream, self.live = stream, stream.isatty()
        self.start, self.lines = time.perf_counter(), 0

    def __call__(self, method: str, step: int, total: int | None, entry: dict, losses: list[str]) -> None:
        """``total`` counts the loop's unit: epochs when the entry names its epoch, else steps."""
        unit, step = ("epoch", entry["epoch"]) if "epoch" in entry else ("step", step)
        stage = f" (stage {entry['stage']})" if "stage" in entry else ""
        of = f"/{total}" if total else ""
        elapsed = duration(time.perf_counter() - self.start)
        text = f"  {method}{stage} {unit} {step}{of}: {_terms(entry, losses)} ({elapsed})"
        if self.live:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            return
        last = total is not None and step >= total
        # thinned to about MAX_LINES_PER_CELL lines over the schedule, the last entry always shown
        due = total is None or last or step * MAX_LINES_PER_CELL >= self.lines * total
        if due and (self.lines < MAX_LINES_PER_CELL or last):
            print(text, file=self.stream, flush=True)
            self.lines += 1

    def end(self) -> None:
        """Leave the terminal line before the cell's own line is printed."""
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()


class CellProgress:
    """The bar (terminal) or plain lines (elsewhere) over the cells a command runs."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.bar = None
        if self.stream.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="cell", file=self.stream, dynamic_ncols=True)

    def finished(self, line: str) -> None:
        """One cell done (or failed, or found stored): ``line`` says which and how."""
        self.done += 1
        elapsed = time.perf_counter() - self.start
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.bar.update(1)
            return
        eta = elapsed / self.done * (self.total - self.done)
        print(f"{line}  [elapsed {duration(elapsed)}, ETA {duration(eta)}]", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
