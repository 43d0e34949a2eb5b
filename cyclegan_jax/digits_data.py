"""The digit data's public name, `cyclegan_jax.digits_data.load_digits(name, split, data_dir,
seed)`, which outside scoring scripts load (issue 23 fixes it); the readers live in
cyclegan_jax.data.digits_data."""

from cyclegan_jax.data.digits_data import DOMAINS, Digits, load_digits

__all__ = ['DOMAINS', 'Digits', 'load_digits']
