"""The command-line parser: every command is registered, and a module that cannot be imported is an error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from search.cli import commands

COMMANDS = {"run", "final", "worker", "status", "export", "report", "dashboard", "predict"}


def _commands() -> set[str]:
    return set(commands())


def test_every_command_is_registered() -> None:
    assert COMMANDS <= _commands()


def test_a_command_module_that_cannot_be_imported_is_not_silently_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    import search.cli

    monkeypatch.setitem(sys.modules, "search.cli.results_cmds", None)  # importing it raises ImportError
    monkeypatch.delattr(search.cli, "results_cmds", raising=False)
    with pytest.raises(ImportError):
        _commands()


def test_demo_with_a_config_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--config my.yaml --demo` silently replaced the file's search space with the demo's (issue 19.16d)."""
    from search.cli import EXIT_CONFIG, main

    path = tmp_path / "my.yaml"
    path.write_text("search_space:\n  base_filters: {type: choice, values: [32, 64]}\n")
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", "--config", str(path), "--demo"]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert "--demo cannot be combined with --config" in err and len(err.splitlines()) == 1
    assert not results.exists()  # refused before the demo data is written


def test_tensorflow_start_up_noise_is_held_back_and_real_errors_are_not(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`predict` printed "failed call to cuInit …" and other start-up lines (issue 19.16i)."""
    import os

    from search.cli import quiet

    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "I0000 00:00:1.5 1 port.cc:153] oneDNN custom operations are on. You may see slightly different\n"
             "I0000 00:00:1.5 1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n")
    cuinit = "E0000 00:00:1.6 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
    real = "E0000 00:00:1.7 1 some_kernel.cc:9] Could not load dynamic library 'libfoo.so'\n"
    for gpu, shown in ((False, real), (True, cuinit + real)):
        monkeypatch.setattr(quiet, "_gpu_expected", lambda gpu=gpu: gpu)
        capfd.readouterr()
        with quiet.filtered_stderr():
            os.write(2, (noise + cuinit + real).encode())
        assert capfd.readouterr().err == shown
    monkeypatch.undo()  # the real check: no GPU asked for
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert quiet.is_startup_noise(cuinit)  # no GPU asked for: cuInit failing is expected


@pytest.mark.slow
def test_predict_and_report_print_no_tensorflow_start_up_noise(tmp_path: Path) -> None:
    """`report` needs no TensorFlow at all; `predict` loads it with the noise held back (issue 19.16i)."""
    import os
    import subprocess

    import cv2
    import numpy as np
    from conftest import REPO
    from fake_study import build_study

    from models import build_model
    from search.config.specs import specs_from_values
    from search.results import read_study_config

    study = build_study(tmp_path, name="p", n_complete=1, n_pruned=0, n_failed=0, predictions=False)
    rec = study.read_trial(0)
    assert rec is not None
    build_model(specs_from_values(read_study_config(study), rec.values, seed=0).model).save(
        str(study.final_dir / "model.keras"))
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((40, 40), np.uint8))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys; from search.cli import main; rc = main(sys.argv[1:]); "
            "print('tensorflow loaded' if 'tensorflow' in sys.modules else 'no tensorflow'); sys.exit(rc)")
    for args, loads_tf in ((["report", "p"], False),
                           (["predict", "p", "--images", str(tmp_path / "images"), "--out", str(tmp_path / "out")],
                            True)):
        out = subprocess.run([sys.executable, "-c", code, "--results", str(tmp_path), *args], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().endswith("tensorflow loaded" if loads_tf else "no tensorflow"), out.stdout
        for noise in ("absl::InitializeLog", "oneDNN", "cuInit", "cuda drivers"):
            assert noise not in out.stderr, out.stderr
