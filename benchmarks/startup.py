"""B12b: a trial's start-up, the first epoch ÷ the next ones, with the optimizer built before the first step
(``search.trial.training.compile_model`` now) and built by it (Keras's default, the code before).

Keras builds an unbuilt optimizer while it traces the train step; tf.function then traces the step a second
time (variables were created during the first trace). ``compile_model`` builds the optimizer first. The
"before" arm reproduces the old path by making ``Optimizer.build`` a no-op while ``compile_model`` runs, so
that Keras builds it inside the first trace exactly as before.

Side by side in one process, arms interleaved per configuration, synthetic 128² images (the cost of tracing
does not depend on the pixels): per fit, the first epoch's seconds, the median of the next ones, and their
difference (the start-up a trial pays once).

    .venv/bin/python benchmarks/startup.py                      # baseline + two sampled-like shapes, ≈ 4 min
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import emit, machine_info, print_table  # noqa: E402

SHAPES = {  # (base_filters, base_kernels, num_layers): the baseline and two shapes the sampler proposed in B12
    "baseline 16/9x9/6": (16, 9, 6),
    "32/5x5/3": (32, 5, 3),
    "32/5x5/6": (32, 5, 6),
}


def _specs(filters: int, kernels: int, levels: int, size: int) -> Any:
    from search.config import load_config
    from search.config.space import baseline_values, complete_values
    from search.config.specs import specs_from_values

    cfg = load_config(overrides=[f"data.image_size={size}", "data.channels=1"])
    values = {**complete_values(cfg, baseline_values(cfg)), "base_filters": filters, "base_kernels": kernels,
              "num_layers": levels}
    return specs_from_values(cfg, values, seed=0)


def _compile(specs: Any, *, prebuilt: bool) -> Any:
    import keras

    from search.trial.training import compile_model

    if prebuilt:
        return compile_model(specs)
    build = keras.optimizers.Optimizer.build
    keras.optimizers.Optimizer.build = lambda self, variables: None  # type: ignore[method-assign]
    try:
        return compile_model(specs)
    finally:
        keras.optimizers.Optimizer.build = build  # type: ignore[method-assign]


def measure(specs: Any, *, prebuilt: bool, epochs: int, steps: int) -> dict[str, Any]:
    import numpy as np

    from data import eval_dataset, train_dataset

    size = specs.model.image_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (32, size, size, 1), dtype=np.uint8)
    masks = (rng.random((32, size, size)) > 0.7).astype(np.uint8)
    valid = eval_dataset(images[:12], masks[:12], batch_size=specs.train.batch_size)
    t0 = time.perf_counter()
    model = _compile(specs, prebuilt=prebuilt)
    compile_s = time.perf_counter() - t0
    epoch_s = []
    for epoch in range(epochs):
        ds = train_dataset(images, masks, batch_size=specs.train.batch_size, augment=specs.augment, seed=0,
                           epoch=epoch, steps=steps)
        t = time.perf_counter()
        model.fit(ds, epochs=epoch + 1, initial_epoch=epoch, validation_data=valid, verbose=0)
        epoch_s.append(time.perf_counter() - t)
    steady = statistics.median(epoch_s[1:])
    return {"compile_s": compile_s, "first_epoch_s": epoch_s[0], "steady_epoch_s": steady,
            "startup_s": compile_s + epoch_s[0] - steady}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per fit (the first traces)")
    ap.add_argument("--steps", type=int, default=9, help="optimizer steps per epoch (B12's plan: 9 of batch 2)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from search.trial.runtime import configure_runtime

    configure_runtime(deterministic=True)
    emit({"bench": "B12b", "machine": machine_info()})
    rows = []
    for rnd in range(args.rounds):
        for name, shape in SHAPES.items():
            specs = _specs(*shape, args.size)
            for prebuilt in ((True, False) if rnd % 2 == 0 else (False, True)):
                m = measure(specs, prebuilt=prebuilt, epochs=args.epochs, steps=args.steps)
                rows.append(emit({"bench": "B12b", "round": rnd, "shape": name, "optimizer": "prebuilt" if prebuilt
                                  else "in first trace", **{k: round(v, 2) for k, v in m.items()}}))
    summary = []
    for name in SHAPES:
        def med(arm: str, key: str, name: str = name) -> float:
            return statistics.median(r[key] for r in rows if r["shape"] == name and r["optimizer"] == arm)

        before, after = med("in first trace", "startup_s"), med("prebuilt", "startup_s")
        summary.append({"shape": name, "startup before": before, "startup now": after, "saved": before - after,
                        "steady epoch": med("prebuilt", "steady_epoch_s")})
    print_table(summary, [("shape", "shape"), ("startup before", "start-up before (s)"),
                          ("startup now", "start-up now (s)"), ("saved", "saved (s)"),
                          ("steady epoch", "steady epoch (s)")], title=f"B12b at {args.size}², medians")


if __name__ == "__main__":
    main()
