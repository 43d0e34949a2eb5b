"""What XLA says a step costs, from its lowered or compiled program rather than a clock: FLOPs,
the bytes its collectives send between devices, and the memory it assigns each device."""

import math
import re
from typing import Any


def flops(stage: Any) -> float | None:
  """The 'flops' of XLA's cost analysis of a lowered or compiled step (a dict, a list of one)."""
  try:
    cost = stage.cost_analysis()
  except Exception:  # Some backends do not implement it.
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  count = (cost or {}).get('flops')
  return float(count) if count is not None and count > 0 else None


# The result types of each collective in the lowered (StableHLO) step; all_reduce has a region.
_ALL_REDUCE_RESULT = re.compile(r'"stablehlo\.all_reduce".*?\}\) : \(.*?\) -> (.*?)$',
                                re.DOTALL | re.MULTILINE)
_ALL_GATHER_RESULT = re.compile(r'"stablehlo\.all_gather"[^\n]* : \(.*?\) -> (.*?)$',
                                re.MULTILINE)
_TENSOR = re.compile(r'tensor<((?:\d+x)*)[a-z]+(\d+)>')  # Dimensions, element bits.


def _result_bytes(pattern: re.Pattern, stablehlo: str) -> int:
  return sum(math.prod(int(d) for d in dims.split('x') if d) * max(int(bits) // 8, 1)
             for results in pattern.findall(stablehlo) for dims, bits in _TENSOR.findall(results))


def allreduce_bytes(stablehlo: str) -> int:
  """Bytes that one step all-reduces (gradients, metrics), summed over every all_reduce in the
  text: one inside a loop body or a network the step applies twice (batch norm) counts once."""
  return _result_bytes(_ALL_REDUCE_RESULT, stablehlo)


def allgather_bytes(stablehlo: str) -> int:
  """Bytes that one step all-gathers (CycleGAN: the step's fakes of every device, for the
  global image pools), summed over the results of every all_gather."""
  return _result_bytes(_ALL_GATHER_RESULT, stablehlo)


def collective_bytes(lowered: Any) -> dict[str, int]:
  """A record's `allreduce_bytes_per_step` and `allgather_bytes_per_step` of a lowered step,
  from one rendering of its text (large for a whole step)."""
  stablehlo = lowered.as_text()
  return {'allreduce_bytes_per_step': allreduce_bytes(stablehlo),
          'allgather_bytes_per_step': allgather_bytes(stablehlo)}


def compiled_memory(compiled: Any) -> dict[str, int | None]:
  """The bytes XLA assigns the compiled step on each device, known before it runs (so also for
  sizes that would not fit): arguments (state, batch), outputs, outputs that reuse donated
  arguments, temporaries, code, and their total (aliased once); None where none is reported."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # Some backends do not implement it.
    stats = None
  memory = {key: getattr(stats, f'{key}_size_in_bytes', None)
            for key in ('argument', 'output', 'alias', 'temp', 'generated_code')}
  memory['total'] = (None if None in memory.values() else memory['argument'] + memory['output']
                     - memory['alias'] + memory['temp'] + memory['generated_code'])
  return {f'{key}_bytes': value for key, value in memory.items()}
