"""One training run, in its own process: the task of a holdout trial, a k-fold trial or the final stage
(:mod:`~search.trial.task`, :mod:`~search.trial.kfold`, :mod:`~search.trial.final`), the process that runs it
(:mod:`~search.trial.process`), the training loop and its checkpoints (:mod:`~search.trial.training`), the
step-level stop (:mod:`~search.trial.stop`), the throughput probe (:mod:`~search.trial.probe`) and the
process's TensorFlow set-up (:mod:`~search.trial.runtime`).

Importing this package loads no TensorFlow: the modules that train import Keras inside their functions.
"""
