"""Benchmarks, each a command: `step` (the train step's speed and memory), `layers` (conv time
per layer and impl), `input` (the input pipeline's rate and memory) and `scaling` (the README's
tables over sizes and devices per host, from `step` runs in child processes); `torch_step`
times the PyTorch reference's step for comparison (needs the `torch` extra, as its
`torch_reference` networks do: nothing else imports them)."""
