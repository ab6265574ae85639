"""The data commands through the CLI: synth, check (clean and broken datasets), prepare's bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO

from search.cli import main
from search.errors import ConfigError

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


def _rewrite_masks(root: Path, encode) -> None:
    import cv2

    for path in sorted(root.glob("*/masks/*.png")):
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert cv2.imwrite(str(path), encode(mask > 0))


def _label_map(fg):
    """Three-class label maps {0, 1, 2}: more than two values, and none reaches the half-range threshold."""
    import numpy as np

    out = fg.astype(np.uint8)
    out[: out.shape[0] // 2][fg[: out.shape[0] // 2]] = 2
    out[0, 0] = 2
    return out


def test_check_and_run_refuse_masks_without_foreground(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "ds"
    assert main(["data", "synth", str(root), "--n", "12", "--size", "32"]) == 0
    _rewrite_masks(root, _label_map)
    capsys.readouterr()
    assert main(["data", "check", str(root), "--size", "32"]) == 3
    text = capsys.readouterr().out
    assert "OK" not in text and "split 'train'" in text and "0, 1, 2" in text
    code = main(["--results", str(tmp_path / "r"), "run", "--data", str(root), "--no-final"])
    assert code == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error:") and "split 'train'" in last and "0, 1, 2" in last
    assert not (tmp_path / "r" / "alcapa").exists()  # nothing half-written


def test_check_reports_16_bit_images(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import cv2
    import numpy as np

    root = tmp_path / "ds"
    assert main(["data", "synth", str(root), "--n", "6", "--size", "32"]) == 0
    for path in sorted(root.glob("*/images/*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert cv2.imwrite(str(path), image.astype(np.uint16) * 16)  # 12 significant bits
    capsys.readouterr()
    assert main(["data", "check", str(root), "--size", "32"]) == 0
    text = capsys.readouterr().out
    assert "16-bit" in text and "(0 warning(s))" not in text


@pytest.mark.slow
def test_run_trains_on_0_1_masks_and_records_the_resolved_channels(tmp_path: Path) -> None:
    """0/1 masks have foreground in `run`, and channels: auto becomes 1 in study.yaml for a greyscale dataset."""
    import json

    import yaml
    from conftest import tiny_raw_config

    root = tmp_path / "ds"
    assert main(["data", "synth", str(root), "--n", "16", "--size", "32"]) == 0
    _rewrite_masks(root, lambda fg: fg.astype("uint8"))
    raw = tiny_raw_config(root, study={"max_trials": 1}, data={"channels": "auto"}, train={"max_epochs": 1})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["--results", str(tmp_path / "r"), "run", "--config", str(config), "--no-final"]) == 0
    study = tmp_path / "r" / "tiny"
    assert yaml.safe_load((study / "study.yaml").read_text())["data"]["channels"] == 1
    fp = json.loads((study / "data_fingerprint.json").read_text())
    assert fp["channels"] == 1 and fp["splits"]["train"]["foreground"]["mean"] > 0
    assert fp["mask_rule"]["threshold"] == 1
    # resuming with the unresolved config is the same study, not a changed one
    assert main(["--results", str(tmp_path / "r"), "run", "--config", str(config), "--no-final"]) == 0


@pytest.mark.parametrize(("entries", "expected"), [
    (["5"], ([5], None)), (["1,2"], ([1, 2], None)), (["all"], (None, "all")),
    (["heart=1,2,3", "aorta=5"], (None, {"heart": [1, 2, 3], "aorta": [5]})),
])
def test_prepare_labels_select_merge_or_keep_classes(entries: list[str], expected: tuple) -> None:
    from search.cli.data_cmds import _prepare_labels

    assert _prepare_labels(entries) == expected


@pytest.mark.parametrize("entries", [["heart=1", "5"], ["a=1", "a=2"], ["=3"], ["x"], ["a=b"]])
def test_prepare_labels_refuse_what_they_cannot_read(entries: list[str]) -> None:
    from search.cli.data_cmds import _prepare_labels

    with pytest.raises(ConfigError, match="--labels"):
        _prepare_labels(entries)
