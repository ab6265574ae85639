"""Learning curves of fixed configurations on a real dataset: what learns, how fast, and where it ends.

Trains each named configuration with ``search.trial.training.train_model`` (the trial's own loop, so epochs are
``--steps`` optimizer steps, validation every epoch) for ``--epochs`` epochs with early stopping and collapse
detection off, and prints one JSON line per epoch (validation hard dice, soft dice, loss, predicted foreground
fraction, seconds) and one per configuration with the test hard dice of its best epoch. This is how the
defaults in ``search_space.yaml`` were chosen (BENCHMARKS.md, B8); it is not a search.

    .venv/bin/python benchmarks/learning_curves.py --data ../shared/data/chd-ct-aorta --size 128 \\
        --configs plain bn bn_lr3e-4 --epochs 12 --steps 50
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import SHARED_DATA, emit, machine_info  # noqa: E402

# name -> overrides of the base values (16 filters, 3x3, 5 levels, lr 1e-3, bce_dice, no BN, no augmentation)
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "plain_lr1e-4": {"learning_rate": 1e-4},
    "bn": {"batch_norm": True},
    "bn_lr1e-4": {"batch_norm": True, "learning_rate": 1e-4},
    "bn_lr3e-4": {"batch_norm": True, "learning_rate": 3e-4},
    "bn_lr3e-3": {"batch_norm": True, "learning_rate": 3e-3},
    "bn_image_dice": {"batch_norm": True, "loss": "bce_dice_image"},
    "bn_std": {"batch_norm": True, "standardize_input": True},
    "bn_std_aug": {"batch_norm": True, "standardize_input": True, "augment": 0.5},
    "std": {"standardize_input": True},
    "bn_dice": {"batch_norm": True, "loss": "dice"},
    "bn_aug": {"batch_norm": True, "augment": 0.5},
    "bn_aug1": {"batch_norm": True, "augment": 1.0},
    "bn_k5": {"batch_norm": True, "base_kernels": 5},
    "bn_f32": {"batch_norm": True, "base_filters": 32},
    "bn_l4": {"batch_norm": True, "num_layers": 4},
    # like the best trials of the B8 searches: 4 levels, 3x3, lr ~1e-3, BatchNorm, augmentation
    "best_like": {"batch_norm": True, "num_layers": 4, "learning_rate": 1.3e-3, "augment": 0.5},
    "best_like_std": {"batch_norm": True, "standardize_input": True, "num_layers": 4, "learning_rate": 1.3e-3,
                      "augment": 0.5},
    "reference": {"base_kernels": 9, "dilation": 3, "dropout_rate": 0.05, "learning_rate": 1e-4, "augment": 1.0},
}
BASE: dict[str, Any] = {
    "base_filters": 16, "base_kernels": 3, "num_layers": 5, "dilation": 1, "dropout_rate": 0.0,
    "learning_rate": 1e-3, "batch_norm": False, "standardize_input": False, "loss": "bce_dice", "augment": 0.0,
}


def _TestEvery(every: int, test: Any, loss: str, batch: int, out: dict[int, float]) -> Any:  # noqa: N802
    """A Keras callback that scores the current weights on the test split every ``every`` epochs."""
    import keras

    from search.trial.training import evaluate_model

    class TestEvery(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if (epoch + 1) % every == 0:
                out[epoch] = evaluate_model(self.model, test.images, test.masks, batch_size=batch, loss=loss)["hard_dice"]

    return TestEvery()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA / "chd-ct-aorta"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--configs", nargs="+", default=["plain", "bn"], choices=sorted(CONFIGS))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=50, help="optimizer steps per epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON lines file (default: stdout only)")
    ap.add_argument("--test-every", type=int, default=0,
                    help="also score the test split every K epochs (what a longer budget would reach)")
    args = ap.parse_args(argv)

    from data import AugmentSpec, LoadSettings, discover, load_cached
    from models import UNetSpec
    from search.config.specs import TrainSpec, TrialSpecs
    from search.trial.runtime import configure_runtime
    from search.trial.training import evaluate_model, train_model

    configure_runtime(threads=None, deterministic=True)
    out = open(args.out, "a") if args.out else None  # noqa: SIM115 - closed at the end

    def log(rec: dict[str, Any]) -> None:
        emit(rec)
        if out is not None:
            out.write(json.dumps(rec) + "\n")
            out.flush()

    log(machine_info())
    cache = Path(tempfile.gettempdir()) / "unet-search-bench-cache"
    data = load_cached(discover(Path(args.data)),
                       LoadSettings(image_size=args.size, channels=args.channels), cache_dir=cache)
    train, valid, test = data.split("train"), data.split("valid"), data.split("test")
    for name in args.configs:
        v = {**BASE, **CONFIGS[name]}
        model = UNetSpec(image_size=args.size, channels=args.channels, base_filters=v["base_filters"],
                         base_kernels=v["base_kernels"], num_layers=v["num_layers"], dilation=v["dilation"],
                         dropout_rate=v["dropout_rate"], batch_norm=v["batch_norm"],
                         standardize_input=v["standardize_input"])
        aug = AugmentSpec(**{f.name: float(v["augment"]) for f in dataclasses.fields(AugmentSpec)})
        spec = TrialSpecs(model=model, augment=aug, train=TrainSpec(
            learning_rate=v["learning_rate"], loss=v["loss"], batch_size=args.batch, max_epochs=args.epochs,
            patience=10**6, steps_per_epoch=args.steps, collapse_epochs=0, seed=args.seed))
        t0 = time.perf_counter()

        tested: dict[int, float] = {}

        def on_epoch(epoch: int, logs: dict[str, float], name: str = name, tested: dict[int, float] = tested) -> None:
            log({"bench": "curve", "config": name, "epoch": epoch,
                 **{k: round(logs[k], 4) for k in ("loss", "val_loss", "val_hard_dice", "val_dice_coef",
                                                     "val_pred_fg", "epoch_s") if k in logs},
                 **({"test_hard_dice": round(tested[epoch], 4)} if epoch in tested else {})})

        result = train_model(spec, train_images=train.images, train_masks=train.masks, valid_images=valid.images,
                             valid_masks=valid.masks, on_epoch=on_epoch,
                             callbacks=[_TestEvery(args.test_every, test, v["loss"], args.batch, tested)]
                             if args.test_every else None)
        test_metrics = evaluate_model(result.model, test.images, test.masks, batch_size=args.batch, loss=v["loss"])
        log({"bench": "curve_end", "config": name, "data": Path(args.data).name, "size": args.size,
             "steps": args.steps, "epochs": args.epochs, "best_epoch": result.best_epoch,
             "best_val_hard_dice": round(result.best_score, 4), "test_hard_dice": round(test_metrics["hard_dice"], 4),
             "seconds": round(time.perf_counter() - t0, 1), "values": v})
    if out is not None:
        out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
