"""`python -m cyclegan_jax.benchmarks.torch_step --size=128`: the PyTorch reference's step, timed.

The speed issue asks for a step at least 1.2× faster than the PyTorch reference's at 128² and at
256², on the same CPU in the same sitting. This times the reference's training iteration,
`optimize_parameters` of junyanz/pytorch-CycleGAN-and-pix2pix cycle_gan_model.py, on CPU in
float32 at batch 1: two resnet_9blocks generators (ngf 64) and two 70×70 PatchGANs (ndf 64,
n_layers 3), instance norm, no dropout, weights as `init_weights('normal', 0.02)`, one Adam
(lr 2e-4, betas 0.5, 0.999) over both generators and one over both discriminators; LSGAN, cycle
λ 10, identity λ 0.5. The networks are torch_reference's layer-for-layer re-statements. The
reference's image pools (size 50) hand back the current fake until they hold 50 images, always
the case in a run this short, so the D update here takes the fakes directly.

Prints one record: seconds per step (median and min over --steps timed steps after --warmup),
torch's version and thread count, and peak resident memory. Ours beside it, in one sitting:

  python -m cyclegan_jax.benchmarks.torch_step --size=128 --steps=3 --json
  python -m cyclegan_jax.benchmarks.step --config=configs/default.py --size=128 --steps=3 --json
"""

import json
import math
import resource
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import torch

from cyclegan_jax.benchmarks.torch_reference import (TorchNLayerDiscriminator,
                                                     TorchResnetGenerator)

LAMBDA_CYCLE, LAMBDA_IDT = 10.0, 0.5  # The reference's lambda_A = lambda_B and lambda_identity.


def peak_rss_bytes() -> int:
  """This process's peak resident memory, /proc's VmHWM as benchmarks.step reads it (without
  importing that module, which brings in JAX); ru_maxrss where there is no /proc."""
  try:
    with open('/proc/self/status') as status:
      return next(int(l.split()[1]) * 1024 for l in status if l.startswith('VmHWM:'))
  except (FileNotFoundError, StopIteration):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS.
    return rss if sys.platform == 'darwin' else rss * 1024


def _init_normal(model: torch.nn.Module) -> torch.nn.Module:
  """The reference's init_weights('normal', 0.02): conv weights N(0, 0.02), biases 0. Its
  instance norms have no affine parameters, so there is nothing else to set."""
  for module in model.modules():
    if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
      torch.nn.init.normal_(module.weight, 0.0, 0.02)
      if module.bias is not None:
        torch.nn.init.zeros_(module.bias)
  return model


