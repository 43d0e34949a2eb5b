"""Networks as flax.linen modules, and the weights files some of them load. They know nothing
of devices, data, families, training or checkpoints."""
