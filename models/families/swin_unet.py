"""The Swin-UNet (the reference tool's TensorflowSwinUNet, after keras-unet-collection's swin_unet_2d): its rules
and cost.

Geometry: a ``patch_size`` × ``patch_size`` patch embedding gives a token grid of ``image_size / patch_size``;
each of the ``num_layers - 1`` patch mergings halves it and doubles the embedding (``base_filters * 2**i`` at
level ``i``). Level 0 attends in ``window_size`` windows with ``num_heads`` heads; every deeper level in
``window_size // 2`` windows (at least 1) with ``2 * num_heads`` heads: the reference's default lists
``window_size = [4, 2, 2, 2]``, ``num_heads = [4, 8, 8, 8]``, written as two scalars so a search can vary them.
"""

from __future__ import annotations

from typing import Any

from models.cost import CostCounter, ModelCost
from models.families.base import Family
from models.spec import UNetSpec

OPTIONS: dict[str, Any] = {
    "patch_size": 4,  # reference patch_size = (4, 4)
    "window_size": 4,  # reference window_size = [4, 2, 2, 2]: level 0; deeper levels use window_size // 2
    "num_heads": 4,  # reference num_heads = [4, 8, 8, 8]: level 0; deeper levels use 2 * num_heads
    "num_mlp": 512,
    "stack_num_down": 2,
    "stack_num_up": 2,
    "shift_window": True,
}


def level_dims(spec: UNetSpec) -> tuple[int, ...]:
    """Embedding width of each level, ``base_filters * 2**i``."""
    return spec.filters_schedule()


