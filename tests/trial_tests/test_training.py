"""Single-configuration training: it learns, it is repeatable, NaN is a failure, checkpoints resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data import AugmentSpec, synthetic_arrays
from models import UNetSpec
from search.config.specs import TrainSpec, TrialSpecs
from search.errors import TrialCollapsed, TrialFailed
from search.trial.training import Checkpoint, LoopState, evaluate_model, lr_schedule_from_history, train_model


def _data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, masks = synthetic_arrays(n=n, size=size, seed=seed)
    return images, masks


def _specs(*, size: int = 32, levels: int = 3, filters: int = 8, lr: float = 3e-3, epochs: int = 2,
           patience: int = 10, seed: int = 0, **train: Any) -> TrialSpecs:
    return TrialSpecs(
        model=UNetSpec(image_size=size, channels=1, base_filters=filters, base_kernels=3, num_layers=levels,
                       dilation=1, dropout_rate=0.0),
        augment=AugmentSpec.none(),
        train=TrainSpec(**{"learning_rate": lr, "batch_size": 8, "max_epochs": epochs, "patience": patience,
                           "seed": seed, "reducer_patience": 4, **train}),
    )


@pytest.mark.slow
def test_tiny_unet_learns_synthetic_shape() -> None:
    """A 64 px, 4-level UNet reaches validation hard dice ≥ 0.9 within 60 epochs."""
    ti, tm = _data(96, 64, seed=1)
    vi, vm = _data(16, 64, seed=2)
    specs = _specs(size=64, levels=4, filters=8, lr=3e-3, epochs=60, patience=12)
    result = train_model(specs, train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm)
    assert result.best_score >= 0.9, result.history[-1]
    # the returned model holds the best epoch's weights: re-evaluating gives the best score
    metrics = evaluate_model(result.model, vi, vm, batch_size=8, loss="bce_dice")
    assert metrics["hard_dice"] == pytest.approx(result.best_score, abs=1e-4)
    assert [h["epoch"] for h in result.history] == list(range(result.epochs_run))


def test_test_metrics_record_the_predicted_and_true_foreground_areas() -> None:
    """`status` cautions about a final model that paints many times the true area (issue 19.16c)."""
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[:, 4:6, 4:6] = 1  # 4 of 256 pixels per image
    painted = np.zeros((2, 16, 16, 1), np.float32)
    painted[:, 2:12, 2:12] = 0.9  # 100 of 256 pixels above 0.5

    def model(batch: np.ndarray, training: bool = False) -> np.ndarray:
        return painted[: len(batch)]

    metrics = evaluate_model(model, np.zeros((2, 16, 16, 1), np.uint8), masks, batch_size=2, loss="bce_dice")
    assert metrics["true_fg_fraction"] == pytest.approx(4 / 256)
    assert metrics["pred_fg_fraction"] == pytest.approx(100 / 256)


def test_same_seed_same_history() -> None:
    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)
    runs = [train_model(_specs(seed=5), train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm)
            for _ in range(2)]
    a, b = ([(h["loss"], h["val_hard_dice"]) for h in r.history] for r in runs)
    assert a == b
    other = train_model(_specs(seed=6), train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm)
    assert [h["loss"] for h in other.history] != [x[0] for x in a]


def test_the_train_step_is_traced_once() -> None:
    """The optimizer's variables exist before the first step, so tf.function traces the step once, not
    twice (a second trace is seconds of every trial's start-up on a real model: BENCHMARKS.md B12b)."""
    from data import train_dataset
    from search.trial.training import compile_model

    specs = _specs(size=32, levels=2, filters=4)
    model = compile_model(specs)
    traces = []
    step = model.train_step

    def counted(data: Any) -> Any:
        traces.append(1)  # runs only while tracing: the traced graph does not call Python
        return step(data)

    model.train_step = counted
    images, masks = _data(16, 32, seed=1)
    for epoch in range(2):
        ds = train_dataset(images, masks, batch_size=8, augment=None, seed=0, epoch=epoch)
        model.fit(ds, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
    assert len(traces) == 1


def test_evaluate_model_reports_soft_dice_and_loss_as_training_logs_them() -> None:
    """Test metrics and the val_* columns of history.csv are one definition: per batch of batch_size images
    (soft dice: the mean over batches; loss: weighted by batch size), not pooled over the split (review §14)."""
    from data import eval_dataset
    from models import soft_dice
    from search.trial.training import compile_model, predict_probabilities

    vi, vm = _data(8, 32, seed=4)
    vm = _with_empty_masks(vm, 2)  # batches with and without foreground: pooled and per-batch dice differ
    model = compile_model(_specs())
    logged = model.evaluate(eval_dataset(vi, vm, batch_size=3), verbose=0, return_dict=True)
    tested = evaluate_model(model, vi, vm, batch_size=3, loss="bce_dice")
    assert tested["soft_dice"] == pytest.approx(logged["dice_coef"], rel=1e-5)
    assert tested["loss"] == pytest.approx(logged["loss"], rel=3e-6)  # an unweighted mean is 3e-5 off
    pooled = soft_dice(vm.astype(np.float32), predict_probabilities(model, vi, batch_size=3))
    assert abs(pooled - tested["soft_dice"]) > 1e-3  # the old definition, visibly different here


def test_nan_loss_is_a_trial_failure() -> None:
    """A weight turning NaN mid-epoch (what a diverging run does) ends the run as TrialFailed."""
    import keras

    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if batch == 0:
                # the sigmoid head: no fused ReLU after it (oneDNN's fused ReLU maps NaN to 0)
                w = self.model.get_layer("head").bias
                w.assign(w * float("nan"))

    with pytest.raises(TrialFailed, match=r"loss became nan at epoch 0"):
        train_model(_specs(epochs=4), train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm,
                    callbacks=[Poison()])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_checkpoint_resume_continues_from_last_epoch(tmp_path: Path, dropout: float) -> None:
    """3 epochs, then 'crash' and resume to 5 == 5 epochs straight (same history, same weights), with
    dropout too: the checkpoint carries the dropout layers' seed-generator states."""
    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)

    def with_dropout(**kw: Any) -> TrialSpecs:
        s = _specs(**kw)
        return TrialSpecs(model=dataclasses.replace(s.model, dropout_rate=dropout), augment=s.augment, train=s.train)

    straight = train_model(with_dropout(epochs=5, seed=9), train_images=ti, train_masks=tm, valid_images=vi,
                           valid_masks=vm)
    ckpt = Checkpoint(tmp_path / "ckpt")
    seen: list[int] = []

    class Crash(Exception):
        pass

    def crash_after_3(epoch: int, logs: dict) -> None:
        seen.append(epoch)
        if epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train_model(with_dropout(epochs=5, seed=9), train_images=ti, train_masks=tm, valid_images=vi, valid_masks=vm,
                    checkpoint=ckpt, on_epoch=crash_after_3)
    resumed = train_model(with_dropout(epochs=5, seed=9), train_images=ti, train_masks=tm, valid_images=vi,
                          valid_masks=vm, checkpoint=ckpt, on_epoch=lambda e, logs: seen.append(e))
    assert seen == [0, 1, 2, 3, 4]  # epochs 0-2 before the crash, 3-4 after: none repeated
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([h["loss"] for h in resumed.history], [h["loss"] for h in straight.history],
                               rtol=1e-5)
    for w1, w2 in zip(resumed.model.get_weights(), straight.model.get_weights(), strict=True):
        np.testing.assert_allclose(w1, w2, rtol=1e-5, atol=1e-6)


def test_a_ten_image_dataset_trains_exactly_steps_per_epoch_steps() -> None:
    """train.steps_per_epoch works on a dataset smaller than an epoch: the pipeline repeats."""
    from conftest import step_counter

    ti, tm = _data(10, 32, seed=3)
    vi, vm = _data(4, 32, seed=4)
    count, counts = step_counter()
    result = train_model(_specs(epochs=2, steps_per_epoch=5), train_images=ti, train_masks=tm,
                         valid_images=vi, valid_masks=vm, callbacks=[count])
    assert counts == [5, 5]  # 5 steps x batch 8 = 40 samples from 10 images, each epoch
    assert result.epochs_run == 2


def test_a_fixed_epoch_retrain_replays_the_learning_rate_schedule() -> None:
    """train_on_valid: the retrain has no validation split, so the reducer cannot fire; the chosen trial's
    per-epoch rates are replayed (review §10a). A rate of 0 in epochs 1-2 leaves the epoch-0 weights."""
    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)
    common = {"train_images": ti, "train_masks": tm, "valid_images": vi, "valid_masks": vm}
    replay = train_model(_specs(epochs=9, seed=2), fixed_epochs=3, lr_schedule=(3e-3, 0.0), **common)
    assert [h["lr"] for h in replay.history] == [3e-3, 0.0, 0.0]  # past its end: the last rate
    one = train_model(_specs(epochs=9, seed=2), fixed_epochs=1, **common)
    for a, b in zip(replay.model.get_weights(), one.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="lr_schedule needs fixed_epochs"):
        train_model(_specs(), lr_schedule=(1e-3,), **common)


