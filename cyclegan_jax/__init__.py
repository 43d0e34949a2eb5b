"""cyclegan_jax: unpaired image-to-image translation (CycleGAN) and DCGAN in JAX/Flax."""
