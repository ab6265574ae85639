"""TensorBoard HParams summaries of a study's completed trials (``report`` writes them; imports TensorFlow)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from search.results import StudyDir
from search.vocabulary import TrialState

__all__ = ["write_hparams_summary"]

logger = logging.getLogger(__name__)


def write_hparams_summary(study: StudyDir) -> list[Path]:
    """One TensorBoard HParams summary per completed trial, in ``trials/<n>/tb/hparams`` (rebuilt each call).

    ``tensorboard --logdir results/<study>`` then shows every completed trial's values and score in its
    HParams tab, next to the per-epoch logs that ``train.tensorboard: true`` writes to ``trials/<n>/tb``.

    Returns:
        The folders written.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    written = []
    for rec in study.trials():
        if rec.status != TrialState.COMPLETE or rec.score is None or not math.isfinite(float(rec.score)):
            continue
        tb = study.trial_dir(rec.number) / "tb"
        final = tb / "hparams"
        tmp = tb / f".hparams.{rec.number}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tb.mkdir(parents=True, exist_ok=True)
        writer = tf.summary.create_file_writer(str(tmp))
        with writer.as_default():
            hp.hparams({k: _hparam_value(v) for k, v in rec.values.items()}, trial_id=f"trial {rec.number:04d}")
            step = int(rec.best_epoch or 0)
            tf.summary.scalar("score", float(rec.score), step=step)
            tf.summary.scalar("epochs_run", float(rec.epochs_run), step=step)
        writer.close()
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        written.append(final)
    logger.info("HParams summaries written for %d completed trials of %s", len(written), study.name)
    return written


def _hparam_value(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
