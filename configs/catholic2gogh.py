"""catholic2gogh (seed S1): your own photographs (A, e.g. of a school) → Van Gogh (B), U-Net 256.

    python -m cyclegan_jax.main --config=configs/catholic2gogh.py --workdir=workdirs/catholic2gogh \
        --config.data.path=/path/to/data --config.data.dir_a=school_photos \
        --config.data.dir_b=vangogh

Seed S1 trained a U-Net generator on photos of its school against Van Gogh paintings. Put the
two folders under one directory (or zip; trainA/trainB by default) and name them with
data.dir_a / data.dir_b. Sample grids show real A | G_AB(A) | G_BA(G_AB(A)) as S1 did.
Runtime: as vangogh2photo, a GPU/TPU job at 256² (the U-Net is 54.4 M parameters, about 5×
the ResNet's, but shallower at full resolution). Expected result: photos repainted with Van
Gogh's palette and strokes; U-Nets keep more of the photo's layout than the ResNet.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.generator = 'unet_256'
  config.data.source = 'folders'
  return config
