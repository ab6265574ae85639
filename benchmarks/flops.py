"""B3: achieved GFLOP/s of a training step ÷ the machine's fp32 matmul peak, measured in the same run.

Peak: ``tf.linalg.matmul`` of N×N float32 matrices (N = 2048, 3072, 4096 by default), 2·N³ flops, best of
several repetitions per size, the best size taken as the peak. Training step: a model compiled by
``search.trial.training.compile_model`` (Adam, bce_dice, the trial metrics; jit_compile off) and fed one fixed
in-memory batch (no augmentation, so only the step is timed) through ``model.fit(steps_per_epoch=K)``; step
time = epoch time ÷ K, best and median of several epochs after a warm-up epoch. FLOPs per step =
3 (forward + backward ≈ 2× forward) × 2 (multiply + add) × forward MACs per image (``models.estimate_cost``:
convolutions and transposed convolutions only) × batch. Ratio = achieved ÷ peak (target ≥ 0.6), best vs best.
The matmul peak is measured again at the end and the larger value used, since the machine is shared.

Also: one step with ``jit_compile=True`` (XLA) at 128² for the reference model, against the same step
without XLA (expected slower on CPU). Keras silently runs without XLA while TensorFlow op determinism is on
(which ``search.trial.runtime.configure_runtime`` enables on CPU, as trial workers do), so this pair is measured
with determinism switched off; the non-XLA pair (determinism on vs off) is reported as well.

    .venv/bin/python benchmarks/flops.py                  # ≈ 2–3 min on 2 cores
    .venv/bin/python benchmarks/flops.py --epochs 5 --steps 5
"""

from __future__ import annotations

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from _common import emit, machine_info, median, print_table  # noqa: E402

MODELS = {
    # name: (base_filters, base_kernels, num_layers wanted, dilation, dropout_rate, batch)
    "reference": (16, 9, 8, 3, 0.05, 2),
    "light": (8, 3, 4, 1, 0.0, 4),
}


