"""Failures that are not bugs of the run, each ended with one line that says what to do.

A write that fails (a full disk, a lost mount) becomes a `WriteError` naming what could not be
written, why, and the last complete checkpoint. A peer process that dies (kill -9, out of
memory, a lost VM) is noticed by `PeerWatch` and ends every survivor in bounded time, instead
of leaving them waiting in a collective. The teardown noise of the libraries is kept off the
terminal.
"""

import errno
import os
import re
import shutil
import sys
import threading
import time

from absl import logging
from etils import epath


class WriteError(RuntimeError):
  """Something the run must keep could not be written; the message says what to do next."""


COMMIT_MARKER = 'commit_success.txt'  # orbax's last write of a step where it cannot rename.


def renames_atomically(path: epath.Path) -> bool:
  """Whether orbax finishes a checkpoint here by renaming its temporary folder (local disks)
  rather than by writing COMMIT_MARKER into the step folder (gs://, which cannot rename)."""
  return not str(path).startswith('gs://')


def complete_checkpoints(workdir: epath.PathLike) -> list[int]:
  """Steps whose checkpoint finished: orbax renames `N.orbax-checkpoint-tmp-*` to `N` last, or,
  on gs://, writes `N/commit_success.txt` last."""
  path = epath.Path(workdir) / 'checkpoints'
  if not path.exists():
    return []
  renamed = renames_atomically(path)
  return sorted(int(p.name) for p in path.iterdir()
                if p.name.isdigit() and (renamed or (p / COMMIT_MARKER).exists()))


