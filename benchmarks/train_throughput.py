"""B1: training images/s with all nine augmentations at strength 1 ÷ with none (same model, same data).

For each case, one model is built and compiled once (``search.trial.training.compile_model``, jit_compile off) and
trained on two ``data.train_dataset`` pipelines over the same synthetic CT-like images: augmentation off
(``AugmentSpec.none()``) and all nine at strength 1 (``AugmentSpec.reference()``). Like
``search.trial.training.train_model``, every epoch is one ``model.fit(ds, epochs=1, steps_per_epoch=K)`` call on a
fresh iteration of the dataset (one epoch = K batches = the whole training set), so each timed epoch includes
the pipeline's start-up. After one warm-up epoch of each, epochs are interleaved none, all, none, all, … so
both see the same machine load; the ratio is median(all) ÷ median(none) images/s (target ≥ 0.90: the
augmentation hidden behind the compute). The pipeline alone (iterating the augmented dataset without a model)
is timed too, for context.

Cases (default): (a) the reference model (F0 16, k 9, dilation 3, dropout 0.05) at 256², batch 2, with the
deepest num_layers that fits 256² (7: a 4×4 bottleneck; the reference's 8 needs 512²); (b) a light model
(F0 8, k 3, L 4) at 512², batch 4. Images have 3 channels (the reference ALCAPA setting).

    .venv/bin/python benchmarks/train_throughput.py                      # ≈ 3 min on 2 cores
    .venv/bin/python benchmarks/train_throughput.py --steps 16 --rounds 5  # longer, steadier
"""

from __future__ import annotations

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from _common import emit, machine_info, median, print_table  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    size: int
    batch: int
    base_filters: int
    base_kernels: int
    num_layers: int  # requested; capped to the deepest that fits the image
    dilation: int
    dropout_rate: float


CASES = {
    "reference": Case("reference", 256, 2, 16, 9, 8, 3, 0.05),
    "light": Case("light", 512, 4, 8, 3, 4, 1, 0.0),
}


def deepest_fitting(size: int, wanted: int) -> int:
    from search.config import max_feasible_layers

    return min(wanted, max_feasible_layers(size))


def epoch_rate(model: Any, ds: Any, *, steps: int, batch: int) -> tuple[float, float]:
    """One fit epoch of ``steps`` batches; returns (images/s, seconds)."""
    t0 = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    dt = time.perf_counter() - t0
    return steps * batch / dt, dt


def pipeline_rate(ds: Any, *, epochs: int) -> float:
    """Images/s of iterating the dataset alone (no model), whole epochs after one warm-up epoch."""
    for _ in ds:
        pass
    count = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for image, _mask in ds:
            count += int(image.shape[0])
    return count / (time.perf_counter() - t0)


