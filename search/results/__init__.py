"""What is on disk: the results contract, ``results/<study>/`` (DESIGN §5).

- :mod:`~search.results.layout`: every file and folder name of a study (the only place that spells them);
- :mod:`~search.results.io`: atomic writes and reads;
- :mod:`~search.results.records`: ``TrialRecord``, ``StudyDir``, the best trial and the baseline (one
  definition each), ``trials.csv`` and the per-trial files;
- :mod:`~search.results.readers`: a study read back (its config, the trial it chose, its final results).

Each trial's record of truth is ``trials/<n>/trial.json``; ``trials.csv`` is rebuilt from those files, so
concurrent workers never lose each other's rows.
"""

from __future__ import annotations

from search.results import layout
from search.results.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from search.results.readers import chosen_trial, read_final, read_study_config, read_test_metrics
from search.results.records import (
    CSV_FIELDS,
    SCHEMA_VERSION,
    StudyDir,
    TrialRecord,
    baseline_of,
    best_of,
    open_study,
    ranked,
    write_history_csv,
    write_traceback,
)

__all__ = [
    "CSV_FIELDS",
    "SCHEMA_VERSION",
    "StudyDir",
    "TrialRecord",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "baseline_of",
    "best_of",
    "chosen_trial",
    "layout",
    "open_study",
    "ranked",
    "read_final",
    "read_json",
    "read_study_config",
    "read_test_metrics",
    "write_history_csv",
    "write_traceback",
]
