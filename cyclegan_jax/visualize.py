"""Pictures people look at: sample grids and loss curves, as PNG files."""

import csv
import io
import os

import numpy as np
from etils import epath
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats → uint8."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
  """Tiles rows of equally sized [H, W, C] images in [-1, 1] into one uint8 image."""
  h, w, c = np.shape(rows[0][0])
  n_rows, n_cols = len(rows), max(len(r) for r in rows)
  grid = np.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, image in enumerate(row):
      tile = to_uint8(image)
      if c == 1:
        tile = np.repeat(tile, 3, axis=-1)
      top, left = pad + i * (h + pad), pad + j * (w + pad)
      grid[top:top + h, left:left + w] = tile
  return grid


def cycle_grid(real_a, fake_b, rec_a, real_b, fake_a, rec_b) -> np.ndarray:
  """Rows of real A | G_AB(A) | G_BA(G_AB(A)), then real B | G_BA(B) | G_AB(G_BA(B))."""
  rows = [list(r) for r in zip(real_a, fake_b, rec_a)]
  rows += [list(r) for r in zip(real_b, fake_a, rec_b)]
  return image_grid(rows)


def png_bytes(image: np.ndarray) -> bytes:
  """uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] as a PNG file's bytes."""
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image).save(
      buffer, format='PNG')
  return buffer.getvalue()


def write_png(path: epath.PathLike, image: np.ndarray) -> None:
  write_atomically(path, png_bytes(image))


def write_atomically(path: epath.PathLike, data: str | bytes) -> None:
  """Writes a sibling file, then renames it over `path`: a kill or a full disk mid-write leaves
  the old file whole instead of a truncated one (and no partial file behind). The sibling is
  this process's own, so that processes writing one path at once (a shared step cache) each
  rename a whole file."""
  path = epath.Path(path)
  partial = path.with_name(f'{path.name}.{os.getpid()}.partial')
  try:
    if isinstance(data, bytes):
      partial.write_bytes(data)
    else:
      partial.write_text(data)
    partial.replace(path)
  except BaseException:
    if partial.exists():
      partial.unlink()
    raise


def append_csv(path: epath.PathLike, step: int, scalars: dict[str, float]) -> None:
  """Appends one row of the loss table, writing the header on first use.

  Rewrites the file rather than opening it for appending, which object stores (gs://) lack.
  """
  path = epath.Path(path)
  row = io.StringIO()
  writer = csv.DictWriter(row, fieldnames=['step'] + sorted(scalars), lineterminator='\n')
  old = path.read_text() if path.exists() else ''
  if not old:
    writer.writeheader()
  writer.writerow({'step': step, **scalars})
  write_atomically(path, old + row.getvalue())


def truncate_csv(path: epath.PathLike, max_step: int) -> None:
  """Drops rows after `max_step`, so a run resumed from an older checkpoint logs no step twice."""
  path = epath.Path(path)
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  complete = [l for l in lines if l.endswith('\n')]  # A kill can cut the last row short.
  kept = complete[:1] + [l for l in complete[1:] if int(l.split(',', 1)[0]) <= max_step]
  if not kept:
    path.unlink()
  elif kept != lines:
    write_atomically(path, ''.join(kept))


def read_csv(path: epath.PathLike) -> dict[str, np.ndarray]:
  return parse_csv(epath.Path(path).read_text())


def parse_csv(text: str) -> dict[str, np.ndarray]:
  """The columns of a table append_csv wrote, as float arrays by header."""
  rows = list(csv.DictReader(io.StringIO(text)))
  return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]} if rows else {}


def plot_loss_curves(table: dict[str, np.ndarray], path: epath.PathLike,
                     groups: dict[str, list[str]]) -> None:
  """One panel per group of columns (e.g. generator terms, discriminator terms) against step."""
  import matplotlib  # Imported here: plotting is rare and matplotlib is slow to import.
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  groups = {title: [k for k in keys if k in table] for title, keys in groups.items()}
  groups = {title: keys for title, keys in groups.items() if keys}
  fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.5), squeeze=False)
  for ax, (title, keys) in zip(axes[0], groups.items()):
    for key in keys:
      ax.plot(table['step'], table[key], label=key)
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.legend(fontsize='small')
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=100)
  plt.close(fig)
  write_atomically(path, buffer.getvalue())