def test_the_schedule_is_read_from_the_trial_history() -> None:
    rows = [{"epoch": e, "lr": lr, "val_hard_dice": d}
            for e, (lr, d) in enumerate([(1e-3, 0.1), (1e-3, 0.2), (3e-4, 0.25), (9e-5, 0.3), (9e-5, 0.3)])]
    assert lr_schedule_from_history(rows, epochs=4) == (1e-3, 1e-3, 3e-4, 9e-5)
    assert lr_schedule_from_history(rows, epochs=7) == (1e-3, 1e-3, 3e-4, 9e-5, 9e-5, 9e-5, 9e-5)
    assert lr_schedule_from_history([{"epoch": 0, "loss": 0.5}], epochs=3) is None  # no lr recorded
    # k-fold: the fold whose best epoch is the trial's (the median fold) gives the schedule
    folds = [{**r, "fold": 0.0, "val_hard_dice": 0.5 if r["epoch"] == 0 else 0.1} for r in rows]
    folds += [{**r, "fold": 1.0, "lr": r["lr"] / 10} for r in rows]
    assert lr_schedule_from_history(folds, epochs=4) == tuple(r["lr"] / 10 for r in rows[:4])
    assert lr_schedule_from_history(folds, epochs=1) == (1e-3,)


def test_progress_while_the_score_is_zero_counts_loss_and_soft_dice() -> None:
    state = LoopState()
    assert state.progress(score=0.0, loss=0.8, soft=0.01, fg=0.0) == (True, True)  # the first epoch
    state.best_score = 0.0
    assert state.progress(score=0.0, loss=0.7, soft=0.01, fg=0.0) == (False, True)  # loss fell: still learning
    assert state.progress(score=0.0, loss=0.7, soft=0.02, fg=0.0) == (False, True)  # soft dice rose
    assert state.progress(score=0.0, loss=0.7, soft=0.02, fg=0.0) == (False, False)  # nothing moved
    assert state.progress(score=0.0, loss=0.7, soft=0.02, fg=0.1) == (False, True)  # found foreground
    # once there is a score, only the score counts
    assert state.progress(score=0.0, loss=0.1, soft=0.9, fg=0.1) == (False, False)
    assert state.progress(score=0.31, loss=0.5, soft=0.1, fg=0.1) == (True, True)


