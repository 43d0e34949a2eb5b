"""Data sources (folders, zips, tfds, the bundled demo and digit sets) and the input pipeline:
`input_pipeline.open(config)` opens a source once for training and evaluation."""
