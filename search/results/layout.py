"""Every name in a study's folder, ``results/<study>/`` (DESIGN §5): the only place that spells them.

    results/<study>/
        study.yaml            the resolved config; its presence makes the folder a study
        environment.json      versions and machine of every run
        data_fingerprint.json what the data was (files, sizes, mask rule)
        folds.json            k-fold: the recorded fold plan
        budget.json           throughput and a record of every run (search/study/budget.py)
        trials.csv            one row per trial, rebuilt from the trial.json files
        report.html
        .lock                 held by the driver (search/study/folder.py)
        engine/               the engine's own storage (Optuna journal and its locks, Keras Tuner oracle,
                              dashboard.journal)
        trials/<nnnn>/        trial.json, values.json, history.csv, scores.json, best.weights.h5,
                              predictions/, checkpoint/ (while it runs), traceback.txt (if it crashed),
                              tb/ (train.tensorboard),
                              fold<k>/ (k-fold: fold.json, best.weights.h5, checkpoint/, ...)
        final/                final.json, test_metrics.json, model.keras, best_config.yaml, predictions/,
                              selection.json and reeval/ (re-evaluation), candidate_test.json (on request)

The checkpoint folder's own files belong to its format (search/trial/training.py: Checkpoint).
"""

from __future__ import annotations

from pathlib import Path

# the study's folder
STUDY_YAML = "study.yaml"
ENVIRONMENT_JSON = "environment.json"
FINGERPRINT_JSON = "data_fingerprint.json"
FOLDS_FILE = "folds.json"
BUDGET_FILE = "budget.json"
TRIALS_CSV = "trials.csv"
REPORT_HTML = "report.html"
LOCK_FILE = ".lock"
WRITE_TEST = ".write-test"  # made and removed at once: is the folder writable? (results/io.py)
ENGINE_DIR = "engine"
TRIALS_DIR = "trials"
FINAL_DIR = "final"

# engine/
JOURNAL_FILE = "optuna.journal"  # Optuna's storage without study.storage
JOURNAL_LOCK = ".journal.lock"  # Optuna's journal file (search/engines/optuna_engine/storage.py)
STUDY_LOCK = ".study.lock"  # creating the Optuna study once (search/engines/optuna_engine/coordination.py)
KT_TRIAL_JSON = "trial.json"  # Keras Tuner's own record of a trial (its format), engine/<project>/trial_<id>/
DASHBOARD_JOURNAL = "dashboard.journal"  # the results mirrored for optuna-dashboard (search/tools/dashboard.py)

# trials/<nnnn>/ (and each fold<k>/ of a k-fold trial)
TRIAL_JSON = "trial.json"  # the trial's record of truth
VALUES_JSON = "values.json"  # the hyperparameters it trained with
HISTORY_CSV = "history.csv"
SCORES_FILE = "scores.json"  # per-image validation dice at the best epoch
BEST_WEIGHTS = "best.weights.h5"
PREDICTIONS_DIR = "predictions"
CHECKPOINT_DIR = "checkpoint"
TRACEBACK_FILE = "traceback.txt"  # the full traceback of a trial that crashed
FOLD_FILE = "fold.json"  # fold<k>/: that fold's result
TENSORBOARD_DIR = "tb"  # with train.tensorboard

# final/
FINAL_JSON = "final.json"
TEST_METRICS_JSON = "test_metrics.json"
MODEL_KERAS = "model.keras"
BEST_CONFIG_YAML = "best_config.yaml"
BASELINE_HISTORY_CSV = "baseline_history.csv"
REEVAL_DIR = "reeval"  # the re-evaluation's runs: final/reeval/<nnnn>-s<j>/
SELECTION_FILE = "selection.json"  # the re-evaluation's choice
RUN_FILE = "run.json"  # reeval/<nnnn>-s<j>/run.json: one run
CANDIDATE_TEST_FILE = "candidate_test.json"  # only with `final --show-candidate-test`


def trial_dir_name(number: int) -> str:
    return f"{number:04d}"


def fold_dir(trial_dir: Path | str, fold: int) -> Path:
    """The folder of fold ``fold`` of a k-fold trial (or of the final stage's k-fold ensemble)."""
    return Path(trial_dir) / f"fold{fold}"