def run_case(case: Case, *, steps: int, rounds: int, channels: int, seed: int, autotune_compare: bool) -> dict[str, Any]:
    from data import AugmentSpec, synthetic_arrays, train_dataset
    from models import UNetSpec, estimate_cost
    from search.config.specs import TrainSpec, TrialSpecs
    from search.trial.training import compile_model

    layers = deepest_fitting(case.size, case.num_layers)
    spec = UNetSpec(
        image_size=case.size, channels=channels, base_filters=case.base_filters, base_kernels=case.base_kernels,
        num_layers=layers, dilation=case.dilation, dropout_rate=case.dropout_rate,
    )
    cost = estimate_cost(spec)
    n = steps * case.batch  # one epoch = `steps` full batches
    images, masks = synthetic_arrays(n=n, size=case.size, seed=seed, channels=channels)
    augments = {"none": AugmentSpec.none(), "all": AugmentSpec.reference()}
    datasets = {
        name: train_dataset(images, masks, batch_size=case.batch, augment=aug, seed=seed)
        for name, aug in augments.items()
    }
    if autotune_compare:
        import tensorflow as tf

        # Same pipelines with tf.data autotuning off: destroying an iterator whose autotuning thread is
        # asleep waits for its next wake-up (10 ms, doubling), and every fit() call destroys one.
        options = tf.data.Options()
        options.autotune.enabled = False
        datasets.update({f"{name}_noat": ds.with_options(options) for name, ds in list(datasets.items())})
    specs = TrialSpecs(model=spec, augment=augments["none"], train=TrainSpec(batch_size=case.batch, seed=seed))
    model = compile_model(specs)

    t0 = time.perf_counter()
    warm = {name: epoch_rate(model, ds, steps=steps, batch=case.batch)[1] for name, ds in datasets.items()}
    warm_s = time.perf_counter() - t0

    rates: dict[str, list[float]] = {name: [] for name in datasets}
    for r in range(rounds):
        for name in datasets:
            rate, dt = epoch_rate(model, datasets[name], steps=steps, batch=case.batch)
            rates[name].append(rate)
            emit({
                "bench": "B1.epoch", "case": case.name, "round": r, "augment": name, "size": case.size,
                "batch": case.batch, "steps": steps, "images_per_s": round(rate, 3), "epoch_s": round(dt, 3),
            })
    pipe = pipeline_rate(datasets["all"], epochs=2)
    pairs = [a / b for a, b in zip(rates["all"], rates["none"], strict=True)]
    row = {
        "bench": "B1",
        "case": case.name,
        "size": case.size,
        "channels": channels,
        "batch": case.batch,
        "base_filters": case.base_filters,
        "base_kernels": case.base_kernels,
        "num_layers": layers,
        "num_layers_requested": case.num_layers,
        "params": cost.params,
        "gmac_per_image": round(cost.forward_macs_per_image / 1e9, 3),
        "steps_per_epoch": steps,
        "rounds": rounds,
        "warmup_s": round(warm_s, 1),
        "warmup_epoch_s": {k: round(v, 2) for k, v in warm.items()},
        "none_images_per_s": round(median(rates["none"]), 3),
        "all_images_per_s": round(median(rates["all"]), 3),
        "ratio": round(median(rates["all"]) / median(rates["none"]), 3),
        "pair_ratios": [round(p, 3) for p in pairs],
        "pipeline_only_all_images_per_s": round(pipe, 1),
        "target": 0.90,
    }
    row["meets_target"] = row["ratio"] >= row["target"]
    if autotune_compare:
        row["autotune_off"] = {
            "none_images_per_s": round(median(rates["none_noat"]), 3),
            "all_images_per_s": round(median(rates["all_noat"]), 3),
            "ratio": round(median(rates["all_noat"]) / median(rates["none_noat"]), 3),
            "speedup_none": round(median(rates["none_noat"]) / median(rates["none"]), 3),
            "speedup_all": round(median(rates["all_noat"]) / median(rates["all"]), 3),
            "pipeline_only_all_images_per_s": round(pipeline_rate(datasets["all_noat"], epochs=2), 1),
        }
    return emit(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["reference", "light"])
    parser.add_argument("--steps", type=int, default=8, help="batches per epoch (one epoch = the whole set)")
    parser.add_argument("--rounds", type=int, default=3, help="timed (none, all) epoch pairs after warm-up")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-size", type=int, default=CASES["reference"].size)
    parser.add_argument("--light-size", type=int, default=CASES["light"].size)
    parser.add_argument(
        "--autotune-compare", action="store_true",
        help="also time the same pipelines with tf.data autotuning off (interleaved in the same rounds); "
        "data.train_dataset turns it off itself since commit 1e9cefc, so both sides then run the same way",
    )
    parser.add_argument(
        "--no-deterministic", action="store_true",
        help="skip tf.config.experimental.enable_op_determinism (trial workers enable it by default)",
    )
    args = parser.parse_args()

    from search.trial.runtime import configure_runtime

    # The same runtime set-up as a trial process (search.trial.process → configure_runtime).
    configure_runtime(deterministic=not args.no_deterministic)
    emit({**machine_info(), "deterministic": not args.no_deterministic})
    cases = dict(CASES)
    cases["reference"] = Case(**{**CASES["reference"].__dict__, "size": args.ref_size})
    cases["light"] = Case(**{**CASES["light"].__dict__, "size": args.light_size})
    rows = [run_case(cases[c], steps=args.steps, rounds=args.rounds, channels=args.channels, seed=args.seed,
                     autotune_compare=args.autotune_compare)
            for c in args.cases]
    print_table(rows, [
        ("case", "case"), ("size", "size"), ("batch", "batch"), ("base_filters", "F0"), ("base_kernels", "k"),
        ("num_layers", "L"), ("none_images_per_s", "none img/s"), ("all_images_per_s", "all-9 img/s"),
        ("ratio", "ratio"), ("target", "target"), ("pipeline_only_all_images_per_s", "pipeline-only img/s"),
    ], title="B1 training throughput, all nine augmentations ÷ none (median of interleaved epochs)")
    if args.autotune_compare:
        print_table([{"case": r["case"], **r["autotune_off"]} for r in rows], [
            ("case", "case"), ("none_images_per_s", "none img/s"), ("all_images_per_s", "all-9 img/s"),
            ("ratio", "ratio"), ("speedup_none", "none: off ÷ on"), ("speedup_all", "all-9: off ÷ on"),
            ("pipeline_only_all_images_per_s", "pipeline-only img/s"),
        ], title="Same, tf.data autotuning off (interleaved with the rows above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
