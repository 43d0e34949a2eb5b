"""Keeps the persistent compilation cache under a size: it is on by default in the user's cache
directory, and each new config or code version adds its programs (a train step twice: among
JAX's entries and in `train_steps/`), so a sweep would otherwise fill the disk.

JAX's own limit (`jax_compilation_cache_max_size`) is not used: it evicts on every write, under
a file lock, and fails on entries written while it was off (they have no access-time file),
which every existing cache holds. Pruning once when a process starts needs neither.
"""

import dataclasses
import os
import pathlib
import time

from absl import logging

from cyclegan_jax import step_cache

# JAX's files: <key>-cache, and with its own limit on, <key>-atime beside it.
JAX_ENTRY, JAX_ACCESS = '-cache', '-atime'
# A train step's partial file (visualize.write_atomically) untouched this long belongs to a
# writer that was killed: a live one renames it within seconds.
ABANDONED_AFTER_S = 3600.0


@dataclasses.dataclass(frozen=True)
class _Entry:
  files: tuple[pathlib.Path, ...]  # Removed together; the first is the entry itself.
  size: int
  last_used: float  # Seconds since the epoch: the later of the entry's access and write times.


def _entry(*files: pathlib.Path) -> _Entry | None:
  try:
    stat = files[0].stat()
  except FileNotFoundError:  # Pruned meanwhile by another process.
    return None
  return _Entry(files, stat.st_size, max(stat.st_atime, stat.st_mtime))


def entries(directory: pathlib.Path) -> list[_Entry]:
  """Every entry of the cache at `directory`: JAX's compiled programs and the train steps."""
  found = [_entry(path, path.with_name(path.name[:-len(JAX_ENTRY)] + JAX_ACCESS))
           for path in directory.glob(f'*{JAX_ENTRY}')]
  found += [_entry(path) for path in (directory / step_cache.FOLDER).glob('*.step')]
  return [e for e in found if e is not None]


def remove_abandoned(directory: pathlib.Path, now: float) -> int:
  """Deletes the partial train-step files that killed writers left; returns the bytes freed."""
  freed = 0
  for path in (directory / step_cache.FOLDER).glob('*.partial'):
    entry = _entry(path)
    if entry is not None and entry.last_used < now - ABANDONED_AFTER_S:
      path.unlink(missing_ok=True)
      freed += entry.size
  return freed


def prune(directory: str | os.PathLike[str], max_bytes: int | None) -> int:
  """Deletes the least recently used entries of the local cache at `directory` until the rest
  hold at most `max_bytes` (None: no limit), and any abandoned partial file; returns the bytes
  freed. Files of other kinds are left alone."""
  directory = pathlib.Path(directory)
  abandoned = remove_abandoned(directory, time.time())
  found = [] if max_bytes is None else sorted(entries(directory), key=lambda e: e.last_used)
  total = sum(e.size for e in found)
  freed = removed = 0
  for entry in found:
    if total - freed <= max_bytes:
      break
    for path in entry.files:
      path.unlink(missing_ok=True)
    freed += entry.size
    removed += 1
  if removed:
    logging.info('compilation cache %s: removed the %d least recently used entries (%.0f MB) '
                 'to keep it under %g GB (--compilation_cache_max_gb)', directory, removed,
                 freed / 1e6, max_bytes / 1e9)
  if abandoned:
    logging.info('compilation cache %s: removed %.0f MB of partial files that killed writers '
                 'left', directory, abandoned / 1e6)
  return freed + abandoned
