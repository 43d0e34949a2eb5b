"""SIGTERM/SIGINT as a stop between train steps, at the same step on every process.

TPU VMs are preempted with SIGTERM; a user stops a run with Ctrl-C. Either way the loop saves
the step it is at and leaves, and the same command resumes it.
"""

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils


class StopRequest:
  """Turns SIGTERM/SIGINT into a stop the loop takes between steps, after saving that step (TPU
  VMs are preempted with SIGTERM). A second signal falls through to the previous handler.

  With several processes, all must stop and save at the same step, wherever the signal lands.
  JAX's preemption service (started by jax.distributed) catches SIGTERM on any process and
  agrees on a step with the others; SIGINT is handed to it as a SIGTERM.
  """

  def __init__(self):
    self.received: str | None = None
    self.stopping = False
    self._multiprocess = jax.process_count() > 1
    self._previous = {}

  def _handle(self, signum, frame):
    if self.received is not None:
      signal.signal(signum, self._previous[signum])
      signal.raise_signal(signum)
    self.received = signal.Signals(signum).name
    if self._multiprocess:
      os.kill(os.getpid(), signal.SIGTERM)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      signals = (signal.SIGINT,) if self._multiprocess else (signal.SIGTERM, signal.SIGINT)
      self._previous = {s: signal.signal(s, self._handle) for s in signals}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)

  def check(self, step: int) -> bool:
    """Called once per step (by every process, with the same steps): whether to stop now."""
    if self._multiprocess:
      self.stopping = multihost_utils.reached_preemption_sync_point(step)
      if self.stopping and self.received is None:
        self.received = 'SIGTERM (a preemption notice)'
    else:
      self.stopping = self.received is not None
    return self.stopping
