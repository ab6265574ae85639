"""TensorBoard HParams summaries of a study's completed trials (``report`` writes them).

Written with TensorBoard's own protobufs and event writer, not ``tf.summary``: ``report`` then never
imports TensorFlow (3-5 s, and its start-up noise such as "failed call to cuInit" on a machine without GPU).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from search.results import StudyDir
from search.results.layout import TENSORBOARD_DIR
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
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb

    # RecordWriter, not EventFileWriter: that one goes through tf.io.gfile, which imports TensorFlow.
    from tensorboard.summary.writer.record_writer import RecordWriter

    written = []
    for rec in study.trials():
        if rec.status != TrialState.COMPLETE or rec.score is None or not math.isfinite(float(rec.score)):
            continue
        tb = study.trial_dir(rec.number) / TENSORBOARD_DIR
        final = tb / "hparams"
        tmp = tb / f".hparams.{rec.number}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tb.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        step = int(rec.best_epoch or 0)
        hparams = hparams_pb({k: _hparam_value(v) for k, v in rec.values.items()}, trial_id=f"trial {rec.number:04d}")
        events = [Event(wall_time=time.time(), file_version="brain.Event:2"),
                  Event(wall_time=time.time(), step=0, summary=hparams),
                  *(Event(wall_time=time.time(), step=step, summary=scalar_pb(tag, value))
                    for tag, value in (("score", float(rec.score)), ("epochs_run", float(rec.epochs_run))))]
        with (tmp / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}").open("wb") as f:
            writer = RecordWriter(f)
            for event in events:
                writer.write(event.SerializeToString())
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        written.append(final)
    logger.info("HParams summaries written for %d completed trials of %s", len(written), study.name)
    return written


def _hparam_value(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
