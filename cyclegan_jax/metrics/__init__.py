"""Scorers on arrays: FID/KID (fid.py) and digit-classifier metrics (digits.py)."""