def reason(error: BaseException) -> str:
  """The cause in a few words: the OS error of the first OSError in the chain, or a full disk
  that a library reports in its own words (tensorstore's RESOURCE_EXHAUSTED), or the message's
  first line."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno:
      return os.strerror(seen.errno)
    seen = seen.__cause__ or seen.__context__
  text = str(error) or type(error).__name__
  if os.strerror(errno.ENOSPC) in text:
    return os.strerror(errno.ENOSPC)
  first = text.strip().splitlines()[0]
  return first if len(first) <= 300 else first[:297] + '...'


def _megabytes(n: int) -> str:
  return f'{n / 2**20:.1f} MB'


def _free_bytes(path: epath.Path) -> int | None:
  """Free space of the filesystem holding `path` (None for object stores such as gs://)."""
  path = epath.Path(path)
  while not path.exists() and path != path.parent:
    path = path.parent
  try:
    return shutil.disk_usage(os.fspath(path)).free
  except (OSError, TypeError):
    return None


def write_error(what: str, error: BaseException, workdir: epath.PathLike,
                needed_bytes: int | None = None) -> WriteError:
  """The one-line error for a failed write of `what` into `workdir`."""
  workdir = epath.Path(workdir)
  why = reason(error)
  details = []
  free = _free_bytes(workdir)
  if free is not None:
    details.append(f'{_megabytes(free)} free')
  if needed_bytes:
    details.append(f'it needs about {_megabytes(needed_bytes)}')
  if details:
    why += f' ({"; ".join(details)})'
  steps = complete_checkpoints(workdir)
  last = (f'the last complete checkpoint is step {steps[-1]}' if steps
          else 'no checkpoint has been completed yet')
  action = ('Free some space or move the workdir' if why.startswith(os.strerror(errno.ENOSPC))
            else 'Fix the cause')
  return WriteError(f'could not write {what} in {workdir}: {why}. Training stopped; {last}. '
                    f'{action}, then run the same command to resume.')


def silence_teardown_noise() -> None:
  """Drops the `RuntimeError: Event loop is closed` tracebacks that orbax's background writes
  print when they finish after their event loop (after a failed save), and asyncio's "Task (or
  Future) exception was never retrieved" for the reads of a checkpoint that failed and for the
  writes of a failed save, collected at exit (the run reports both itself). Everything else
  still reaches the original hooks."""
  import logging as std_logging
  unretrieved = re.compile(r'(Task|Future) exception was never retrieved')
  std_logging.getLogger('asyncio').addFilter(lambda r: not unretrieved.match(r.getMessage()))
  def noise(exc_type, exc) -> bool:
    return exc_type is RuntimeError and str(exc) == 'Event loop is closed'

  previous_unraisable, previous_threading = sys.unraisablehook, threading.excepthook

  def unraisable(args):  # tensorstore's callbacks report through this hook.
    if not noise(args.exc_type, args.exc_value):
      previous_unraisable(args)

  def threading_hook(args):
    if not noise(args.exc_type, args.exc_value):
      previous_threading(args)

  sys.unraisablehook, threading.excepthook = unraisable, threading_hook


def quiet_library_logs(verbose: bool = False) -> None:
  """For a command line: orbax logs every step of every save and restore at INFO, and
  TensorFlow every step of an export; keep their warnings, drop their chatter. orbax's errors
  come with tracebacks from its background threads; the command reports the failure itself in
  one line, so they show only when `verbose`. jax's backend search says at INFO that every
  platform it did not find (a TPU on a laptop) failed to start: only when `verbose`. And
  silence_teardown_noise."""
  import logging as std_logging
  silence_teardown_noise()
  noisy = ('/orbax/', '/tensorflow/', '/absl/testing/')
  shown = std_logging.CRITICAL if not verbose else std_logging.WARNING
  keep = lambda r: (not any(n in r.pathname for n in noisy) or
                    std_logging.WARNING <= r.levelno < std_logging.ERROR or r.levelno >= shown)
  std_logging.getLogger('absl').addFilter(keep)
  if not verbose:
    for logger in ('jax._src.xla_bridge', 'tensorflow'):
      std_logging.getLogger(logger).setLevel(std_logging.WARNING)


class PeerWatch:
  """Ends this process when another process of the run stops beating for `timeout_s`.

  Every process writes a counter into the JAX coordination service's key-value store a few
  times per timeout and reads everyone's. A peer whose counter stops moving died (kill -9,
  out of memory, a lost VM); if the store itself is gone, process 0 (which hosts it) died. This
  process then logs who was lost and exits at once: its main thread may be blocked in a
  collective that never returns. It runs in a daemon thread and never touches the devices.
  """

  PREFIX = 'cyclegan_jax/heartbeat/'
  DONE = 'done'

  def __init__(self, client, process_index: int, process_count: int, timeout_s: float,
               workdir: str):
    self._client, self._index, self._count = client, process_index, process_count
    self._timeout_s, self._workdir = timeout_s, workdir
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name='peer_watch', daemon=True)

  def start(self) -> 'PeerWatch':
    self._thread.start()
    return self

  def stop(self) -> None:
    """This process's run ended normally: peers stop watching it (it may exit before them)."""
    self._stop.set()
    self._thread.join()
    self._client.key_value_set(f'{self.PREFIX}{self._index}', self.DONE, allow_overwrite=True)

  def _read(self, beat: int) -> dict[int, str]:
    self._client.key_value_set(f'{self.PREFIX}{self._index}', str(beat), allow_overwrite=True)
    return {int(k.rsplit('/', 1)[-1]): v
            for k, v in self._client.key_value_dir_get(self.PREFIX)}

  def _run(self) -> None:
    interval = max(self._timeout_s / 5, 0.5)
    now = time.monotonic()
    last_seen = {p: (None, now) for p in range(self._count) if p != self._index}
    store_ok = now
    beat = 0
    while not self._stop.wait(interval):
      beat += 1
      now = time.monotonic()
      try:
        beats = self._read(beat)
        store_ok = now
      except Exception:  # The store is unreachable: the coordinator (process 0) is gone.
        if now - store_ok > self._timeout_s:
          self._lost(0, now - store_ok)
        continue
      for peer, (value, since) in last_seen.items():
        if beats.get(peer) != value:
          last_seen[peer] = (beats.get(peer), now)
        elif value != self.DONE and now - since > self._timeout_s:
          self._lost(peer, now - since)

  def _lost(self, peer: int, silent_s: float) -> None:
    if self._stop.is_set():
      return
    steps = complete_checkpoints(self._workdir)
    last = f'step {steps[-1]}' if steps else 'none yet'
    logging.error('process %d of %d has been silent for %.0f s (killed, out of memory, or its '
                  'machine is gone); process %d stops too, instead of waiting on it forever. '
                  'The last complete checkpoint is %s: restart all processes with the same '
                  'command to resume.', peer, self._count, silent_s, self._index, last)
    logging.flush()
    sys.stderr.flush()
    os._exit(1)  # The main thread may be stuck inside a collective; nothing else can end it.
