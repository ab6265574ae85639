"""``data synth``, ``data check``, ``data prepare``: make, inspect and convert datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from search.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser("data", help="dataset tools: synth, check, prepare")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=type(p))
    dsub.required = True

    s = dsub.add_parser("synth", help="write a synthetic CT-like dataset (train/valid/test × images/masks)")
    s.add_argument("out", help="output folder (must be empty or absent)")
    s.add_argument("--n", type=int, default=60, help="number of image/mask pairs (default 60)")
    s.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--channels", type=int, default=1, choices=(1, 3), help="image channels (default 1)")
    s.set_defaults(func=cmd_synth)

    c = dsub.add_parser("check", help="validate a dataset folder and print its fingerprint and every problem")
    c.add_argument("root", help="dataset root with train/valid/test folders")
    c.add_argument("--size", type=int, default=512, help="resize target for the fingerprint (default 512)")
    c.add_argument("--channels", default="auto", choices=("1", "3", "auto"),
                   help="image channels (default auto: 1 when every image is greyscale, else 3)")
    c.add_argument("--threshold", type=int, default=None,
                   help="mask pixels >= this (0..255 scale) are foreground (default: the dataset's mask rule, "
                        "see README 'Your own data')")
    c.add_argument("--classes", default="auto", choices=("auto", "binary"),
                   help="auto (default): a labels.json beside the splits is the class map (multi-class masks); "
                        "binary: read every mask as foreground/background")
    c.add_argument("--json", action="store_true", help="print the fingerprint as JSON")
    c.set_defaults(func=cmd_check)

    v = dsub.add_parser("prepare", help="NIfTI volumes → 2D PNG slices with a patient-level split")
    v.add_argument("--volumes", required=True, help="folder of image/label NIfTI pairs")
    v.add_argument("--out", required=True, help="output dataset folder (must be empty or absent)")
    v.add_argument("--size", type=int, default=512)
    v.add_argument("--hu-min", type=float, default=-200.0, help="HU window low (default -200, CTA)")
    v.add_argument("--hu-max", type=float, default=800.0, help="HU window high (default 800, CTA)")
    v.add_argument("--labels", action="append",
                   help="label values to keep as one binary mask, e.g. 5 or 1,2 (default: every non-zero label); "
                        "or classes NAME=V[,V…] (repeatable: --labels heart=1,2,3 --labels aorta=5; one class per "
                        "name, its values merged), or all (every label value its own class); classes write index "
                        "masks and a labels.json")
    v.add_argument("--empty-fraction", type=float, default=0.1, help="share of unlabelled slices kept")
    v.add_argument("--split", default="0.7,0.15,0.15", help="train,valid,test fractions by patient")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--axis", type=int, default=2, choices=(0, 1, 2), help="slicing axis after reorientation")
    v.set_defaults(func=cmd_prepare)


def cmd_synth(args: argparse.Namespace) -> int:
    from data import write_synthetic_dataset

    if args.n < 3 or args.size < 16:
        raise ConfigError("data synth: expected --n ≥ 3 and --size ≥ 16")
    try:
        out = write_synthetic_dataset(Path(args.out), n=args.n, size=args.size, seed=args.seed, channels=args.channels)
    except ValueError as e:
        raise ConfigError(f"data synth: {e}") from None
    print(f"wrote {args.n} synthetic pairs ({args.size}px, seed {args.seed}) to {out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from data import LoadSettings, check_dataset, resolve_class_map

    channels = args.channels if args.channels == "auto" else int(args.channels)
    try:
        settings = LoadSettings(image_size=args.size, channels=channels, mask_threshold=args.threshold,
                                classes=resolve_class_map(Path(args.root), args.classes))
    except ValueError as e:
        raise ConfigError(f"data check: {e}") from None
    report = check_dataset(Path(args.root), settings)
    if args.json and report.fingerprint is not None:
        print(json.dumps(report.fingerprint, indent=2))
    elif report.fingerprint is not None:
        fp = report.fingerprint
        for split, info in fp.get("splits", {}).items():
            print(f"{split}: {json.dumps(info)}")
        bits = fp["image_bits"]
        print(f"masks: {fp['mask_rule']['rule']}")
        held = fp.get("total", {}).get("class_images")
        if held:
            n = fp["total"]["count"]
            print("classes (images holding each, of " + str(n) + "): "
                  + ", ".join(f"{k} {name}: {count}" for k, (name, count) in enumerate(held.items())))
        print(f"images: {fp['channels']} channel(s), "
              + ("8-bit" if bits <= 8 else f"16-bit with {bits} significant bits, scaled to 0..255 as float32"))
        print(f"content hash: {fp.get('content_hash')}")
    for w in report.warnings:
        print(f"warning: {w}")
    for err in report.errors:
        print(f"error: {err}")
    if report.errors:
        print(f"{len(report.errors)} problem(s) found in {args.root}")
        return 3
    print(f"{args.root}: OK ({len(report.warnings)} warning(s))")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from data import prepare_volumes

    try:
        split = tuple(float(x) for x in args.split.split(","))
    except ValueError:
        raise ConfigError("data prepare: --split expects three numbers like 0.7,0.15,0.15") from None
    labels, classes = _prepare_labels(args.labels or [])
    if len(split) != 3 or abs(sum(split) - 1) > 1e-6:
        raise ConfigError(f"data prepare: --split expects three fractions summing to 1, got {args.split}")
    try:
        manifest = prepare_volumes(
            Path(args.volumes), Path(args.out), size=args.size, hu_window=(args.hu_min, args.hu_max), labels=labels,
            empty_fraction=args.empty_fraction, split=split, seed=args.seed, axis=args.axis, classes=classes,
        )
    except ValueError as e:
        raise ConfigError(f"data prepare: {e}") from None
    print(f"wrote slices to {args.out}: {manifest}")
    return 0


def _prepare_labels(entries: list[str]) -> tuple[list[int] | None, dict[str, list[int]] | str | None]:
    """``--labels`` as (values of one binary mask, None) or (None, classes): ``5`` / ``1,2`` → one mask;
    ``NAME=V[,V…]`` (repeatable) → one class per name; ``all`` → every label value its own class."""
    if not entries:
        return None, None
    if entries == ["all"]:
        return None, "all"
    named = [e for e in entries if "=" in e]
    try:
        if not named:
            return [int(x) for e in entries for x in e.split(",")], None
        if len(named) != len(entries):
            raise ValueError
        classes: dict[str, list[int]] = {}
        for entry in named:
            name, values = entry.split("=", 1)
            if not name.strip() or name.strip() in classes:
                raise ValueError
            classes[name.strip()] = [int(x) for x in values.split(",")]
    except ValueError:
        raise ConfigError(f"data prepare: --labels {' '.join(entries)!r}: expected label values (5 or 1,2), classes "
                          "NAME=V[,V…] with distinct names (repeat --labels for each), or all") from None
    return None, classes