def matmul_peak(sizes: list[int], *, reps: int) -> dict[str, Any]:
    """Best fp32 matmul GFLOP/s over sizes (best of ``reps`` per size)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    best: dict[int, float] = {}
    for n in sizes:
        a = tf.constant(rng.random((n, n), dtype=np.float32))
        b = tf.constant(rng.random((n, n), dtype=np.float32))
        c = tf.linalg.matmul(a, b)  # warm-up (and allocation)
        _ = float(c[0, 0])
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            c = tf.linalg.matmul(a, b)
            _ = float(c[0, 0])  # eager CPU ops are synchronous; this only reads one value
            times.append(time.perf_counter() - t0)
        best[n] = 2.0 * n**3 / min(times) / 1e9
        emit({"bench": "B3.matmul", "n": n, "reps": reps, "best_s": round(min(times), 4),
              "median_s": round(median(times), 4), "gflops_best": round(best[n], 1)})
    n_best = max(best, key=best.__getitem__)
    return {"gflops": best[n_best], "n": n_best, "by_size": {str(k): round(v, 1) for k, v in best.items()}}


def step_time(name: str, *, size: int, channels: int, steps: int, epochs: int, jit: bool, seed: int) -> dict[str, Any]:
    """Best/median seconds per training step of one model on a fixed batch."""
    import numpy as np
    import tensorflow as tf

    from data import AugmentSpec
    from models import UNetSpec, estimate_cost
    from search.config import max_feasible_layers
    from search.config.specs import TrainSpec, TrialSpecs
    from search.trial.training import compile_model

    f0, k0, layers, dilation, dropout, batch = MODELS[name]
    layers = min(layers, max_feasible_layers(size))
    spec = UNetSpec(image_size=size, channels=channels, base_filters=f0, base_kernels=k0, num_layers=layers,
                    dilation=dilation, dropout_rate=dropout)
    cost = estimate_cost(spec)
    model = compile_model(TrialSpecs(model=spec, augment=AugmentSpec.none(),
                                     train=TrainSpec(batch_size=batch, seed=seed, jit_compile=jit)))
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, channels), dtype=np.uint8)
    masks = (rng.random((batch, size, size, 1)) < 0.1).astype(np.float32)
    ds = tf.data.Dataset.from_tensors((images, masks)).repeat()

    t0 = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    warmup_s = time.perf_counter() - t0
    per_step = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
        per_step.append((time.perf_counter() - t0) / steps)
    gflop = 3 * 2 * cost.forward_macs_per_image * batch / 1e9
    if jit and not model.jit_compile:
        raise RuntimeError("Keras turned jit_compile off for this model (is op determinism enabled?)")
    return {
        "model": name, "size": size, "channels": channels, "batch": batch, "base_filters": f0,
        "base_kernels": k0, "num_layers": layers, "jit_compile": bool(model.jit_compile), "params": cost.params,
        "gflop_per_step": round(gflop, 2), "steps": steps, "epochs": epochs,
        "warmup_epoch_s": round(warmup_s, 2),
        "step_s_best": round(min(per_step), 4), "step_s_median": round(median(per_step), 4),
        "gflops_best": round(gflop / min(per_step), 1), "gflops_median": round(gflop / median(per_step), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[2048, 3072, 4096])
    parser.add_argument("--matmul-reps", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["reference", "light"])
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per model (after one warm-up)")
    parser.add_argument("--xla-size", type=int, default=128, help="0 skips the jit_compile=True measurement")
    parser.add_argument("--xla-model", choices=sorted(MODELS), default="reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-deterministic", action="store_true",
                        help="skip enable_op_determinism (trial workers enable it by default)")
    args = parser.parse_args()

    from search.trial.runtime import configure_runtime

    configure_runtime(deterministic=not args.no_deterministic)
    emit({**machine_info(), "deterministic": not args.no_deterministic})
    peak = matmul_peak(args.matmul_sizes, reps=args.matmul_reps)

    rows = []
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for size in args.sizes:
        for name in args.models:
            r = step_time(name, size=size, channels=args.channels, steps=args.steps, epochs=args.epochs,
                          jit=False, seed=args.seed)
            r["bench"] = "B3.step"
            by_key[(name, size)] = r
            rows.append(emit(r))
    xla = None
    if args.xla_size:
        # Keras silently turns jit_compile off while op determinism is enabled (trainer.model_supports_jit),
        # and trial workers on CPU enable it. Measure XLA and its baseline with determinism off, then restore.
        from tensorflow.python.framework import config as tf_config

        was_deterministic = tf_config.is_op_determinism_enabled()
        tf_config.disable_op_determinism()
        try:
            base = step_time(args.xla_model, size=args.xla_size, channels=args.channels, steps=args.steps,
                             epochs=args.epochs, jit=False, seed=args.seed)
            base.update(bench="B3.xla_baseline", deterministic=False)
            emit(base)
            xla = step_time(args.xla_model, size=args.xla_size, channels=args.channels, steps=args.steps,
                            epochs=args.epochs, jit=True, seed=args.seed)
        finally:
            if was_deterministic:
                tf_config.enable_op_determinism()
        xla.update(bench="B3.xla", deterministic=False)
        xla["slowdown_vs_no_xla"] = round(xla["step_s_best"] / base["step_s_best"], 2)
        xla["baseline_step_s_best"] = base["step_s_best"]
        emit(xla)
        det = by_key.get((args.xla_model, args.xla_size))
        if det is not None:
            emit({"bench": "B3.determinism", "model": args.xla_model, "size": args.xla_size,
                  "step_s_best_deterministic": det["step_s_best"], "step_s_best_not_deterministic": base["step_s_best"],
                  "ratio": round(det["step_s_best"] / base["step_s_best"], 3)})

    peak2 = matmul_peak(args.matmul_sizes[-1:], reps=args.matmul_reps)
    peak_gflops = max(peak["gflops"], peak2["gflops"])
    for r in rows + ([xla] if xla else []):
        r["ratio_best"] = round(r["gflops_best"] / peak_gflops, 3)
        r["ratio_median"] = round(r["gflops_median"] / peak_gflops, 3)
        emit({"bench": "B3", "model": r["model"], "size": r["size"], "batch": r["batch"], "jit_compile": r["jit_compile"],
              "gflops_best": r["gflops_best"], "peak_gflops": round(peak_gflops, 1), "ratio": r["ratio_best"],
              "ratio_median": r["ratio_median"], "target": 0.6, "meets_target": r["ratio_best"] >= 0.6})
    emit({"bench": "B3.peak", "gflops_start": round(peak["gflops"], 1), "gflops_end": round(peak2["gflops"], 1),
          "by_size": peak["by_size"], "peak_gflops": round(peak_gflops, 1)})
    print_table(rows + ([xla] if xla else []), [
        ("model", "model"), ("size", "size"), ("batch", "batch"), ("num_layers", "L"), ("jit_compile", "XLA"),
        ("gflop_per_step", "GFLOP/step"), ("step_s_best", "step s (best)"), ("step_s_median", "step s (median)"),
        ("gflops_best", "GFLOP/s"), ("ratio_best", "÷ peak"), ("warmup_epoch_s", "warm-up s"),
    ], title=f"B3 training-step GFLOP/s ÷ fp32 matmul peak {peak_gflops:.1f} GFLOP/s (target ≥ 0.6)")
    if xla:
        print(f"XLA (jit_compile=True) at {xla['size']}²: step {xla['step_s_best']} s, "
              f"{xla['slowdown_vs_no_xla']}× the non-XLA step time (first epoch incl. compile {xla['warmup_epoch_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