def _probe_logs(epoch: int, *, falling: bool) -> dict[str, float]:
    """The review's progress_probe: 10 validation slices, 3 with an empty mask, nothing predicted. The
    per-image dice is 0.3 every epoch (the empty slices score 1); loss falls and soft dice rises, or both stay."""
    return {"loss": 0.7, "val_loss": 0.8 * 0.97 ** epoch if falling else 0.8,
            "val_dice_coef": 0.01 + 0.01 * epoch if falling else 0.01,
            "val_hard_dice": 0.3, "val_fg_dice": 0.0, "val_pred_fg": 0.0}


def _judge(logs_of: Any, epochs: int, spec: TrainSpec, *, judge_from: int = 2) -> tuple[LoopState, list[Any]]:
    state, judged = LoopState(lr=spec.learning_rate), []
    for e in range(epochs):
        logs = logs_of(e)
        state.history.append({"epoch": e, **logs, "lr": state.lr})
        judged.append(state.end_epoch(logs, score=logs["val_hard_dice"], fg=logs["val_fg_dice"], spec=spec,
                                      judge_from=judge_from, check_collapse=True))
    return state, judged


def test_empty_validation_masks_do_not_switch_off_the_zero_score_rule() -> None:
    """A model that predicts nothing but is still learning, on a split with empty masks: progress every
    epoch, so no early stop, no learning-rate cut, no pruner question, no collapse (review §4)."""
    spec = TrainSpec(learning_rate=1e-3, patience=2, reducer_patience=2, collapse_epochs=3)
    state, judged = _judge(lambda e: _probe_logs(e, falling=True), 8, spec)
    assert [j.progressed for j in judged] == [True] * 8
    assert (state.wait, state.reducer_wait, state.lr) == (0, 0, 1e-3)
    assert not any(j.lr_reduced or j.judgeable or j.collapse for j in judged)
    assert (state.best_score, state.best_epoch, state.has_score) == (0.3, 0, False)


