"""Data images: a checkerboard, random block-constant images, and image files."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from coarsekl.errors import ConfigError, DataError
from coarsekl_blocks.partitions import BlockGrid

__all__ = ["BlockConstantRandom", "Checkerboard", "ImageFile", "read_image"]


def _intensity(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{attribute.name} must be a number ≥ 0, got {value!r}")


def _grid(shape, blocks) -> BlockGrid:
    return BlockGrid(shape=shape, blocks=blocks)


@attrs.frozen(kw_only=True)
class Checkerboard:
    """``high`` on blocks with (row + col) even, ``low`` on the others (paper: 0.9 / 0.1).

    Parameters
    ----------
    shape
        Image size [H, W]. Units: pixel.
    blocks
        Block counts [rows, cols]; must divide the shape. Units: dimensionless.
    high
        Intensity of the bright blocks. Units: data intensity.
    low
        Intensity of the dark blocks. Units: data intensity.
    """

    shape: tuple[int, int] = (128, 128)
    blocks: tuple[int, int] = (4, 4)
    high: float = attrs.field(default=0.9, validator=_intensity)
    low: float = attrs.field(default=0.1, validator=_intensity)

    def image(self, rng: np.random.Generator) -> np.ndarray:
        grid = _grid(self.shape, self.blocks)
        rows, cols = np.divmod(np.arange(grid.n_blocks), grid.blocks[1])
        return grid.broadcast(np.where((rows + cols) % 2 == 0, self.high, self.low).astype(float))


@attrs.frozen(kw_only=True)
class BlockConstantRandom:
    """Block intensities c_j ~ Uniform(low, high); with ``texture`` > 0 every pixel is
    further multiplied by 1 + texture · Uniform(−1, 1) (fine structure inside blocks).

    Parameters
    ----------
    shape
        Image size [H, W]. Units: pixel.
    blocks
        Block counts [rows, cols]; must divide the shape. Units: dimensionless.
    low
        Smallest block intensity. Units: data intensity.
    high
        Largest block intensity. Units: data intensity.
    texture
        Relative amplitude of the within-block texture; 0 gives block-constant images. Units:
        dimensionless.
    """

    shape: tuple[int, int] = (128, 128)
    blocks: tuple[int, int] = (4, 4)
    low: float = attrs.field(default=0.1, validator=_intensity)
    high: float = attrs.field(default=0.9, validator=_intensity)
    texture: float = attrs.field(default=0.0, validator=_intensity)

    def __attrs_post_init__(self) -> None:
        if self.low > self.high:
            raise ConfigError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.texture > 1:
            raise ConfigError(f"texture must lie in [0, 1], got {self.texture}")

    def image(self, rng: np.random.Generator) -> np.ndarray:
        grid = _grid(self.shape, self.blocks)
        image = grid.broadcast(rng.uniform(self.low, self.high, size=grid.n_blocks))
        if self.texture > 0:
            image = image * (1 + self.texture * rng.uniform(-1, 1, size=image.shape))
        return image


def read_image(path: str | Path) -> np.ndarray:
    """Read a .npy array or a .png image (RGB averaged to grey, alpha dropped) as float64."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {str(path)!r} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise DataError(f"cannot read {str(path)!r} as a .npy array: {error}") from None
    elif suffix == ".png":
        from matplotlib.image import imread

        try:
            image = imread(path)
        except (ValueError, OSError, SyntaxError) as error:
            raise DataError(f"cannot read {str(path)!r} as a PNG image: {error}") from None
        if image.ndim == 3:
            image = image[..., :3].mean(axis=-1)
    else:
        raise DataError(f"image file {str(path)!r} must be .npy or .png, not {suffix!r}")
    if image.dtype.kind not in "biuf":
        raise DataError(f"{str(path)!r} holds {image.dtype} values, not numbers")
    return np.asarray(image, dtype=np.float64)


@attrs.frozen(kw_only=True)
class ImageFile:
    """A data image from a 2-D .npy array or a .png file (relative paths: config's folder).

    Parameters
    ----------
    path
        A 2-D .npy array or a .png file, relative to the config's folder. Units: data intensity
        (the file's values).
    """

    path: str

    def image(self, rng: np.random.Generator) -> np.ndarray:
        image = read_image(self.path)
        if image.ndim != 2:
            raise DataError(f"the data image {self.path!r} must be 2-D, got shape {image.shape}")
        return image
