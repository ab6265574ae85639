"""Commands that read a study's results: ``status``, ``export``, ``report``, ``dashboard``, ``predict``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from search.results import open_study


def register(sub: Any) -> None:
    s = sub.add_parser("status", help="table of a study's trials, the best one, running trials and failures")
    s.add_argument("name", help="study name")
    s.add_argument("--all", action="store_true", help="show every hyperparameter column")
    # SUPPRESS: `python -m search --debug status NAME` sets it too, and a default here would undo that.
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the full traceback of each failed trial that left one (trials/<n>/traceback.txt)")
    s.set_defaults(func=cmd_status)

    e = sub.add_parser(
        "export",
        help="the best configuration as re-runnable YAML, JSON, or the reference tool's INI",
        description="Export the best completed trial: yaml (re-runnable config, every hyperparameter fixed), "
        "json (trial, score, values, final test metrics), ini (the reference tool's train_eval_infer.config).",
    )
    e.add_argument("name", help="study name")
    e.add_argument("--format", choices=("yaml", "json", "ini"), default="yaml", help="output format (default: yaml)")
    e.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of standard output")
    e.set_defaults(func=cmd_export)

    r = sub.add_parser(
        "report",
        help="write results/<study>/report.html (self-contained) and TensorBoard HParams summaries",
    )
    r.add_argument("name", help="study name")
    r.add_argument("--no-hparams", action="store_true",
                   help="skip the TensorBoard HParams summaries")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard on the study (Keras Tuner studies are mirrored into an Optuna journal)",
    )
    d.add_argument("name", help="study name")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    d.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    d.add_argument("--mirror", action="store_true",
                   help="serve a mirror of the results contract even for Optuna studies (shows failure reasons)")
    d.set_defaults(func=cmd_dashboard)

    p = sub.add_parser(
        "predict",
        help="segment a folder of images with the final model (or a trial's weights): 0/255 PNG masks",
    )
    p.add_argument("name", help="study name")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images (png/jpg/bmp/tif, any size)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for <stem>.png masks")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="foreground where the probability is above it, as in the metrics (default: 0.5)")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png colour overlays")
    p.add_argument("--trial", type=int, metavar="N", help="use trial N's best weights instead of the final model")
    p.add_argument("--batch-size", type=int, default=4, help="images per prediction batch (default: 4)")
    p.set_defaults(func=cmd_predict)


def cmd_status(args: argparse.Namespace) -> int:
    from search.tools.status import status_text

    print(status_text(open_study(args.results, args.name), all_columns=args.all,
                      tracebacks=getattr(args, "debug", False)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from search.tools.export import export_study, write_export

    study = open_study(args.results, args.name)
    text = export_study(study, fmt=args.format)
    if args.output:
        path = write_export(text, args.output)
        print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from search.tools.report import write_report
    from search.tools.tensorboard import write_hparams_summary

    study = open_study(args.results, args.name)
    path = write_report(study)
    print(f"wrote {path}")
    if not args.no_hparams:
        written = write_hparams_summary(study)
        if written:
            print(f"TensorBoard HParams for {len(written)} trials: tensorboard --logdir {study.root}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from search.tools.dashboard import dashboard_storage, serve

    study = open_study(args.results, args.name)
    storage, what = dashboard_storage(study, mirror=args.mirror)
    print(f"optuna-dashboard on {what}")
    print(f"open http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host} makes the dashboard reachable from other machines", file=sys.stderr)
    serve(storage, host=args.host, port=args.port)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from search.cli.quiet import start_tensorflow_quietly
    from search.tools.predict import predict_folder

    study = open_study(args.results, args.name)
    start_tensorflow_quietly(debug=args.debug)
    result = predict_folder(
        study,
        images=args.images,
        out=args.out,
        threshold=args.threshold,
        overlay=args.overlay,
        trial=args.trial,
        batch_size=args.batch_size,
    )
    extra = f" and {len(result.overlays)} overlays" if result.overlays else ""
    kind = f"index masks, {len(result.colour_masks)} colour masks" if result.colour_masks else "masks"
    print(f"wrote {len(result.masks)} {kind}{extra} to {args.out} (model: {result.source})")
    return 0
