"""The records of the results contract: trials and the study folder (DESIGN §5), versioned, written atomically.

Every reader (status, export, report, final, predict) goes through this package, never through
engine internals. Each trial's record of truth is ``trials/<n>/trial.json``; ``trials.csv`` is
rebuilt from those files, so concurrent workers never lose each other's rows.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search.errors import ConfigError
from search.results import layout
from search.results.io import atomic_write_json, atomic_write_text, read_json
from search.vocabulary import CLASS_DICE, TrialState

__all__ = [
    "CSV_FIELDS",
    "SCHEMA_VERSION",
    "StudyDir",
    "TrialRecord",
    "baseline_of",
    "best_of",
    "open_study",
    "ranked",
    "write_history_csv",
    "write_traceback",
]


logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CSV_FIELDS = ("number", "status", "score", "score_se", "best_epoch", "epochs_run", "duration_s", "train_s",
              "train_samples", "image_size", "reason")


# --------------------------------------------------------------------------- records


@dataclass
class TrialRecord:
    """One trial as the results contract stores it."""

    number: int
    status: TrialState
    values: dict[str, Any]
    seed: int
    score: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    max_epochs: int | None = None  # the epoch budget it trained under (Keras Tuner hyperband: its bracket's)
    score_se: float | None = None  # standard error of the score (per-image dice over validation / out-of-fold)
    duration_s: float = 0.0
    reason: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    baseline: bool = False
    engine_id: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    train_s: float = 0.0  # seconds in the epochs (duration_s adds start-up, validation tails, saving)
    # The fidelity it trained at: training samples seen (all folds; None: not known) and the image side.
    train_samples: int | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        self.status = TrialState(self.status)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialRecord:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class StudyDir:
    """Paths and readers/writers of one study's folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # paths
    @property
    def name(self) -> str:
        return self.root.name

    @property
    def study_yaml(self) -> Path:
        return self.root / layout.STUDY_YAML

    @property
    def environment_json(self) -> Path:
        return self.root / layout.ENVIRONMENT_JSON

    @property
    def fingerprint_json(self) -> Path:
        return self.root / layout.FINGERPRINT_JSON

    @property
    def trials_csv(self) -> Path:
        return self.root / layout.TRIALS_CSV

    @property
    def trials_dir(self) -> Path:
        return self.root / layout.TRIALS_DIR

    @property
    def engine_dir(self) -> Path:
        return self.root / layout.ENGINE_DIR

    @property
    def final_dir(self) -> Path:
        return self.root / layout.FINAL_DIR

    @property
    def final_json(self) -> Path:
        return self.final_dir / layout.FINAL_JSON

    @property
    def test_metrics_json(self) -> Path:
        return self.final_dir / layout.TEST_METRICS_JSON

    @property
    def report_html(self) -> Path:
        return self.root / layout.REPORT_HTML

    @property
    def lock_path(self) -> Path:
        return self.root / layout.LOCK_FILE

    def trial_dir(self, number: int) -> Path:
        return self.trials_dir / layout.trial_dir_name(number)

    def traceback_path(self, number: int) -> Path:
        """Where a crashed trial's full traceback is (:func:`write_traceback` writes it)."""
        return self.trial_dir(number) / layout.TRACEBACK_FILE

    def exists(self) -> bool:
        return self.study_yaml.is_file()

    # trials
    def write_trial(self, rec: TrialRecord) -> None:
        atomic_write_json(self.trial_dir(rec.number) / layout.TRIAL_JSON, rec.to_dict())

    def read_trial(self, number: int) -> TrialRecord | None:
        p = self.trial_dir(number) / layout.TRIAL_JSON
        if not p.is_file():
            return None
        return TrialRecord.from_dict(read_json(p))

    def trials(self) -> list[TrialRecord]:
        """Every recorded trial, by number."""
        out: list[TrialRecord] = []
        if not self.trials_dir.is_dir():
            return out
        for d in sorted(self.trials_dir.iterdir()):
            p = d / layout.TRIAL_JSON
            if d.is_dir() and p.is_file():
                try:
                    out.append(TrialRecord.from_dict(read_json(p)))
                except (ValueError, TypeError):  # JSONDecodeError is a ValueError, so is an unknown status
                    continue  # never written torn (atomic), but tolerate foreign files
        return sorted(out, key=lambda r: r.number)

    def best_trial(self) -> TrialRecord | None:
        """The search's best trial (:func:`best_of`)."""
        return best_of(self.trials())

    def baseline_trial(self) -> TrialRecord | None:
        """The study's baseline trial (:func:`baseline_of`)."""
        return baseline_of(self.trials())

    def refresh_trials_csv(self) -> None:
        """Rebuild ``trials.csv`` from the per-trial records (atomic)."""
        recs = self.trials()
        hp_names: list[str] = []
        for r in recs:
            for k in r.values:
                if k not in hp_names:
                    hp_names.append(k)
        buf = io.StringIO()
        class_columns = [k for r in recs for k in r.metrics if k.startswith(CLASS_DICE)]
        class_columns = list(dict.fromkeys(class_columns))  # several classes: one column per class, in order
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([*CSV_FIELDS, "baseline", "seed", *hp_names, *class_columns])
        for r in recs:
            w.writerow(
                [
                    r.number,
                    r.status,
                    "" if r.score is None else f"{r.score:.6f}",
                    "" if r.score_se is None else f"{r.score_se:.6f}",
                    "" if r.best_epoch is None else r.best_epoch,
                    r.epochs_run,
                    f"{r.duration_s:.2f}",
                    f"{r.train_s:.2f}",
                    "" if r.train_samples is None else r.train_samples,
                    "" if r.image_size is None else r.image_size,
                    r.reason.replace("\n", " ")[:500],
                    int(r.baseline),
                    r.seed,
                    *[r.values.get(k, "") for k in hp_names],
                    *[_class_cell(r.metrics.get(k)) for k in class_columns],
                ]
            )
        atomic_write_text(self.trials_csv, buf.getvalue())

    def read_history(self, number: int) -> list[dict[str, Any]]:
        p = self.trial_dir(number) / layout.HISTORY_CSV
        if not p.is_file():
            return []
        with p.open() as f:
            return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def ranked(trials: list[TrialRecord]) -> list[TrialRecord]:
    """The complete trials with a finite score, best first (ties: the lower number)."""
    done = [r for r in trials if r.status == TrialState.COMPLETE and r.score is not None and math.isfinite(r.score)]
    return sorted(done, key=lambda r: (-float(r.score or 0.0), r.number))


