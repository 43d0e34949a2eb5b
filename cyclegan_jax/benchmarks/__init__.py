"""Benchmarks, each a command: `step` (the train step's speed and memory), `layers` (conv time
per layer and impl) and `input` (the input pipeline's rate and memory)."""
