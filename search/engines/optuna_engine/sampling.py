"""Optuna's sampler and pruner of a study: the strategy (tpe, cmaes, gp, random-optuna) and the pruner."""

from __future__ import annotations

import optuna

from search.config import Config
from search.errors import ConfigError

__all__ = ["make_pruner", "make_sampler"]


def make_sampler(cfg: Config, *, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The strategy's sampler; each driver of a parallel study gets its own seed (``seed_offset``)."""
    seed = cfg.study.seed + seed_offset
    strategy = cfg.study.strategy
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=5)
    if strategy == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, n_startup_trials=3)
    if strategy == "gp":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ConfigError(
                "study.strategy 'gp': Optuna's GPSampler needs torch; install it with pip install -e '.[gp]'"
            ) from None
        return optuna.samplers.GPSampler(seed=seed)
    if strategy == "random-optuna":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"study.strategy {strategy!r} is not an Optuna strategy")


def make_pruner(cfg: Config) -> optuna.pruners.BasePruner:
    """The study's pruner. ``study.hyperband_factor`` is the reduction factor of both ASHA and Hyperband
    (the name predates ASHA here; it stays so that saved studies keep loading)."""
    pruner = cfg.pruner
    max_epochs = cfg.rule("max_epochs")
    if pruner == "none":
        return optuna.pruners.NopPruner()
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=cfg.prune_warmup)
    if pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=cfg.prune_warmup, reduction_factor=cfg.study.hyperband_factor
        )
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.prune_warmup, max_resource=max_epochs, reduction_factor=cfg.study.hyperband_factor
        )
    return optuna.pruners.NopPruner()
