"""progress.py: the exact lines on a fake clock (rate, ETA, percent, pauses left out, short work
silent), and the line in real phases run at a tiny size on a slow clock (MNIST-M synthesis,
translating a folder)."""

import logging

import numpy as np
import pytest
from PIL import Image

from cyclegan_jax import progress, translate
from cyclegan_jax.data import digits_data


class Clock:
  """A monotonic clock that moves only when told."""

  def __init__(self):
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


@pytest.fixture
def lines(caplog):
  """The progress lines logged so far (absl logs through the 'absl' logger)."""
  caplog.set_level(logging.INFO, logger='absl')
  return lambda: [r.getMessage() for r in caplog.records if r.name == 'absl']


def test_durations_and_rates_read_as_people_write_them():
  assert [progress.format_duration(s) for s in (0, 51.4, 59.6, 190, 3725, 90000)] == [
      '0s', '51s', '1m00s', '3m10s', '1h02m', '25h00m']
  assert [progress.format_rate(r) for r in (15000, 312.4, 45.23, 2.5, 0.0123)] == [
      '15,000', '312', '45.2', '2.5', '0.0123']


def test_rate_eta_and_percent_leave_out_the_time_before_the_first_update(lines):
  clock = Clock()
  p = progress.Progress('Inception features', 20000, 'images', every_s=10, clock=clock)
  clock.now = 2.0  # Compiling: the first update starts the rate's clock.
  p.update(100)
  assert p.rate is None and lines() == []  # Not due yet (2 s < 10 s), and nothing measured.
  clock.now = 14.5
  p.update(4000)  # 3,900 images in 12.5 s.
  assert p.rate == pytest.approx(312)
  assert lines() == ['Inception features: 4,000/20,000 images (20%), 312 images/s, ETA 51s']
  clock.now = 20.0
  p.update(5716)
  assert len(lines()) == 1  # 5.5 s since the last line: not due.


def test_time_paused_is_left_out_of_rate_and_eta(lines):
  clock = Clock()
  p = progress.Progress('Training', 1200, 'steps', every_s=30, done=400, clock=clock)
  clock.now = 5.0
  p.update(401)  # A resumed run: the count starts at 400, the rate at the first update.
  clock.now = 25.0
  p.update(601)  # 200 steps in 20 s.
  with p.paused():  # An evaluation, a sample grid and a checkpoint: 600 s.
    clock.now = 625.0
  clock.now = 645.0
  p.update(801)  # 400 steps in 40 s of training.
  assert p.rate == pytest.approx(10)
  assert lines() == ['Training: 801/1,200 steps (66%), 10 steps/s, ETA 40s']


def test_short_work_says_nothing(lines):
  clock = Clock()
  p = progress.Progress('Digit classifier', 10000, 'images', every_s=10, clock=clock)
  for done in range(2500, 10001, 2500):
    clock.now += 2
    p.update(done)
  assert lines() == []


def test_first_line_has_no_rate_and_last_line_the_time_taken(lines):
  clock = Clock()
  p = progress.Progress('Translating', 3, every_s=10, clock=clock)
  clock.now = 12.0
  p.update(1)
  clock.now = 13.0
  p.update(2)
  clock.now = 14.0
  p.update(3)  # The end is always logged.
  assert lines() == ['Translating: 1/3 items (33%)',
                     'Translating: 3/3 items (100%), 1 items/s, took 14s']


@pytest.fixture
def slow_clock(monkeypatch):
  """Every reading of progress.py's clock is 20 s after the one before: every line is due."""
  clock = Clock()

  def tick():
    clock.now += 20
    return clock.now

  monkeypatch.setattr(progress, 'monotonic', tick)


def test_mnistm_synthesis_shows_progress(lines, slow_clock):
  digits = digits_data.Digits(np.zeros((5, 28, 28, 1), np.uint8), np.arange(5))
  digits_data.build_mnistm(digits, [np.zeros((40, 40, 3), np.uint8)], seed=0)
  assert lines()[-1].startswith('MNIST-M synthesis: 5/5 images (100%), ')


def test_translating_a_folder_shows_progress(lines, slow_clock, tmp_path):
  for i in range(3):
    Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f'{i}.png')
  identity = translate.Translator(lambda x: x, multiple=4, step=0)
  translate.translate_path(identity, str(tmp_path), tmp_path / 'out')
  assert lines()[-1].startswith('Translating: 3/3 images (100%), ')