def test_a_model_that_predicts_nothing_on_a_split_with_empty_masks_is_collapsed() -> None:
    spec = TrainSpec(learning_rate=1e-3, patience=10, reducer_patience=10, collapse_epochs=3)
    _, judged = _judge(lambda e: _probe_logs(e, falling=False), 4, spec)
    assert [j.collapse is not None for j in judged] == [False, False, True, True]
    assert "predicted no foreground on the validation split for 3 epochs" in str(judged[2].collapse)
    assert not judged[2].judgeable


def test_once_foreground_is_found_only_the_score_counts() -> None:
    """The zero-score rule ends with the first foreground hit; then the reducer and patience count."""
    spec = TrainSpec(learning_rate=1e-3, patience=3, reducer_patience=2, collapse_epochs=3)

    def logs(e: int) -> dict[str, float]:
        return {**_probe_logs(e, falling=True), "val_fg_dice": 0.2, "val_pred_fg": 0.01}

    state, judged = _judge(logs, 4, spec)
    assert [j.progressed for j in judged] == [True, False, False, False]
    assert state.has_score and state.wait == 3 and state.lr == pytest.approx(3e-4)
    assert [j.judgeable for j in judged] == [False, True, True, True]  # judge_from 2 completed epochs


class _StartBelowThreshold:
    """A callback factory: the head's bias starts at -8, so every prediction is background at first."""

    @staticmethod
    def make() -> Any:
        import keras

        class Start(keras.callbacks.Callback):
            done = False

            def on_train_begin(self, logs: dict | None = None) -> None:
                if not Start.done:  # fit runs once per epoch; only the first
                    head = self.model.get_layer("head")
                    head.bias.assign(keras.ops.full_like(head.bias, -8.0))
                    Start.done = True

        return Start()


def test_no_early_stop_while_the_score_is_zero_but_the_loss_still_falls() -> None:
    """patience 1: by the hard dice alone (0, 0, 0, …) this run would stop after 2 epochs."""
    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)
    result = train_model(_specs(epochs=4, patience=1, lr=1e-3), train_images=ti, train_masks=tm,
                         valid_images=vi, valid_masks=vm, callbacks=[_StartBelowThreshold.make()])
    curve = [(h["val_hard_dice"], h["val_loss"]) for h in result.history]
    assert [d for d, _ in curve] == [0.0] * 4, curve
    assert result.epochs_run == 4 and all(b[1] < a[1] for a, b in zip(curve, curve[1:], strict=False)), curve


def test_no_early_stop_during_the_warm_up() -> None:
    """A learning rate of 0 (nothing moves): patience 1 stops at epoch 2, or at the warm-up's end.

    The rule (README, "Budgets, warm-up …"): epochs without progress are counted during the warm-up
    too, and early stopping is checked from its end on; so with a warm-up longer than the patience, a
    trial without progress stops at the first epoch after the warm-up (4), not `patience` epochs later (5).
    """
    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)
    quick = train_model(_specs(epochs=6, patience=1, lr=0.0), train_images=ti, train_masks=tm,
                        valid_images=vi, valid_masks=vm)
    warm = train_model(_specs(epochs=6, patience=1, lr=0.0, warmup_samples=16 * 4), train_images=ti,
                       train_masks=tm, valid_images=vi, valid_masks=vm)
    assert (quick.epochs_run, quick.stop_reason) == (2, "early_stopping")
    assert (warm.epochs_run, warm.stop_reason) == (4, "early_stopping")  # 4 one-pass epochs of 16 samples