def best_of(trials: list[TrialRecord]) -> TrialRecord | None:
    """The best trial: the first of :func:`ranked`.

    The one definition that the final stage, the re-evaluation, status, export and the report use.
    """
    done = ranked(trials)
    return done[0] if done else None


def baseline_of(trials: list[TrialRecord]) -> TrialRecord | None:
    """The baseline trial: the first baseline trial that trained, complete or pruned (a pruned one keeps
    its best weights for the verdict and the re-evaluation); a failed one is no baseline.

    The one definition that the final stage, the re-evaluation, status, export and the report use.
    """
    return next((r for r in trials if r.baseline and r.status in (TrialState.COMPLETE, TrialState.PRUNED)), None)


def open_study(results_root: Path | str, name: str) -> StudyDir:
    """The folder of an existing study, or a one-line ConfigError naming the studies that do exist."""
    root = Path(results_root)
    study = StudyDir(root / name)
    if not study.exists():
        known = sorted(p.parent.name for p in root.glob(f"*/{layout.STUDY_YAML}")) if root.is_dir() else []
        hint = f"; studies here: {', '.join(known)}" if known else ""
        raise ConfigError(f"no study {name!r} in {root.resolve()}{hint}")
    return study


def write_traceback(out_dir: Path, exc: BaseException) -> None:
    """Write ``exc``'s full traceback, chained causes included, to ``out_dir/traceback.txt`` (layout.TRACEBACK_FILE) atomically.

    For the trial code's crash handler (the trial's record keeps only a one-line reason);
    ``python -m search status NAME --debug`` prints it. Never raises: a traceback that cannot be
    written is logged instead.
    """
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    path = Path(out_dir) / layout.TRACEBACK_FILE
    try:
        atomic_write_text(path, text)
    except OSError as e:
        logger.warning("could not write %s (%s); the traceback:\n%s", path, e, text.rstrip())


def write_history_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Per-epoch metrics (epoch, loss, hard_dice, …, lr) as CSV, atomically."""
    keys: list[str] = []
    for row in history:
        for k in row:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def _class_cell(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, int | float) else ""


def _num(v: str) -> Any:
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
