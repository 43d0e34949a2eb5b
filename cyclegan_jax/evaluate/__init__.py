"""Metrics on trained generators: digit-translation accuracy (digits.py)."""
