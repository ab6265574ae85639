"""B7: the reference model at 512², batch 8, on a GPU: fp32 vs mixed precision vs XLA vs mixed + XLA.

For each mode a fresh model (F0 16, k 9, L 8, dilation 3, dropout 0.05, 3 channels: 124,996,849 parameters)
is compiled by ``search.trial.training.compile_model`` under the mode's Keras dtype policy (``mixed_float16`` for
the mixed modes; Keras wraps Adam in a LossScaleOptimizer) and ``jit_compile``; it trains on one fixed batch
kept in a repeated ``tf.data`` dataset, so only the step is timed: a warm-up epoch (graph tracing and the XLA
compile), then ``--epochs`` timed epochs of ``--steps`` steps. Reported per mode: images/s, ms per step,
achieved TFLOP/s (3 × 2 × forward MACs × batch ÷ step time, MACs from ``models.estimate_cost``) and the
fraction of the card's peak for that precision (fp32 modes against the TF32 tensor-core peak, since
TensorFlow runs fp32 convolutions/matmuls as TF32 on Ampere and newer by default, and against the plain
fp32 peak; mixed modes against the dense fp16 peak), GPU utilisation and memory from ``nvidia-smi``
sampled during the timed epochs. A last mode (``mixed_augment``) feeds the mixed model through
``data.train_dataset`` with all nine augmentations at strength 1, to see whether the CPU pipeline keeps up.

Results: one JSON line per measurement, a table, and (if ``--out`` or $OUT is set) ``gpu_bench.jsonl`` and
``nvidia_smi.csv`` in that folder. ``--smoke`` runs a tiny size on whatever device exists (CPU included) to
check the code. Run it through ``benchmarks/gpu.sh``.

    python benchmarks/gpu_bench.py                 # on a GPU machine, ≈ 4–6 min
    python benchmarks/gpu_bench.py --smoke         # anywhere, ≈ 1 min on 2 CPU cores
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import emit, machine_info, median, print_table  # noqa: E402

MODES = {  # name: (mixed precision, XLA, augmentation pipeline)
    "fp32": (False, False, False),
    "mixed": (True, False, False),
    "xla": (False, True, False),
    "mixed_xla": (True, True, False),
    "mixed_augment": (True, False, True),
}

# Dense peaks in TFLOP/s (vendor datasheets, without sparsity): fp32 (non-tensor), tf32 and fp16/bf16 tensor.
PEAKS = {
    "H100 SXM": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.0},
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "fp16": 366.0},
    "A10": {"fp32": 31.2, "tf32": 62.5, "fp16": 125.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0},
}


def peak_for(name: str) -> tuple[str | None, dict[str, float] | None]:
    """Look a device name up in PEAKS (H100 without a form factor is taken as SXM, H200 as H100 SXM)."""
    upper = name.upper()
    if "H200" in upper:
        return "H200", PEAKS["H200"]
    if "H100" in upper:
        for key in ("PCIE", "NVL"):
            if key in upper:
                label = "H100 PCIe" if key == "PCIE" else "H100 NVL"
                return label, PEAKS[label]
        return "H100 SXM", PEAKS["H100 SXM"]
    for key in ("A100", "L40S", "A10", "L4"):
        if key in upper:
            return key, PEAKS[key]
    return None, None


class SmiSampler(threading.Thread):
    """``nvidia-smi --query-gpu=utilization.gpu,memory.used`` every ``interval`` seconds (nothing without it)."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (time, util %, memory MiB)
        self.available = shutil.which("nvidia-smi") is not None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while self.available and not self._stop_event.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5,
                ).stdout.strip().splitlines()
                util, mem = (float(v) for v in out[0].split(","))
                self.samples.append((time.time(), util, mem))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                pass
            self._stop_event.wait(self.interval)

    def window(self, t0: float, t1: float) -> dict[str, float | None]:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not inside:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_mib": None, "smi_samples": 0}
        return {
            "gpu_util_mean": round(sum(s[1] for s in inside) / len(inside), 1),
            "gpu_util_max": max(s[1] for s in inside),
            "gpu_mem_max_mib": max(s[2] for s in inside),
            "smi_samples": len(inside),
        }

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    try:
        return str(tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name))
    except Exception:  # noqa: BLE001 - informational
        return gpus[0].name


