"""Chaos test of crash consistency: SIGKILL a small study at random moments, resume, check invariants.

A small study (synthetic 32 px data, tiny UNets) runs as ``python -m search run``; after a seeded random
delay the whole process group (driver and worker process) gets SIGKILL, the results folder is checked,
and the same command runs again — ``--kills`` times. Then ``--final-kills`` runs that include the final
stage are killed once the search is done (so the kill lands in the final stage), and a last run goes to
the end. With an Optuna strategy the pruner is ASHA from epoch 1 (``--pruner``), so many trials are
pruned and kills also land in trials that are about to be pruned, or resumed and then pruned.

Invariants checked after every kill and at the end:
- no truncated files: every JSON file parses, every CSV parses with one column count, every line of the
  Optuna journal is JSON, every committed checkpoint loads (leftover ``*.tmp`` files of interrupted
  atomic writes are counted, never read);
- each trial number once (trials.csv, trial records, engine), and every trial's history.csv holds
  epochs 0..n−1 exactly once (a resumed trial continues, it never repeats or skips an epoch);
- statuses in trials.csv agree with the engine's (Optuna trial states, Keras Tuner oracle statuses); a
  kill may leave the engine one step behind the results (it is told after the record is written) —
  allowed after a kill, not at the end;
- at the end: every trial finished, the best trial equals the best completed trial, the engine's best
  has its score, and the final stage tested that trial.

Prints one JSON line per kill and a summary line; exits 1 if an invariant broke.

    python benchmarks/chaos.py --strategy tpe --kills 6 --final-kills 2 --seed 0   # Optuna + ASHA
    python benchmarks/chaos.py --strategy random --kills 6 --seed 1      # Keras Tuner
    python benchmarks/chaos.py --strategy tpe --workers 2 --kills 6       # two drivers, killed together
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OPTUNA_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
KT_STATES = {"COMPLETED": "complete", "FAILED": "failed", "INVALID": "failed", "RUNNING": "running"}


def study_config(data_root: Path, *, name: str, strategy: str, trials: int, epochs: int, seed: int,
                 pruner: str = "asha") -> dict[str, Any]:
    optuna = strategy not in ("random", "bayesian", "hyperband")
    return {
        "study": {"name": name, "strategy": strategy, "pruner": pruner if optuna else "none",
                  "prune_warmup_epochs": 1, "hyperband_factor": 2, "max_trials": trials, "seed": seed,
                  "baselines": True},
        "data": {"root": str(data_root), "image_size": 32, "channels": 1, "batch_size": 8, "num_val_predictions": 2},
        # one pass per epoch and no warm-up: short trials, so kills land in every phase
        "train": {"max_epochs": epochs, "patience": epochs, "samples_per_epoch": None, "warmup_samples": 0},
        "final": {"retrain": True, "num_predictions": 2},
        "search_space": {
            "base_filters": {"type": "choice", "values": [4, 8]},
            "base_kernels": {"value": 3},
            "num_layers": {"type": "int", "min": 2, "max": 3},
            "learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "log": True},
            "dropout_rate": {"value": 0.0},
            "dilation": {"value": 1},
            **{f"augment.{k}": {"value": 0.0} for k in ("hflip", "vflip", "rotation", "shrink", "shear", "elastic",
                                                        "distortion", "barrel", "pincushion")},
        },
    }


# --------------------------------------------------------------------------- invariants


def _csv_rows(path: Path, problems: list[str]) -> list[dict[str, str]]:
    text = path.read_text()
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        problems.append(f"{path}: empty CSV")
        return []
    width = len(rows[0])
    if any(len(r) != width for r in rows[1:]):
        problems.append(f"{path}: rows of different lengths (truncated?)")
    if text and not text.endswith("\n"):
        problems.append(f"{path}: no final newline (truncated?)")
    return [dict(zip(rows[0], r, strict=False)) for r in rows[1:]]


def check_files(root: Path) -> tuple[list[str], int]:
    """Every JSON/CSV/journal/checkpoint under ``root`` is whole. Returns problems and leftover temp files."""
    import numpy as np

    problems: list[str] = []
    tmp = 0
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.name.endswith(".tmp") or ".tmp." in path.name:
            tmp += 1
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".csv":
                _csv_rows(path, problems)
            elif path.name == "optuna.journal":
                data = path.read_bytes()
                if data and not data.endswith(b"\n"):
                    problems.append(f"{path}: last journal line is incomplete")
                for line in data.splitlines():
                    json.loads(line)
            elif path.name == "state.json":
                pass
        except (ValueError, UnicodeDecodeError) as e:
            problems.append(f"{path}: does not parse ({e})")
    for state in root.glob("trials/*/checkpoint/state.json"):
        try:
            tag = json.loads(state.read_text())["tag"]
            for name in (f"weights{tag}.npz", f"optimizer{tag}.npz"):
                with np.load(state.parent / name) as z:
                    [z[k] for k in z.files]
        except Exception as e:  # noqa: BLE001 - any failure to load is the finding
            problems.append(f"{state.parent}: committed checkpoint does not load ({type(e).__name__}: {e})")
    return problems, tmp


def engine_states(study_root: Path, engine: str, name: str) -> dict[int, str]:
    """Trial number → status in the results' words, as the engine's own state says."""
    if engine == "optuna":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        journal = study_root / "engine" / "optuna.journal"
        if not journal.is_file():
            return {}
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        try:
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        except KeyError:
            return {}
        return {t.number: OPTUNA_STATES.get(t.state.name, t.state.name.lower()) for t in trials
                if t.state.name != "WAITING"}
    out: dict[int, str] = {}
    for path in (study_root / "engine" / "keras_tuner").glob("trial_*/trial.json"):
        trial = json.loads(path.read_text())
        out[int(trial["trial_id"])] = KT_STATES.get(trial["status"], trial["status"].lower())
    return out


def check_study(study_root: Path, engine: str, name: str, *, final: bool) -> tuple[list[str], dict[str, Any]]:
    """The invariants; ``final`` adds the end-of-study ones. Returns problems and a description."""
    problems, tmp = check_files(study_root)
    info: dict[str, Any] = {"tmp_files_left": tmp}
    records: dict[int, dict[str, Any]] = {}
    for path in sorted(study_root.glob("trials/*/trial.json")):
        rec = json.loads(path.read_text())
        if rec["number"] in records:
            problems.append(f"trial {rec['number']} recorded twice")
        records[rec["number"]] = rec
    csv_status: dict[int, str] = {}
    if (study_root / "trials.csv").is_file():
        rows = _csv_rows(study_root / "trials.csv", problems)
        numbers = [int(r["number"]) for r in rows]
        if len(numbers) != len(set(numbers)):
            problems.append(f"trials.csv lists a trial twice: {numbers}")
        csv_status = {int(r["number"]): r["status"] for r in rows}
    engine_status = engine_states(study_root, engine, name)
    info.update(
        trials=len(records),
        finished=sum(r["status"] != "running" for r in records.values()),
        pruned=sum(r["status"] == "pruned" for r in records.values()),
        running=sorted(n for n, r in records.items() if r["status"] == "running"),
    )
    for n, rec in records.items():
        history = study_root / "trials" / f"{n:04d}" / "history.csv"
        if history.is_file():
            epochs = [int(float(r["epoch"])) for r in _csv_rows(history, problems)]
            if epochs != list(range(len(epochs))):
                problems.append(f"trial {n}: history epochs {epochs} are not 0..n-1 once each")
            if rec["status"] != "running" and rec["epochs_run"] != len(epochs):
                problems.append(f"trial {n}: epochs_run {rec['epochs_run']} but {len(epochs)} rows in history")
        eng = engine_status.get(n)
        status = rec["status"]
        if eng is None:
            problems.append(f"trial {n} is recorded ({status}) but unknown to the engine")
        elif eng != status and not (not final and eng == "running"):
            # After a kill the engine may still say RUNNING for a trial recorded as finished (the
            # engine is told after the record is written); the resume tells it. Anything else is wrong.
            problems.append(f"trial {n}: results say {status}, engine says {eng}")
        if n in csv_status and csv_status[n] != status and not (not final and csv_status[n] == "running"):
            problems.append(f"trial {n}: trials.csv says {csv_status[n]}, its record says {status}")
    for n, eng in engine_status.items():
        if n not in records and (final or eng != "running"):
            problems.append(f"trial {n} is {eng} in the engine but has no record")
    if final:
        if set(csv_status) != set(records) or any(csv_status[n] != r["status"] for n, r in records.items()):
            problems.append("trials.csv does not match the trial records at the end")
        if sorted(records) != list(range(len(records))):
            problems.append(f"trial numbers are not 0..n-1: {sorted(records)}")
        if info["running"]:
            problems.append(f"trials still running at the end: {info['running']}")
        done = [r for r in records.values() if r["status"] == "complete" and r["score"] is not None]
        if done:
            best = max(done, key=lambda r: (r["score"], -r["number"]))
            info["best"] = {"number": best["number"], "score": best["score"]}
            final_json = study_root / "final" / "final.json"
            if not final_json.is_file():
                problems.append("no final/final.json at the end")
            elif json.loads(final_json.read_text())["trial"] != best["number"]:
                problems.append("the final stage did not test the best completed trial")
            engine_best = engine_best_score(study_root, engine, name)
            if engine_best is not None and abs(engine_best - best["score"]) > 1e-6:
                problems.append(f"engine's best score {engine_best} != best completed trial's {best['score']}")
        else:
            problems.append("no completed trial at the end")
    return problems, info


def engine_best_score(study_root: Path, engine: str, name: str) -> float | None:
    if engine == "optuna":
        import optuna

        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(study_root / "engine" / "optuna.journal")))
        return float(optuna.load_study(study_name=name, storage=storage).best_value)
    scores = [json.loads(p.read_text()).get("score") for p in
              (study_root / "engine" / "keras_tuner").glob("trial_*/trial.json")]
    scores = [s for s in scores if s is not None]
    return max(scores) if scores else None


# --------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", default="tpe", help="tpe, random-optuna, cmaes (Optuna) or random, bayesian (KT)")
    ap.add_argument("--kills", type=int, default=6, help="SIGKILLs before the study may finish (≥ 5)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill moments and the study")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--min-delay", type=float, default=2.0, help="earliest kill, seconds after a start")
    ap.add_argument("--max-delay", type=float, default=14.0, help="latest kill, seconds after a start")
    ap.add_argument("--workers", type=int, default=1, help="run --workers N (parallel drivers, killed together)")
    ap.add_argument("--pruner", default="asha", help="Optuna pruner (asha, median, hyperband, none)")
    ap.add_argument("--final-kills", type=int, default=2, help="kills during the final stage, after the search")
    ap.add_argument("--out", help="work folder (default: a temporary one)")
    ap.add_argument("--timeout", type=float, default=900, help="limit for the last, uninterrupted run (s)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    engine = "keras_tuner" if args.strategy in ("random", "bayesian", "hyperband") else "optuna"
    work = Path(args.out or tempfile.mkdtemp(prefix="unet-search-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import yaml

    from data import write_synthetic_dataset

    data_root = work / "data"
    if not (data_root / "train").is_dir():
        write_synthetic_dataset(data_root, n=40, size=32, seed=0)
    name = f"chaos-{args.strategy}-s{args.seed}"
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump(study_config(data_root, name=name, strategy=args.strategy, trials=args.trials,
                                                  epochs=args.epochs, seed=args.seed, pruner=args.pruner)))
    results = work / "results"
    study_root = results / name
    cmd = [sys.executable, "-m", "search", "--results", str(results), "run", "--config", str(config),
           "--workers", str(args.workers)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t_start = time.monotonic()
    violations: list[str] = []
    kills = finished_early = mid_trial = with_checkpoint = 0
    log = (work / f"{name}.log").open("a")
    for i in range(args.kills):
        delay = rng.uniform(args.min_delay, args.max_delay)
        proc = subprocess.Popen([*cmd, "--no-final"], cwd=REPO, env=env, start_new_session=True,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            phase, checkpointed = _phase(study_root)
            kills += 1
            mid_trial += phase.startswith("trial")
            with_checkpoint += checkpointed
        else:
            phase = "finished"
            finished_early += 1
        problems, info = check_study(study_root, engine, name, final=False) if study_root.is_dir() else ([], {})
        violations += [f"after kill {i}: {p}" for p in problems]
        print(json.dumps({"kill": i, "killed": code is None, "exit_code": code, "after_s": round(delay, 2),
                          "phase": phase, **info, "violations": problems}), flush=True)
        if code is not None:
            if code != 0:
                violations.append(f"run {i} exited with {code} before its kill (see {log.name})")
            break  # the study finished before this kill: nothing left to interrupt
    # Finish the search without the final stage, then kill runs during the final stage.
    final_kills = 0
    if not violations:
        code = subprocess.run([*cmd, "--no-final"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=args.timeout, check=False).returncode
        if code != 0:
            violations.append(f"the search's last run exited with {code} (see {log.name})")
    for i in range(args.final_kills if not violations else 0):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        final_json = study_root / "final" / "final.json"
        deadline = time.monotonic() + args.timeout
        while proc.poll() is None and not (study_root / "final").is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)  # the final folder appears when the final stage starts
        time.sleep(rng.uniform(0.0, 4.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            final_kills += 1
            phase = "final stage" if not final_json.is_file() else "after the final stage"
        else:
            phase = "finished"
        problems, info = check_study(study_root, engine, name, final=False)
        if final_json.is_file():
            try:
                json.loads(final_json.read_text())
            except ValueError as e:
                problems.append(f"final.json does not parse after a kill ({e})")
        violations += [f"after final kill {i}: {p}" for p in problems]
        print(json.dumps({"final_kill": i, "phase": phase, "violations": problems}), flush=True)
        if final_json.is_file():
            final_json.unlink()  # so that the next run does the final stage again
    t_last = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        code = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        code = -9
    if code != 0:
        violations.append(f"the last run exited with {code} (see {log.name})")
    if kills < min(5, args.kills):
        violations.append(f"only {kills} kill(s): the study finished too soon to test resumes (raise --trials)")
    problems, info = check_study(study_root, engine, name, final=True)
    violations += [f"at the end: {p}" for p in problems]
    summary = {"summary": "chaos", "strategy": args.strategy, "engine": engine, "seed": args.seed,
               "workers": args.workers,
               "kills": kills, "kills_mid_trial": mid_trial, "kills_with_a_checkpoint_to_continue": with_checkpoint,
               "final_stage_kills": final_kills, "pruned": info.get("pruned"),
               "finished_before_a_kill": finished_early,
               "last_run_s": round(time.monotonic() - t_last, 1), "wall_s": round(time.monotonic() - t_start, 1),
               **info, "violations": violations, "ok": not violations, "work": str(work)}
    print(json.dumps(summary), flush=True)
    return 0 if not violations else 1


def _phase(study_root: Path) -> tuple[str, bool]:
    """Where the study was when it was killed (startup, between trials, or its running trials
    with their completed epochs), and whether a running trial had a checkpoint to continue from."""
    if not (study_root / "trials").is_dir():
        return "startup", False
    parts, checkpointed = [], False
    for path in sorted(study_root.glob("trials/*/trial.json")):
        try:
            rec = json.loads(path.read_text())
        except ValueError:
            continue
        if rec["status"] == "running":
            state = path.parent / "checkpoint" / "state.json"
            epochs = json.loads(state.read_text())["epoch"] if state.is_file() else 0
            checkpointed |= epochs > 0
            parts.append(f"trial {rec['number']} after {epochs} epoch(s)")
    return ("; ".join(parts) or "between trials"), checkpointed


if __name__ == "__main__":
    sys.exit(main())