def level_grids(spec: UNetSpec) -> tuple[int, ...]:
    """Token grid side of each level, ``image_size / patch_size / 2**i`` (floor)."""
    grid = spec.image_size // int(spec.option("patch_size"))
    return tuple(grid // 2**i for i in range(spec.num_layers))


def level_windows(spec: UNetSpec) -> tuple[int, ...]:
    """Attention window side of each level: ``window_size`` at level 0, ``max(window_size // 2, 1)`` deeper, and
    never more than the level's token grid (Swin's own rule: a grid no larger than the window is one window,
    unshifted), so that deep levels of small images do not make a depth infeasible."""
    first = int(spec.option("window_size"))
    wanted = (first if i == 0 else max(first // 2, 1) for i in range(spec.num_layers))
    return tuple(min(w, max(grid, 1)) for w, grid in zip(wanted, level_grids(spec), strict=True))


def level_heads(spec: UNetSpec) -> tuple[int, ...]:
    """Attention heads of each level: ``num_heads`` at level 0, ``2 * num_heads`` deeper."""
    first = int(spec.option("num_heads"))
    return tuple(first if i == 0 else 2 * first for i in range(spec.num_layers))


def _positive_int(spec: UNetSpec, name: str) -> int:
    value = spec.option(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    return value


def validate(spec: UNetSpec) -> None:
    for name in ("patch_size", "window_size", "num_heads", "num_mlp", "stack_num_down", "stack_num_up"):
        _positive_int(spec, name)
    if not isinstance(spec.option("shift_window"), bool):
        raise ValueError(f"Expected `shift_window` to be a bool. Received: shift_window={spec.option('shift_window')!r}")
    if spec.num_layers < 2:
        raise ValueError(
            f"Expected `num_layers` >= 2 (one patch merging at least). Received: num_layers={spec.num_layers}"
        )
    patch = spec.option("patch_size")
    factor = patch * 2 ** (spec.num_layers - 1)
    if spec.image_size % factor != 0:
        raise ValueError(
            f"Expected `image_size` divisible by patch_size * 2**(num_layers-1) = {factor}. "
            f"Received: image_size={spec.image_size} with patch_size={patch}, num_layers={spec.num_layers}"
        )
    if spec.base_filters % patch != 0:
        raise ValueError(
            "Expected `base_filters` divisible by patch_size (the last patch expansion gives base_filters / "
            f"patch_size channels). Received: base_filters={spec.base_filters} with patch_size={patch}"
        )
    for level, (grid, window) in enumerate(zip(level_grids(spec), level_windows(spec), strict=True)):
        if grid % window != 0:
            raise ValueError(
                f"Expected `window_size` to give windows dividing every level's token grid; level {level} has a "
                f"{grid}×{grid} grid and {window}×{window} windows. Received: window_size={spec.option('window_size')}"
                f" with image_size={spec.image_size}, patch_size={patch}"
            )
    for level, (dim, heads) in enumerate(zip(level_dims(spec), level_heads(spec), strict=True)):
        if dim % heads != 0:
            raise ValueError(
                f"Expected `num_heads` to give heads dividing every level's width; level {level} has width {dim} "
                f"and {heads} heads. Received: num_heads={spec.option('num_heads')} with base_filters="
                f"{spec.base_filters}"
            )


def attention_macs(spec: UNetSpec) -> int:
    """MACs of the attention matmuls (``q·kᵀ`` and ``softmax·v``: ``2 · tokens · window² · width`` per block),
    which Keras's layer count (tests/family_checks.keras_macs) does not see."""
    total = 0
    blocks_down, blocks_up = spec.option("stack_num_down"), spec.option("stack_num_up")
    for i, (grid, window, dim) in enumerate(zip(level_grids(spec), level_windows(spec), level_dims(spec),
                                                  strict=True)):
        blocks = blocks_down + (blocks_up if i < spec.num_layers - 1 else 0)
        total += blocks * 2 * grid * grid * window * window * dim
    return total


def _swin_block(counter: CostCounter, tokens: int, dim: int, window: int, heads: int, mlp: int) -> None:
    counter.params += 2 * dim  # norm1 (gamma, beta)
    counter.output(tokens, dim)
    counter.dense(tokens, dim, 3 * dim)  # qkv
    counter.params += (2 * window - 1) ** 2 * heads  # relative position bias table
    counter.macs += 2 * tokens * window * window * dim  # q·kᵀ and softmax·v
    counter.output(tokens, dim)  # attention
    counter.dense(tokens, dim, dim)  # proj
    counter.output(tokens, dim)  # add1
    counter.params += 2 * dim  # norm2
    counter.output(tokens, dim)
    counter.dense(tokens, dim, mlp)
    counter.dense(tokens, mlp, dim)
    counter.output(tokens, dim)  # add2


def cost(spec: UNetSpec) -> ModelCost:
    """The cost of ``models.swin_unet.build_swin_unet(spec)``, layer by layer (activation values: every layer
    output once, the block internals as listed in :func:`_swin_block`)."""
    counter = CostCounter()
    size, patch = spec.image_size, int(spec.option("patch_size"))
    mlp = int(spec.option("num_mlp"))
    down, up = int(spec.option("stack_num_down")), int(spec.option("stack_num_up"))
    dims, grids = level_dims(spec), level_grids(spec)
    windows, heads = level_windows(spec), level_heads(spec)
    if spec.rescale_input:
        counter.output(size * size, spec.channels)
    if spec.standardize_input:
        counter.output(size * size, spec.channels)
    tokens0 = grids[0] ** 2
    counter.conv(tokens0, spec.channels, dims[0], patch)  # patch embedding
    counter.params += tokens0 * dims[0]  # position embedding
    counter.output(tokens0, dims[0])
    last = spec.num_layers - 1
    for i in range(spec.num_layers):
        if i > 0:
            counter.output(grids[i] ** 2, 4 * dims[i - 1])  # space-to-depth
            counter.dense(grids[i] ** 2, 4 * dims[i - 1], dims[i], bias=False)  # patch merging
        for _ in range(down):
            _swin_block(counter, grids[i] ** 2, dims[i], windows[i], heads[i], mlp)
    for i in range(last - 1, -1, -1):
        tokens = grids[i] ** 2
        counter.conv(grids[i + 1] ** 2, dims[i + 1], 2 * dims[i + 1], 1, bias=False)  # patch expanding
        counter.output(tokens, dims[i])  # depth-to-space
        counter.output(tokens, 2 * dims[i])  # concat
        counter.dense(tokens, 2 * dims[i], dims[i], bias=False)
        for _ in range(up):
            _swin_block(counter, tokens, dims[i], windows[i], heads[i], mlp)
    counter.conv(tokens0, dims[0], patch * dims[0], 1, bias=False)  # final patch expanding
    counter.output(size * size, dims[0] // patch)
    counter.conv(size * size, dims[0] // patch, spec.num_classes, 1)  # head
    return counter.cost()


def reference_keys(spec: UNetSpec) -> list[tuple[str, Any]]:
    """The reference TensorflowSwinUNet's ``[model]`` keys: its names for the width and depth, the patch as a
    pair, windows and heads per level."""
    patch = spec.option("patch_size")
    return [
        ("filter_num_begin", spec.base_filters),
        ("depth", spec.num_layers),
        ("stack_num_down", spec.option("stack_num_down")),
        ("stack_num_up", spec.option("stack_num_up")),
        ("patch_size", (patch, patch)),
        ("num_heads", list(level_heads(spec))),
        ("window_size", list(level_windows(spec))),
        ("num_mlp", spec.option("num_mlp")),
        ("shift_window", spec.option("shift_window")),
    ]


FAMILY = Family(
    name="swin_unet",
    title="Swin-UNet",
    reference_model="TensorflowSwinUNet",
    uses=("base_filters", "num_layers"),
    options=OPTIONS,
    validate=validate,
    cost=cost,
    time_per_mac=5.2,  # B14: step time ÷ MACs, relative to the UNet's, at matched parameters
    reference_keys=reference_keys,
    # The reference's example configuration (projects' GastrointestinalPolyp train_eval_infer.config, the
    # keras-vision-transformer Oxford IIIT example): 256×256×3, filter_num_begin 128, depth 4.
    reference={"image_size": 256, "channels": 3, "base_filters": 128, "num_layers": 4, "activation": "gelu",
               "options": {}},
)
