"""The Swin-UNet builder (the reference tool's TensorflowSwinUNet; Cao et al. 2021, keras-unet-collection's
swin_unet_2d).

Structure, as the reference: patch embedding (``patch_size`` patches to ``base_filters`` tokens, plus a learned
position embedding), ``stack_num_down`` Swin blocks per level (window attention, every second block on windows
shifted by half a window when ``shift_window``), patch merging (2×2 tokens to one, a bias-free linear map to twice
the width) between levels, then per decoder level a patch expanding (1×1 bias-free conv to twice the width,
depth-to-space ×2), concatenation with the encoder's tokens of that level, a bias-free linear projection and
``stack_num_up`` Swin blocks; a last patch expanding by ``patch_size`` gives ``base_filters / patch_size``
channels at full resolution for the shared head. Level widths, windows and heads: models/families/swin_unet.py.

Deliberate differences from the reference:

- Tokens stay on their 2-D grid (B, H, W, C) throughout, so the patch embedding is the equivalent strided
  convolution (the same weights as extracting patches then a Dense), and the qkv and output projections of the
  attention are top-level Dense layers around :class:`WindowAttention` (the per-token maps commute with the
  window shift), so every weight-bearing layer is visible to the layer-wise MAC count.
- The relative-position index and the shifted-window mask are constants, not (non-trainable) variables; the
  reference's tf.Variables count in its Keras-2 parameter total, ours do not.
- The MLP's activation is ``spec.activation`` (the reference fixes GELU; its reference configuration here sets
  ``activation: gelu``). Dropouts are off as in the reference; ``batch_norm`` does not apply (LayerNorm).
- The head is the shared one (1×1 conv with a bias; the reference's has none, and always sigmoid).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from models.families.swin_unet import level_dims, level_grids, level_heads, level_windows
from models.spec import UNetSpec
from models.unet import image_input, output_head

__all__ = ["DepthToSpace", "PositionEmbedding", "SpaceToDepth", "WindowAttention", "build_swin_unet"]

_MASKED = -100.0  # added to attention logits between tokens of different regions of a shifted window


@keras.saving.register_keras_serializable(package="unet_search")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding (one vector per token of the grid, initialised uniform as a Keras Embedding)."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.embedding = self.add_weight(
            name="embedding", shape=tuple(input_shape[1:]), initializer="uniform", trainable=True
        )

    def call(self, x: Any) -> Any:
        return x + keras.ops.cast(self.embedding, x.dtype)[None]


class _BlockRearrange(keras.layers.Layer):
    """A parameter-free rearrangement of b×b blocks of tokens (``block`` = b)."""

    def __init__(self, block: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block = int(block)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="unet_search")
class SpaceToDepth(_BlockRearrange):
    """(B, H, W, C) → (B, H/b, W/b, b·b·C): each b×b block of tokens becomes one token."""

    def call(self, x: Any) -> Any:
        _, h, w, c = x.shape
        b = self.block
        x = keras.ops.reshape(x, (-1, h // b, b, w // b, b, c))
        x = keras.ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return keras.ops.reshape(x, (-1, h // b, w // b, b * b * c))

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, c = input_shape
        return (n, h // self.block, w // self.block, c * self.block**2)


@keras.saving.register_keras_serializable(package="unet_search")
class DepthToSpace(_BlockRearrange):
    """(B, H, W, b·b·C) → (B, H·b, W·b, C): the inverse of :class:`SpaceToDepth`."""

    def call(self, x: Any) -> Any:
        _, h, w, c = x.shape
        b = self.block
        x = keras.ops.reshape(x, (-1, h, w, b, b, c // (b * b)))
        x = keras.ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return keras.ops.reshape(x, (-1, h * b, w * b, c // (b * b)))

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, c = input_shape
        return (n, h * self.block, w * self.block, c // self.block**2)


def _relative_position_index(window: int) -> np.ndarray:
    """(w², w²) index into the ((2w−1)², heads) bias table for each pair of tokens of a window."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return (rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]).astype("int32")


def _shift_mask(grid: int, window: int, shift: int) -> np.ndarray:
    """(windows, w², w²) additive mask: 0 between tokens of the same region of the rolled grid, else −100."""
    regions = np.zeros((grid, grid), dtype="int32")
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(cuts):
        for j, cols in enumerate(cuts):
            regions[rows, cols] = 3 * i + j
    n = grid // window
    windows = regions.reshape(n, window, n, window).transpose(0, 2, 1, 3).reshape(n * n, window * window)
    return np.where(windows[:, None, :] != windows[:, :, None], _MASKED, 0.0).astype("float32")


