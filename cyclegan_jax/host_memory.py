"""Hands the heap memory this process has freed back to the operating system.

glibc keeps freed heap pages for reuse. XLA's compiler frees hundreds of MB of them after
compiling the train step, and the step's own large buffers, which glibc maps separately, never
reuse them: without a trim they stay resident through training, under the step's peak.
"""

import ctypes
import ctypes.util
import functools


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
