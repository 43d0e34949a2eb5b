"""Evaluation: FID/KID with the FID Inception-v3, VGG16 features, digit-translation accuracy
(digits.py), and the evaluator of a workdir."""