def run_mode(mode: str, args: argparse.Namespace, smi: SmiSampler) -> dict[str, Any]:
    import keras
    import numpy as np
    import tensorflow as tf

    from data import AugmentSpec, synthetic_arrays, train_dataset
    from models import UNetSpec, estimate_cost
    from search.config import max_feasible_layers
    from search.config.specs import TrainSpec, TrialSpecs
    from search.trial.training import compile_model

    mixed, xla, augment = MODES[mode]
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    layers = min(args.num_layers, max_feasible_layers(args.size))
    spec = UNetSpec(image_size=args.size, channels=args.channels, base_filters=16, base_kernels=9, num_layers=layers,
                    dilation=3, dropout_rate=0.05)
    cost = estimate_cost(spec)
    model = compile_model(TrialSpecs(model=spec, augment=AugmentSpec.none(),
                                     train=TrainSpec(batch_size=args.batch, seed=0, jit_compile=xla,
                                                     mixed_precision=mixed)))
    if augment:
        n = args.batch * args.steps
        images, masks = synthetic_arrays(n=n, size=args.size, seed=0, channels=args.channels)
        ds = train_dataset(images, masks, batch_size=args.batch, augment=AugmentSpec.reference(), seed=0)
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (args.batch, args.size, args.size, args.channels), dtype=np.uint8)
        masks = (rng.random((args.batch, args.size, args.size, 1)) < 0.1).astype(np.float32)
        ds = tf.data.Dataset.from_tensors((images, masks)).repeat().prefetch(2)

    t0 = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=args.warmup_steps if not augment else args.steps, verbose=0)
    warmup_s = time.perf_counter() - t0
    per_step = []
    w0 = time.time()
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
        per_step.append((time.perf_counter() - t0) / args.steps)
    w1 = time.time()
    step = min(per_step)
    tflop = 3 * 2 * cost.forward_macs_per_image * args.batch / 1e12
    row: dict[str, Any] = {
        "bench": "B7", "mode": mode, "mixed_precision": mixed, "jit_compile": bool(model.jit_compile),
        "jit_requested": xla, "augment": augment, "size": args.size, "batch": args.batch, "num_layers": layers,
        "params": cost.params, "tflop_per_step": round(tflop, 3), "warmup_s": round(warmup_s, 1),
        "step_ms_best": round(step * 1e3, 2), "step_ms_median": round(median(per_step) * 1e3, 2),
        "images_per_s": round(args.batch / step, 2), "tflops": round(tflop / step, 2),
        **smi.window(w0, w1),
    }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--num-layers", type=int, default=8, help="capped to the deepest that fits --size")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per mode (best is reported)")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--smi-interval", type=float, default=0.5)
    parser.add_argument("--peak-tflops", type=float, nargs=3, metavar=("FP32", "TF32", "FP16"),
                        help="override the card's dense peaks when its name is not in the table")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (64², batch 2, 2 steps): checks the code")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.batch, args.steps, args.epochs, args.warmup_steps = 64, 2, 2, 1, 1

    from search.trial.runtime import configure_runtime

    configure_runtime(deterministic=False)  # memory growth on GPUs; no op determinism (it disables XLA)
    info = {**machine_info(), "device": device_name()}
    label, peaks = peak_for(info["device"])
    if args.peak_tflops:
        label, peaks = "user", dict(zip(("fp32", "tf32", "fp16"), args.peak_tflops, strict=True))
    info.update(peak_label=label, peaks_tflops=peaks)
    rows = [emit(info)]
    smi = SmiSampler(args.smi_interval)
    smi.start()
    results = []
    try:
        for mode in args.modes:
            try:
                row = run_mode(mode, args, smi)
            except Exception as e:  # noqa: BLE001 - one mode failing (OOM, XLA) must not lose the others
                row = {"bench": "B7", "mode": mode, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            if peaks and "tflops" in row:
                if row["mixed_precision"]:
                    row["fraction_of_fp16_peak"] = round(row["tflops"] / peaks["fp16"], 3)
                else:
                    row["fraction_of_tf32_peak"] = round(row["tflops"] / peaks["tf32"], 3)
                    row["fraction_of_fp32_peak"] = round(row["tflops"] / peaks["fp32"], 3)
            results.append(emit(row))
    finally:
        smi.stop()
    rows += results
    base = next((r for r in results if r["mode"] == "fp32" and "images_per_s" in r), None)
    for r in results:
        if base and "images_per_s" in r:
            r["speedup_vs_fp32"] = round(r["images_per_s"] / base["images_per_s"], 2)
    print_table(results, [
        ("mode", "mode"), ("jit_compile", "XLA"), ("images_per_s", "img/s"), ("step_ms_best", "ms/step"),
        ("speedup_vs_fp32", "× fp32"), ("tflops", "TFLOP/s"), ("fraction_of_tf32_peak", "÷ TF32 peak"),
        ("fraction_of_fp16_peak", "÷ fp16 peak"), ("gpu_util_mean", "GPU util %"), ("gpu_mem_max_mib", "mem MiB"),
        ("warmup_s", "warm-up s"), ("error", "error"),
    ], title=f"B7 {info['device']} ({label or 'peak unknown'}), reference model {args.size}², batch {args.batch}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        with (args.out / "gpu_bench.jsonl").open("w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        with (args.out / "nvidia_smi.csv").open("w") as f:
            f.write("time,utilization_gpu_percent,memory_used_mib\n")
            for t, u, m in smi.samples:
                f.write(f"{t:.2f},{u},{m}\n")
        print(f"\nwrote {args.out / 'gpu_bench.jsonl'} and {args.out / 'nvidia_smi.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