def test_a_model_that_predicts_only_background_with_a_flat_loss_is_collapsed() -> None:
    """The head's bias pinned far negative: no foreground, a loss that cannot move: stopped as collapsed."""
    import keras

    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)

    class Pin(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            head = self.model.get_layer("head")
            head.bias.assign(keras.ops.full_like(head.bias, -50.0))
            head.kernel.assign(keras.ops.zeros_like(head.kernel))

    seen: list[dict] = []
    with pytest.raises(TrialCollapsed, match=r"collapsed: predicted no foreground .* for 3 epochs") as info:
        train_model(_specs(epochs=20, collapse_epochs=3, patience=100), train_images=ti, train_masks=tm,
                    valid_images=vi, valid_masks=vm, callbacks=[Pin()], on_epoch=lambda e, logs: seen.append(logs))
    assert info.value.epochs_run == 3 and info.value.best_score == 0.0
    assert [h["val_pred_fg"] for h in seen] == [0.0, 0.0, 0.0]
    assert not seen[-1]["judgeable"]  # the pruner is not asked about a collapsed epoch


def _with_empty_masks(masks: np.ndarray, n_empty: int) -> np.ndarray:
    out = masks.copy()
    out[:n_empty] = 0
    return out


def test_with_empty_validation_masks_a_slow_start_is_not_stopped_and_a_collapse_is_caught() -> None:
    """Keras level, 3 of 8 validation masks empty (the per-image dice of "nothing" is 0.375 from epoch 0):
    a slow starter (head bias -8, loss falling) is not stopped by patience 1 nor its learning rate cut
    (reducer patience 1); a head pinned to background is stopped as collapsed (review §4)."""
    import keras

    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)
    vm = _with_empty_masks(vm, 3)
    slow = train_model(_specs(epochs=4, patience=1, lr=1e-3, reducer_patience=1), train_images=ti, train_masks=tm,
                       valid_images=vi, valid_masks=vm, callbacks=[_StartBelowThreshold.make()])
    assert [h["val_hard_dice"] for h in slow.history] == [3 / 8] * 4, slow.history
    assert [h["val_fg_dice"] for h in slow.history] == [0.0] * 4
    assert slow.epochs_run == 4 and [h["lr"] for h in slow.history] == [1e-3] * 4

    class Pin(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            head = self.model.get_layer("head")
            head.bias.assign(keras.ops.full_like(head.bias, -50.0))
            head.kernel.assign(keras.ops.zeros_like(head.kernel))

    with pytest.raises(TrialCollapsed, match=r"for 3 epochs") as info:
        train_model(_specs(epochs=5, collapse_epochs=3, patience=100), train_images=ti, train_masks=tm,
                    valid_images=vi, valid_masks=vm, callbacks=[Pin()])
    assert info.value.epochs_run == 3 and info.value.best_score == pytest.approx(3 / 8)


def test_learning_model_is_not_collapsed() -> None:
    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)
    result = train_model(_specs(epochs=6, collapse_epochs=2, patience=100), train_images=ti, train_masks=tm,
                         valid_images=vi, valid_masks=vm)
    assert result.epochs_run == 6



def test_a_kill_before_the_commit_leaves_the_committed_best_weights(tmp_path: Path) -> None:
    """The best weights belong to the committed state: an uncommitted newer best is never paired with it."""
    ti, tm = _data(16, 32, seed=3)
    vi, vm = _data(8, 32, seed=4)
    ckpt = Checkpoint(tmp_path / "ckpt")
    result = train_model(_specs(epochs=2, seed=9), train_images=ti, train_masks=tm, valid_images=vi,
                         valid_masks=vm, checkpoint=ckpt)
    committed = json.loads(ckpt.state_path.read_text())
    best_before = [w.copy() for w in ckpt.load(result.model)[1]]
    # a later epoch improved and wrote its best file, then the process died before state.json was written
    Path(ckpt.folder / "best7.npz").write_bytes(b"not a committed file")
    np.savez(ckpt.folder / "best.npz", *[w + 1 for w in best_before])  # an old-style file: ignored too
    _, best_after = ckpt.load(result.model)
    assert best_after is not None and committed["best_file"] == f"best{committed['best_epoch']}.npz"
    for a, b in zip(best_before, best_after, strict=True):
        np.testing.assert_array_equal(a, b)
