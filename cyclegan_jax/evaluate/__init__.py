"""Evaluation: FID/KID with the FID Inception-v3, VGG16 features, and the evaluator of a workdir."""
