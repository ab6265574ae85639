"""The data commands through the CLI: synth, check (clean and broken datasets), prepare's bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from search.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def test_synth_then_check_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ds"
    assert main(["data", "synth", str(out), "--n", "12", "--size", "32", "--seed", "3"]) == 0
    assert {"test", "train", "valid"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()
    assert main(["data", "check", str(out), "--size", "32", "--channels", "1"]) == 0
    text = capsys.readouterr().out
    assert "content hash:" in text and "OK" in text


def test_check_reports_every_problem_and_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ds"
    assert main(["data", "synth", str(out), "--n", "12", "--size", "32"]) == 0
    masks = sorted((out / "train" / "masks").iterdir())
    masks[0].unlink()  # an image without a mask
    (out / "valid" / "images" / "broken.png").write_bytes(b"not a png")
    (out / "valid" / "masks" / "broken.png").write_bytes(b"not a png either")
    capsys.readouterr()
    assert main(["data", "check", str(out), "--size", "32", "--channels", "1"]) == 3
    text = capsys.readouterr().out
    assert masks[0].name in text  # names the image whose mask is missing
    assert "broken.png" in text


def test_run_without_dataset_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--results", str(tmp_path / "r"), "run", "--data", str(tmp_path / "missing"), "--no-final"])
    assert code == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the one-line study banner
    assert last.startswith("error: no dataset at") and "missing" in last and "--demo" in last
    assert not (tmp_path / "r" / "alcapa" / "trials").exists()  # nothing half-written


def test_prepare_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "prepare", "--volumes", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--split", "0.5,0.5"]) == 2
    assert "--split" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real datasets not found at {SHARED}")
@pytest.mark.parametrize("name", ["chd-ct-aorta", "isbi-em-membrane"])
def test_check_real_datasets(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / name
    shutil.copytree(SHARED / name, root)  # read-only source; check writes nothing anyway
    assert main(["data", "check", str(root), "--size", "512", "--channels", "1"]) == 0
    assert "train:" in capsys.readouterr().out