def make_step(size: int, seed: int = 0) -> tuple[dict[str, torch.nn.Module],
                                                 Callable[[], dict[str, float]]]:
  """The four networks (G_A, G_B, D_A, D_B) and one reference training iteration on fixed
  inputs (uniform in [-1, 1], 1×3×size×size); the iteration returns its losses."""
  torch.manual_seed(seed)
  models = {'G_A': TorchResnetGenerator(3, 3, 64, 9), 'G_B': TorchResnetGenerator(3, 3, 64, 9),
            'D_A': TorchNLayerDiscriminator(3, 64, 3), 'D_B': TorchNLayerDiscriminator(3, 64, 3)}
  for model in models.values():
    _init_normal(model).train()
  g_a, g_b, d_a, d_b = models.values()
  inputs = torch.Generator().manual_seed(seed)
  real_a, real_b = (torch.rand((1, 3, size, size), generator=inputs) * 2 - 1 for _ in 'ab')
  adam = lambda *nets: torch.optim.Adam([p for n in nets for p in n.parameters()], lr=2e-4,
                                        betas=(0.5, 0.999))
  optimizer_g, optimizer_d = adam(g_a, g_b), adam(d_a, d_b)
  mse, l1 = torch.nn.MSELoss(), torch.nn.L1Loss()
  gan = lambda pred, real: mse(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))

  def discriminators_trainable(trainable: bool) -> None:
    for p in (*d_a.parameters(), *d_b.parameters()):
      p.requires_grad_(trainable)

  def step() -> dict[str, float]:
    fake_b = g_a(real_a)  # forward()
    rec_a = g_b(fake_b)
    fake_a = g_b(real_b)
    rec_b = g_a(fake_a)
    discriminators_trainable(False)  # G update: backward_G.
    optimizer_g.zero_grad()
    loss_g = (l1(g_a(real_b), real_b) * LAMBDA_CYCLE * LAMBDA_IDT
              + l1(g_b(real_a), real_a) * LAMBDA_CYCLE * LAMBDA_IDT
              + gan(d_a(fake_b), True) + gan(d_b(fake_a), True)
              + l1(rec_a, real_a) * LAMBDA_CYCLE + l1(rec_b, real_b) * LAMBDA_CYCLE)
    loss_g.backward()
    optimizer_g.step()
    discriminators_trainable(True)  # D update: backward_D_A, backward_D_B.
    optimizer_d.zero_grad()
    losses = {'G': loss_g.item()}
    for name, net, real, fake in (('D_A', d_a, real_b, fake_b), ('D_B', d_b, real_a, fake_a)):
      loss_d = 0.5 * (gan(net(real), True) + gan(net(fake.detach()), False))
      loss_d.backward()
      losses[name] = loss_d.item()
    optimizer_d.step()
    return losses

  return models, step


def benchmark(size: int, steps: int, warmup: int, threads: int | None = None,
              seed: int = 0) -> dict[str, Any]:
  """Times `steps` iterations after `warmup` untimed ones, with a progress line per step on
  stderr (a 256² step takes seconds)."""
  if threads:
    torch.set_num_threads(threads)
  _, step = make_step(size, seed)
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    losses = step()
    seconds = time.perf_counter() - start
    timed = i >= warmup
    if timed:
      times.append(seconds)
    label = f'step {i - warmup + 1}/{steps}' if timed else f'warm-up {i + 1}/{warmup}'
    print(f'{label}: {seconds:.3f} s', file=sys.stderr, flush=True)
  if not all(map(math.isfinite, losses.values())):
    raise FloatingPointError(f'the benchmarked step produced non-finite losses: {losses}')
  return {'framework': 'torch', 'reference': 'pytorch-CycleGAN-and-pix2pix optimize_parameters',
          'size': size, 'batch': 1, 'dtype': 'float32', 'device': 'cpu', 'steps': steps,
          'warmup': warmup, 's_per_step_median': round(statistics.median(times), 5),
          's_per_step_min': round(min(times), 5), 'torch_version': torch.__version__,
          'threads': torch.get_num_threads(), 'peak_rss_bytes': peak_rss_bytes()}


def main() -> None:
  """The command line; its flags are defined here, not at import, as in benchmarks.step."""
  size = flags.DEFINE_integer('size', 256, 'Image size (a multiple of 4).', lower_bound=4)
  steps = flags.DEFINE_integer('steps', 3, 'Timed steps.', lower_bound=1)
  warmup = flags.DEFINE_integer('warmup', 2, 'Untimed steps first.', lower_bound=0)
  threads = flags.DEFINE_integer('threads', None, "torch.set_num_threads; default: torch's.",
                                 lower_bound=1)
  as_json = flags.DEFINE_bool('json', False, 'Print the record as one JSON line.')

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    record = benchmark(size.value, steps.value, warmup.value, threads.value)
    if as_json.value:
      print(json.dumps(record))
    else:
      print(f'torch {record["torch_version"]}, {record["threads"]} threads, {record["size"]}²: '
            f'{record["s_per_step_median"]:.3f} s/step median, {record["s_per_step_min"]:.3f} '
            f'min over {record["steps"]} steps; peak RSS {record["peak_rss_bytes"] / 2**20:.0f} '
            'MiB')

  app.run(run)


if __name__ == '__main__':
  main()
