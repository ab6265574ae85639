"""Paired geometric augmentation of an image and its mask: nine strengths, one resampling per sample.

Each of the nine augmentations has a *strength* s in [0, 1]: 0 switches it off, 1 is about the reference tool's
setting (DESIGN §9, §10). Every enabled operation except the flips is applied with probability
``P_APPLY`` = 0.5 per sample, so the chain varies from sample to sample; its magnitude scales with s.
Sizes below are in pixels of the ``size``×``size`` image and scale with ``size / 512`` where marked.

==============  ==========================================================================================
operation       strength s → parameters (per sample)
==============  ==========================================================================================
hflip, vflip    flip with probability 0.5·s (reference: 0.5).
rotation        with P_APPLY an angle uniform in ±30°·s; independently, with probability s/2, an extra
                right-angle turn of 90°, 180° or 270° (the reference's angles).
shrink          with P_APPLY a scale uniform in [1 − 0.2·s, 1], centred on a background (0) canvas
                (reference: 0.8).
shear           with P_APPLY a factor k uniform in ±0.1·s about the centre, vertical y' = y + k·(x − W/2)
                or, with probability 0.5, the transposed (horizontal) variant; the sign covers the
                reference's mirrored variants (reference: k = 0.1).
elastic         with P_APPLY a Simard field: uniform noise in [−1, 1], Gaussian-smoothed with
                sigma 8·size/512, scaled to a displacement standard deviation of 2.3·s·size/512 (max ≈ 9 px
                at 512, s = 1). That is what the reference's alpha = 1300, sigma = 8 actually produce on a
                512×512×3 image: scipy's ``gaussian_filter`` also smooths across the channel axis with
                ``mode="constant"``, which shrinks the field ~12×. The nominal 2D formula would give a
                27 px standard deviation, which folds the image everywhere.
distortion      with P_APPLY the gradient of Gaussian-smoothed N(0, 1) noise (sigma 40·size/512), each
                component rescaled so its largest magnitude is 0.02·s·size (≈ 10 px at 512, s = 1).
barrel,         with P_APPLY one of the reference's five centres c ∈ {(0.3, 0.3), (0.7, 0.3), (0.5, 0.5),
pincushion      (0.3, 0.7), (0.7, 0.7)}·size, radius R = 0.3·size: a pixel p with d = |p − c| < R samples
                from c + (p − c)·sin(π·d / (2R))^a, a = +0.3·s (barrel) or −0.3·s (pincushion). The ten
                maps are precomputed by :class:`Augmenter` (they do not depend on the image).
==============  ==========================================================================================

Implementation. All operations are sampling maps (output pixel → source position). The forward chain is
flips → rotation → shrink → shear → elastic → distortion → barrel → pincushion; its sampling map is
``A(E(D(B(P(q)))))``: the lens maps (precomputed, absolute) are looked up, the two noise displacements are
added where the coordinates have moved to (``cv2.remap`` of the low-resolution field), and the composed affine
matrix ``A`` is applied last with ``cv2.transform``. Image and mask are then resampled exactly once with the
same map: the image bilinearly, the mask with nearest neighbour (so its class indices stay exact: {0, 1}, or 0..K-1 with several classes); borders are constant 0
(background). The noise fields are generated on a grid ``f`` times coarser (f = ⌊sigma/2⌋, so the smoothing
sigma there is about 2 cells; e.g. 128² for elastic and 26² for distortion at 512 px), smoothed there and
bilinearly upsampled by the same ``remap`` that composes them: a smoothed field has no detail finer than its
sigma, so nothing is lost, and the cost no longer grows with sigma². A call only reads the precomputed state,
so one :class:`Augmenter` serves every tf.data thread.

Why nearest neighbour for the mask: it samples the mask's pixels taken as 1×1 squares, so a structure of any
width and angle keeps, on average, the area the warp carries it to. Bilinear-then-threshold-at-50 % (used
before) erodes 8-connected 1-px lines where they step diagonally: at reference strengths a 1-px 45° line kept
84 % of that area (nearest: 100 %); 2-3 px lines were unaffected. A lower threshold dilates every outline
instead (+28 % on 1-px lines at 96/255). Neither keeps every 1-px line connected where the warp compresses it
(elastic, shrink): that would need a dilation.

Deliberate differences from the reference: one random chain per sample instead of every variant of every
image; one field shared by image and mask (the reference draws separate elastic and distortion fields for
them); background 0 instead of a corner pixel's colour; one lens centre per application instead of the
reference's cumulative chain over the centres; its unused ``gaussian_filter_sigma`` pre-blur is left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

__all__ = ["AUGMENTATIONS", "LENS_CENTRES", "AugmentSpec", "Augmenter", "Draw"]

logger = logging.getLogger(__name__)

AUGMENTATIONS: tuple[str, ...] = (
    "hflip", "vflip", "rotation", "shrink", "shear", "elastic", "distortion", "barrel", "pincushion",
)
P_APPLY = 0.5
MAX_ANGLE_DEG = 30.0
MAX_SHRINK = 0.2
MAX_SHEAR = 0.1
ELASTIC_SIGMA_512 = 8.0
ELASTIC_STD_512 = 2.3
DISTORTION_SIGMA_512 = 40.0
DISTORTION_MAX = 0.02
LENS_CENTRES: tuple[tuple[float, float], ...] = ((0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.7, 0.7))
LENS_RADIUS = 0.3
LENS_AMOUNT = 0.3
MIN_SIZE = 8
_LOW_RES_SIGMA = 2.0


@dataclass(frozen=True)
class AugmentSpec:
    """Strengths in [0, 1] of the nine paired augmentations (0 = off, 1 ≈ the reference tool's setting)."""

    hflip: float = 0.0
    vflip: float = 0.0
    rotation: float = 0.0
    shrink: float = 0.0
    shear: float = 0.0
    elastic: float = 0.0
    distortion: float = 0.0
    barrel: float = 0.0
    pincushion: float = 0.0

    def __post_init__(self) -> None:
        for name in AUGMENTATIONS:
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first strength that is not a number in [0, 1]."""
        for name in AUGMENTATIONS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, float | int) or not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"AugmentSpec.{name}: expected a strength (float) in [0, 1] (0 = off, 1 = reference). "
                    f"Received: {name}={value!r}"
                )

    @classmethod
    def none(cls) -> AugmentSpec:
        """Every augmentation off."""
        return cls()

    @classmethod
    def reference(cls) -> AugmentSpec:
        """All nine augmentations at strength 1, the reference tool's setting."""
        return cls(**{name: 1.0 for name in AUGMENTATIONS})

    @property
    def enabled(self) -> bool:
        """Whether any strength is above 0."""
        return any(getattr(self, name) > 0.0 for name in AUGMENTATIONS)

    def to_dict(self) -> dict[str, float]:
        """The nine strengths by name."""
        return {name: float(value) for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentSpec:
        """Build a spec from strengths by name; missing names are 0, unknown names are an error."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"AugmentSpec: unknown augmentation(s) {unknown}; expected names among {list(AUGMENTATIONS)}"
            )
        return cls(**dict(values))


@dataclass(frozen=True, eq=False)
class Draw:
    """The random parameters of one sample (None = that operation is not applied)."""

    hflip: bool
    vflip: bool
    angle_deg: float
    shrink: float
    shear: tuple[float, bool] | None  # (k, horizontal)
    elastic: np.ndarray | None  # low-resolution displacement field [h, w, 2], full-resolution pixels
    distortion: np.ndarray | None
    barrel: int | None  # index into LENS_CENTRES
    pincushion: int | None


class _LowResField:
    """Geometry of a smooth random field generated on a coarse grid and upsampled by ``remap``."""

    def __init__(self, *, size: int, sigma: float) -> None:
        self.factor = max(1, int(sigma // _LOW_RES_SIGMA))
        self.cells = math.ceil(size / self.factor)
        self.sigma = sigma / self.factor
        radius = max(1, math.ceil(3.0 * self.sigma))
        self.ksize = 2 * radius + 1
        kernel = cv2.getGaussianKernel(self.ksize, self.sigma, cv2.CV_64F).ravel()
        # Standard deviation of the smoothed field per unit standard deviation of the white noise (2D kernel).
        self.gain = float(np.sum(kernel**2))
        # Full-resolution pixel x sits at coarse coordinate (x + 0.5)/f − 0.5.
        self.scale = 1.0 / self.factor
        self.offset = 0.5 / self.factor - 0.5
        axis = np.arange(size, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)
        self.identity = np.dstack(np.meshgrid(axis, axis)).astype(np.float32)

    def smooth(self, noise: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(noise, (self.ksize, self.ksize), self.sigma, borderType=cv2.BORDER_REFLECT_101)

    def sample(self, field: np.ndarray, grid: np.ndarray | None) -> np.ndarray:
        """The field's displacement at full-resolution coordinates ``grid`` (None = the identity grid)."""
        coords = self.identity if grid is None else grid * np.float32(self.scale) + np.float32(self.offset)
        return _lookup(field, coords)


def _lookup(src: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear values of ``src`` at float32 (x, y) coordinates [H, W, 2], the border replicated."""
    # A single CV_32FC2 map goes with map2=None, which OpenCV accepts and its stubs do not.
    return cv2.remap(src, coords, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload]


def _lens_map(*, size: int, centre: tuple[float, float], radius: float, amount: float) -> np.ndarray:
    """Absolute sampling map [size, size, 2] of a barrel (amount > 0) or pincushion (amount < 0) lens."""
    cx, cy = centre[0] * size, centre[1] * size
    r = radius * size
    axis = np.arange(size, dtype=np.float64)
    x, y = np.meshgrid(axis, axis)
    dx, dy = x - cx, y - cy
    d = np.hypot(dx, dy)
    inside = (d < r) & (d > 0)
    factor = np.ones_like(d)
    factor[inside] = np.sin(np.pi * d[inside] / (2.0 * r)) ** amount
    return np.dstack([cx + dx * factor, cy + dy * factor]).astype(np.float32)


def _elastic_field(field: _LowResField, rng: np.random.Generator, *, std: float) -> np.ndarray:
    """Simard field: smoothed uniform noise in [−1, 1], scaled to displacement standard deviation ``std``."""
    noise = rng.random((field.cells, field.cells, 2), dtype=np.float32) * np.float32(2.0) - np.float32(1.0)
    # Uniform noise in [−1, 1] has standard deviation 1/√3; smoothing multiplies it by field.gain.
    return field.smooth(noise) * np.float32(std * math.sqrt(3.0) / field.gain)


def _distortion_field(field: _LowResField, rng: np.random.Generator, *, peak: float) -> np.ndarray:
    """Gradient of smoothed N(0, 1) noise, each component rescaled so its largest magnitude is ``peak``."""
    potential = field.smooth(rng.standard_normal((field.cells, field.cells), dtype=np.float32))
    gy, gx = np.gradient(potential)
    out = np.zeros((field.cells, field.cells, 2), dtype=np.float32)
    for channel, g in enumerate((gx, gy)):
        largest = float(np.abs(g).max())
        if largest > 0:
            out[..., channel] = g * np.float32(peak / largest)
    return out


def _affine(*, size: int, draw: Draw) -> np.ndarray | None:
    """The composed sampling matrix (3×3, output → source) of flips, rotation, shrink, shear; None if identity."""
    c = (size - 1) / 2.0
    to_centre = np.array([[1.0, 0.0, -c], [0.0, 1.0, -c], [0.0, 0.0, 1.0]])
    from_centre = np.array([[1.0, 0.0, c], [0.0, 1.0, c], [0.0, 0.0, 1.0]])
    # Forward order flips → rotation → shrink → shear, so the sampling map is M_flip·M_rot·M_shrink·M_shear.
    centred = np.eye(3)
    if draw.hflip:
        centred = centred @ np.diag([-1.0, 1.0, 1.0])
    if draw.vflip:
        centred = centred @ np.diag([1.0, -1.0, 1.0])
    if draw.angle_deg:
        t = math.radians(draw.angle_deg)
        cos, sin = round(math.cos(t), 12), round(math.sin(t), 12)
        centred = centred @ np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    if draw.shrink != 1.0:
        centred = centred @ np.diag([1.0 / draw.shrink, 1.0 / draw.shrink, 1.0])
    if draw.shear is not None:
        k, horizontal = draw.shear
        shear = np.eye(3)
        # Sampling map of y' = y + k·x (vertical) or x' = x + k·y (horizontal), centred coordinates.
        shear[(0, 1) if horizontal else (1, 0)] = -k
        centred = centred @ shear
    if np.array_equal(centred, np.eye(3)):
        return None
    return from_centre @ centred @ to_centre


class Augmenter:
    """Apply one random chain of the spec's augmentations to an image and its mask, resampling once.

    Everything that does not depend on the image (identity grids, lens maps, Gaussian kernels) is computed
    here; a call only draws parameters and noise, composes one sampling map and remaps.
    """

    def __init__(self, spec: AugmentSpec, *, size: int) -> None:
        spec.validate()
        if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
            raise ValueError(f"Augmenter: expected size to be an int >= {MIN_SIZE}. Received: size={size!r}")
        self.spec = spec
        self.size = size
        scale = size / 512.0
        self._elastic = _LowResField(size=size, sigma=ELASTIC_SIGMA_512 * scale) if spec.elastic > 0 else None
        self._distortion = (
            _LowResField(size=size, sigma=DISTORTION_SIGMA_512 * scale) if spec.distortion > 0 else None
        )
        self.lens_maps: dict[str, tuple[np.ndarray, ...]] = {}
        for kind, sign in (("barrel", 1.0), ("pincushion", -1.0)):
            strength = getattr(spec, kind)
            if strength > 0:
                amount = sign * LENS_AMOUNT * strength
                maps = tuple(
                    _lens_map(size=size, centre=c, radius=LENS_RADIUS, amount=amount) for c in LENS_CENTRES
                )
                for m in maps:
                    m.setflags(write=False)
                self.lens_maps[kind] = maps
        axis = np.arange(size, dtype=np.float32)
        self._identity = np.dstack(np.meshgrid(axis, axis)).astype(np.float32)
        self._identity.setflags(write=False)
        logger.debug("Augmenter ready: size=%d spec=%s", size, spec.to_dict())

    def sample(self, rng: np.random.Generator) -> Draw:
        """Draw the random parameters of one sample."""
        s = self.spec

        def maybe(strength: float, p: float = P_APPLY) -> bool:
            return strength > 0 and rng.random() < p

        hflip = maybe(s.hflip, 0.5 * s.hflip)
        vflip = maybe(s.vflip, 0.5 * s.vflip)
        angle = 0.0
        if maybe(s.rotation):
            angle = float(rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG)) * s.rotation
        if maybe(s.rotation, 0.5 * s.rotation):
            angle += 90.0 * int(rng.integers(1, 4))
        shrink = 1.0 - float(rng.uniform(0.0, MAX_SHRINK * s.shrink)) if maybe(s.shrink) else 1.0
        shear = None
        if maybe(s.shear):
            shear = (float(rng.uniform(-MAX_SHEAR, MAX_SHEAR)) * s.shear, bool(rng.random() < 0.5))
        elastic = distortion = None
        if self._elastic is not None and maybe(s.elastic):
            elastic = _elastic_field(self._elastic, rng, std=ELASTIC_STD_512 * s.elastic * self.size / 512.0)
        if self._distortion is not None and maybe(s.distortion):
            distortion = _distortion_field(self._distortion, rng, peak=DISTORTION_MAX * s.distortion * self.size)
        barrel = int(rng.integers(len(LENS_CENTRES))) if maybe(s.barrel) else None
        pincushion = int(rng.integers(len(LENS_CENTRES))) if maybe(s.pincushion) else None
        return Draw(hflip, vflip, angle, shrink, shear, elastic, distortion, barrel, pincushion)

    def sampling_map(self, draw: Draw) -> np.ndarray | None:
        """The composed sampling map [size, size, 2] (float32, x then y) of a draw; None for the identity."""
        grid: np.ndarray | None = None
        if draw.pincushion is not None:
            grid = self.lens_maps["pincushion"][draw.pincushion]
        if draw.barrel is not None:
            lens = self.lens_maps["barrel"][draw.barrel]
            grid = lens if grid is None else _lookup(lens, grid)
        for field, values in ((self._distortion, draw.distortion), (self._elastic, draw.elastic)):
            if values is not None and field is not None:
                moved = field.sample(values, grid)
                moved += self._identity if grid is None else grid
                grid = moved
        matrix = _affine(size=self.size, draw=draw)
        if matrix is None:
            return grid
        if grid is None:
            grid = self._identity
        return cv2.transform(grid, matrix[:2].astype(np.float32))

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one sample: image uint8 (or float32, 16-bit data) [H, W, C] and mask uint8 [H, W] of class indices,
        H = W = size.

        Returns arrays of the same shapes and dtypes (the inputs themselves when no operation was drawn).
        """
        self._check(image, mask)
        grid = self.sampling_map(self.sample(rng))
        if grid is None:
            return image, mask
        # Fixed-point maps, converted once for both remaps.
        map1, map2 = cv2.convertMaps(grid, None, cv2.CV_16SC2)  # type: ignore[call-overload]
        out_image = cv2.remap(
            image, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        ).reshape(image.shape)
        # Nearest neighbour rounds the same fixed-point map (map2 holds the fractions it rounds with).
        out_mask = cv2.remap(mask, map1, map2, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out_image, out_mask

    def _check(self, image: np.ndarray, mask: np.ndarray) -> None:
        size = self.size
        if image.dtype not in (np.uint8, np.float32) or image.ndim != 3 or image.shape[:2] != (size, size):
            raise ValueError(
                f"Augmenter: expected image uint8 or float32 [{size}, {size}, C]. "
                f"Received: image dtype={image.dtype}, shape={image.shape}"
            )
        if mask.dtype != np.uint8 or mask.shape != (size, size):
            raise ValueError(
                f"Augmenter: expected mask uint8 [{size}, {size}]. Received: mask dtype={mask.dtype}, shape={mask.shape}"
            )
