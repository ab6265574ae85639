"""Reading a finished (or running) study back: its config, the trial it chose, its final results.

What ``status``, ``export``, the report, the dashboard and ``predict`` all need, defined once.
"""

from __future__ import annotations

import logging
from typing import Any

import yaml

from search.config import Config, config_from_dict
from search.errors import ConfigError
from search.results.io import read_json
from search.results.records import StudyDir, TrialRecord

__all__ = ["chosen_trial", "read_final", "read_study_config", "read_test_metrics"]

logger = logging.getLogger(__name__)


def read_study_config(study: StudyDir) -> Config:
    """The study's resolved config from ``study.yaml``.

    Raises:
        ConfigError: the study has no readable ``study.yaml``.
    """
    try:
        raw = yaml.safe_load(study.study_yaml.read_text())
    except OSError as e:
        raise ConfigError(f"study {study.name!r}: cannot read {study.study_yaml} ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"study {study.name!r}: {study.study_yaml} is not valid YAML ({e})") from None
    return config_from_dict(raw or {}, source=str(study.study_yaml))


def read_final(study: StudyDir) -> dict[str, Any] | None:
    """``final/final.json`` (the final model's test summary, selection and verdict); None without one."""
    return _read_or_none(study, study.final_json)


def read_test_metrics(study: StudyDir) -> dict[str, Any] | None:
    """``final/test_metrics.json`` (the final model's per-image test metrics); None without one."""
    return _read_or_none(study, study.test_metrics_json)


def _read_or_none(study: StudyDir, path: Any) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:
        logger.warning("study %s: cannot read %s (%s)", study.name, path, e)
        return None
    return data if isinstance(data, dict) else None


def chosen_trial(study: StudyDir, *, purpose: str = "nothing to export") -> TrialRecord:
    """The study's answer: the final stage's pick when it re-evaluated the top trials (``final.json``
    ``selection``), else the best trial (:func:`search.results.best_of`).

    Raises:
        ConfigError: no trial has completed (the message ends with ``purpose``).
    """
    selection = (read_final(study) or {}).get("selection")
    if isinstance(selection, dict) and selection.get("chosen") is not None:
        rec = study.read_trial(int(selection["chosen"]))
        if rec is not None:
            return rec
    best = study.best_trial()
    if best is None:
        raise ConfigError(f"study {study.name!r} has no completed trial; {purpose}")
    return best
