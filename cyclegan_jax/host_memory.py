"""How this process's C library hands out and takes back host memory.

glibc keeps freed heap pages for reuse. XLA's compiler frees hundreds of MB of them after
compiling the train step, and the step's own large buffers, which glibc maps separately, never
reuse them: without a trim they stay resident through training, under the step's peak.

Those separately mapped buffers are mapped afresh at every step and unmapped after it, so each
step faults its whole working set in again, in 4 KiB pages, and the small kernels of a 128²
step wait on them. Transparent huge pages (2 MiB) take a fraction of the faults. Where the
kernel gives them only to memory that asks (`madvise`, the usual default), glibc ≥ 2.35 asks
when the `glibc.malloc.hugetlb=1` tunable is set, which it reads only when a process starts: so
the commands start themselves again with it (`use_huge_pages`). The figures are in
docs/speed_experiments.md; `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` opts out.
"""

import ctypes
import ctypes.util
import functools
import os
import pathlib
import sys
from collections.abc import Mapping

HUGE_PAGES_TUNABLE = 'glibc.malloc.hugetlb'
_MIN_GLIBC = (2, 35)  # The first glibc with the tunable.
_THP_MODE = pathlib.Path('/sys/kernel/mm/transparent_hugepage/enabled')


@functools.cache
def _malloc_trim():
  """glibc's malloc_trim, or None (macOS, musl)."""
  try:
    return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').malloc_trim
  except (OSError, AttributeError):
    return None


def release_freed() -> bool:
  """Returns the freed heap pages to the OS where the C library can (glibc); says whether it
  could."""
  trim = _malloc_trim()
  if trim is None:
    return False
  trim(0)
  return True


def huge_pages_environment(environ: Mapping[str, str], glibc: str | None,
                           thp_mode: str | None) -> dict[str, str] | None:
  """`environ` with glibc's malloc asking for transparent huge pages, or None where that would
  change nothing or is already decided: a C library other than glibc ≥ 2.35 (`glibc`, as
  `os.confstr('CS_GNU_LIBC_VERSION')` names it: 'glibc 2.36'), a kernel mode (`thp_mode`) other
  than 'madvise' ('always' gives them anyway, 'never' never), or a GLIBC_TUNABLES that already
  sets the tunable, whatever its value (=0 is how a user opts out)."""
  name, _, version = (glibc or '').partition(' ')
  try:
    new_enough = name == 'glibc' and tuple(map(int, version.split('.')[:2])) >= _MIN_GLIBC
  except ValueError:
    return None
  if not new_enough or thp_mode != 'madvise' or HUGE_PAGES_TUNABLE in _tunables(environ):
    return None
  tunables, setting = environ.get('GLIBC_TUNABLES', ''), f'{HUGE_PAGES_TUNABLE}=1'
  return {**environ, 'GLIBC_TUNABLES': f'{tunables}:{setting}' if tunables else setting}


def _tunables(environ: Mapping[str, str]) -> dict[str, str]:
  """GLIBC_TUNABLES as {name: value}: 'a=1:b=2' names two."""
  return dict(entry.partition('=')[::2]
              for entry in environ.get('GLIBC_TUNABLES', '').split(':') if entry)


def _glibc() -> str | None:
  """'glibc 2.36' and the like; None for another C library (macOS has no such name)."""
  if 'CS_GNU_LIBC_VERSION' not in getattr(os, 'confstr_names', {}):
    return None
  return os.confstr('CS_GNU_LIBC_VERSION')


def _thp_mode() -> str | None:
  """The kernel's transparent huge page mode, the bracketed word of its setting."""
  try:
    text = _THP_MODE.read_text()
  except OSError:
    return None
  return text[text.index('[') + 1:text.index(']')] if '[' in text and ']' in text else None


def huge_pages_in_use() -> bool:
  """Whether this process's large buffers get transparent huge pages: the kernel gives them to
  all memory, or to what glibc asks them for, as it does with the tunable set (to 1 or 2)."""
  mode = _thp_mode()
  asked = _tunables(os.environ).get(HUGE_PAGES_TUNABLE, '0') != '0'
  return mode == 'always' or (mode == 'madvise' and asked)


def use_huge_pages() -> None:
  """Starts this command again, in this process (the same pid, arguments and open files), with
  glibc's malloc asking for huge pages, where `huge_pages_environment` says that changes
  something; else returns. Call it first in a command's `__main__` block, before any thread or
  output: nothing before it survives."""
  environ = huge_pages_environment(os.environ, _glibc(), _thp_mode())
  if environ is not None and sys.executable:  # An embedded interpreter has none to start.
    os.execve(sys.executable, sys.orig_argv, environ)