@keras.saving.register_keras_serializable(package="unet_search")
class WindowAttention(keras.layers.Layer):
    """Multi-head self-attention within ``window``×``window`` windows of a token grid, the windows rolled by
    ``shift`` tokens (Swin-MSA, masked so tokens attend only within their region) when ``shift > 0``.

    Input: the (B, H, W, 3C) queries, keys and values of every token (the qkv projection); output: (B, H, W, C)
    attention-weighted values before the output projection. Weights: the relative position bias table.
    """

    def __init__(self, window: int, num_heads: int, shift: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window = int(window)
        self.num_heads = int(num_heads)
        self.shift = int(shift)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        _, grid, _, channels3 = input_shape
        assert grid is not None and channels3 is not None
        self.grid = int(grid)
        self.dim = int(channels3) // 3
        self.bias_table = self.add_weight(
            name="relative_position_bias", shape=((2 * self.window - 1) ** 2, self.num_heads),
            initializer="zeros", trainable=True,
        )
        self._index = _relative_position_index(self.window).reshape(-1)
        self._mask = _shift_mask(self.grid, self.window, self.shift) if self.shift > 0 else None

    def call(self, qkv: Any) -> Any:
        ops = keras.ops
        w, heads, grid, dim = self.window, self.num_heads, self.grid, self.dim
        n, tokens, head_dim = grid // w, w * w, dim // heads
        if self.shift > 0:
            qkv = ops.roll(qkv, shift=(-self.shift, -self.shift), axis=(1, 2))
        x = ops.reshape(qkv, (-1, n, w, n, w, 3 * dim))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, n * n, tokens, 3, heads, head_dim))
        x = ops.transpose(x, (3, 0, 1, 4, 2, 5))  # (3, B, windows, heads, w², head_dim)
        q, k, v = x[0] * (head_dim**-0.5), x[1], x[2]
        logits = ops.matmul(q, ops.swapaxes(k, -1, -2))  # (B, windows, heads, w², w²)
        bias = ops.take(ops.cast(self.bias_table, logits.dtype), self._index, axis=0)
        logits = logits + ops.transpose(ops.reshape(bias, (tokens, tokens, heads)), (2, 0, 1))
        if self._mask is not None:
            logits = logits + ops.cast(self._mask, logits.dtype)[None, :, None]
        out = ops.matmul(ops.softmax(logits, axis=-1), v)  # (B, windows, heads, w², head_dim)
        out = ops.reshape(ops.transpose(out, (0, 1, 3, 2, 4)), (-1, n, n, w, w, dim))
        out = ops.reshape(ops.transpose(out, (0, 1, 3, 2, 4, 5)), (-1, grid, grid, dim))
        if self.shift > 0:
            out = ops.roll(out, shift=(self.shift, self.shift), axis=(1, 2))
        return out

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*input_shape[:-1], input_shape[-1] // 3)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "window": self.window, "num_heads": self.num_heads, "shift": self.shift}


def swin_block(x: Any, *, window: int, heads: int, shift: int, mlp: int, activation: str, name: str) -> Any:
    """One Swin Transformer block: ``x + proj(attn(qkv(norm1(x))))``, then ``+ mlp2(mlp1(norm2(·)))``."""
    dim = x.shape[-1]
    h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm1")(x)
    h = keras.layers.Dense(3 * dim, name=f"{name}_qkv")(h)
    h = WindowAttention(window, heads, shift, name=f"{name}_attn")(h)
    h = keras.layers.Dense(dim, name=f"{name}_proj")(h)
    x = keras.layers.Add(name=f"{name}_add1")([x, h])
    h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm2")(x)
    h = keras.layers.Dense(mlp, activation=activation, name=f"{name}_mlp1")(h)
    h = keras.layers.Dense(dim, name=f"{name}_mlp2")(h)
    return keras.layers.Add(name=f"{name}_add2")([x, h])


def build_swin_unet(spec: UNetSpec) -> keras.Model:
    """Build the Swin-UNet described by ``spec`` (module docstring). Layers: ``patch_embed``, ``pos_embed``,
    ``enc{i}_block{j}_*``, ``enc{i}_merge`` (``_s2d`` + Dense), ``dec{i}_expand`` (+ ``_d2s``), ``dec{i}_concat``,
    ``dec{i}_proj``, ``dec{i}_block{j}_*``, ``final_expand`` (+ ``_d2s``), ``head``.

    Raises:
        ValueError: if ``spec.validate()`` fails.
    """
    spec.validate()
    patch, mlp = int(spec.option("patch_size")), int(spec.option("num_mlp"))
    dims, grids = level_dims(spec), level_grids(spec)
    windows, heads = level_windows(spec), level_heads(spec)
    shift_window = bool(spec.option("shift_window"))

    def stack(x: Any, level: int, count: int, prefix: str) -> Any:
        for j in range(count):
            w = windows[level]
            shift = w // 2 if shift_window and j % 2 == 1 and w < grids[level] else 0
            x = swin_block(x, window=w, heads=heads[level], shift=shift, mlp=mlp, activation=spec.activation,
                           name=f"{prefix}_block{j}")
        return x

    inputs, x = image_input(spec)
    x = keras.layers.Conv2D(dims[0], patch, strides=patch, name="patch_embed")(x)
    x = PositionEmbedding(name="pos_embed")(x)
    skips = []
    for i in range(spec.num_layers):
        if i > 0:
            x = SpaceToDepth(2, name=f"enc{i}_merge_s2d")(x)
            x = keras.layers.Dense(dims[i], use_bias=False, name=f"enc{i}_merge")(x)
        x = stack(x, i, int(spec.option("stack_num_down")), f"enc{i}")
        skips.append(x)
    for i in range(spec.num_layers - 2, -1, -1):
        x = keras.layers.Conv2D(2 * dims[i + 1], 1, use_bias=False, name=f"dec{i}_expand")(x)
        x = DepthToSpace(2, name=f"dec{i}_expand_d2s")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"dec{i}_concat")([x, skips[i]])
        x = keras.layers.Dense(dims[i], use_bias=False, name=f"dec{i}_proj")(x)
        x = stack(x, i, int(spec.option("stack_num_up")), f"dec{i}")
    x = keras.layers.Conv2D(patch * dims[0], 1, use_bias=False, name="final_expand")(x)
    x = DepthToSpace(patch, name="final_expand_d2s")(x)
    return keras.Model(inputs, output_head(x, spec), name=spec.variant)
