"""One progress line for every long phase: done/total, rate and ETA, logged through absl.

    Inception features: 4,000/20,000 images (20%), 312 images/s, ETA 51s

The rate counts work time only. It is measured from the first update, so whatever came before
it (typically the first call's compilation) is left out, and time spent inside `paused()` (the
train loop's evaluations, sample grids and checkpoints) is left out too. The ETA is the work
left at that rate: what the work itself will take, not the pauses. Before a second update there
is no rate yet, and the line says so by leaving rate and ETA out. The last line gives the
wall time since the start instead of an ETA.

Only long work speaks: the first line comes `every_s` after the start, and the last one only if
an earlier one did. So the helper can sit in every pass (the generator over a test split, the
classifier on 10,000 digits) without a line for each short call of the same code in training.
"""

from collections.abc import Callable, Iterator
import contextlib
from time import monotonic

from absl import logging


def format_duration(seconds: float) -> str:
  """1h02m, 3m10s or 51s."""
  s = max(0, round(seconds))
  if s >= 3600:
    return f'{s // 3600}h{s % 3600 // 60:02d}m'
  if s >= 60:
    return f'{s // 60}m{s % 60:02d}s'
  return f'{s}s'


def format_rate(rate: float) -> str:
  """Whole units from 100 (312, 1,250), else three significant digits (45.2, 2.5, 0.0123)."""
  return f'{rate:,.0f}' if rate >= 100 else f'{rate:.3g}'


class Progress:
  """A progress line (done/total, rate, ETA) for long work, logged through absl at most every
  `every_s` seconds, and at the end if it showed one before. `done` is where the work starts (a
  resumed run's step); `clock` (default: this module's `monotonic`) is injectable for tests."""

  def __init__(self, what: str, total: int, unit: str = 'items', every_s: float = 10.0,
               done: int = 0, clock: Callable[[], float] | None = None):
    self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
    self.done = done
    self._clock = clock or monotonic
    self._start = self._last_line = self._clock()
    self._spoken = False  # Whether a line was logged: the last line follows only if one was.
    self._origin: tuple[float, int] | None = None  # (time, done) at the first update.
    self._paused_s = 0.0  # Time inside paused() since the origin.

  @property
  def rate(self) -> float | None:
    """Units per second of work time since the first update; None before any is measured."""
    return self._rate(self._clock())

  def _rate(self, now: float) -> float | None:
    if self._origin is None:
      return None
    work_s = now - self._origin[0] - self._paused_s
    progress = self.done - self._origin[1]
    return progress / work_s if work_s > 0 and progress > 0 else None

  def update(self, done: int) -> None:
    """Records `done` (absolute) units; logs the line when it is due, or at the end of work
    that already showed one."""
    now = self._clock()
    self.done = done
    if self._origin is None:
      self._origin = (now, done)
    if now - self._last_line >= self.every_s or (done >= self.total and self._spoken):
      self._last_line, self._spoken = now, True
      logging.info('%s', self.line(now))

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Time inside is excluded from the rate (and so the ETA). Not nested."""
    start = self._clock()
    try:
      yield
    finally:
      if self._origin is not None:
        self._paused_s += self._clock() - start

  def line(self, now: float) -> str:
    """The progress line at time `now` (of the clock)."""
    percent = 100 * self.done // self.total if self.total > 0 else 100
    parts = [f'{self.what}: {self.done:,}/{self.total:,} {self.unit} ({percent}%)']
    rate = self._rate(now)
    if rate is not None:
      parts.append(f'{format_rate(rate)} {self.unit}/s')
    if self.done >= self.total:
      parts.append(f'took {format_duration(now - self._start)}')
    elif rate is not None:
      parts.append(f'ETA {format_duration((self.total - self.done) / rate)}')
    return ', '.join(parts)
