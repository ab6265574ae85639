"""``predict``: masks at each image's original size, overlays, trial weights, and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA
from fake_study import build_study

from search.cli import main
from search.results import StudyDir

SHARED_IMAGES = SHARED_DATA / "chd-ct-aorta" / "test" / "images"
# name → (height, width, channels, dtype) of the test images: every format, odd sizes, 16-bit and alpha
IMAGES = {
    "a.png": (50, 70, 1, np.uint8),
    "b.jpg": (64, 48, 3, np.uint8),
    "c.bmp": (100, 100, 3, np.uint8),
    "d.tif": (40, 30, 1, np.uint16),
    "e.png": (33, 33, 4, np.uint8),
}


@pytest.fixture(scope="module")
def study_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study with a tiny final model and trial 1's weights."""
    from models import build_model
    from search.config.specs import specs_from_values
    from search.results import read_study_config

    results = tmp_path_factory.mktemp("predict")
    study = build_study(results, name="p", n_complete=2, n_pruned=0, n_failed=1, predictions=False)
    cfg = read_study_config(study)
    rec = study.read_trial(1)
    assert rec is not None
    model = build_model(specs_from_values(cfg, rec.values, seed=0).model)
    model.save_weights(str(study.trial_dir(1) / "best.weights.h5"))
    model.save(str(study.final_dir / "model.keras"))
    build_study(results, name="nofinal", n_complete=1, n_pruned=0, n_failed=0, final=False,
                           predictions=False)
    return results


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w, c, dtype) in IMAGES.items():
        top = 65535 if dtype == np.uint16 else 255
        array = rng.integers(0, top, (h, w, c) if c > 1 else (h, w)).astype(dtype)
        assert cv2.imwrite(str(folder / name), array)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _cli(results: Path, *args: str) -> int:
    return main(["--results", str(results), "predict", *args])


def test_predict_writes_masks_at_the_original_size(study_root: Path, images: Path, tmp_path: Path) -> None:
    from search.tools.predict import load_model, predict_probability

    out = tmp_path / "out"
    assert _cli(study_root, "p", "--images", str(images), "--out", str(out), "--overlay") == 0
    names = sorted(p.name for p in out.iterdir())
    stems = sorted(Path(n).stem for n in IMAGES)
    assert names == sorted([f"{s}.png" for s in stems] + [f"{s}_overlay.png" for s in stems])
    loaded = load_model(StudyDir(study_root / "p"))
    assert (loaded.image_size, loaded.channels) == (32, 1)
    for name, (h, w, _, _) in IMAGES.items():
        stem = Path(name).stem
        mask = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == (h, w)
        assert set(np.unique(mask)) <= {0, 255}
        overlay = cv2.imread(str(out / f"{stem}_overlay.png"), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (h, w, 3)
        raw = cv2.imread(str(images / name), cv2.IMREAD_UNCHANGED)
        if raw.ndim == 3 and raw.shape[2] == 4:
            raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2BGR)
        prob = predict_probability(loaded, [raw])[0]
        assert prob.shape == (h, w)
        np.testing.assert_array_equal(mask, (prob > 0.5).astype(np.uint8) * 255)
    assert not list(out.glob(".*"))


def test_predicted_masks_binarise_like_the_metrics(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probability exactly at the threshold is background in predict, as in the hard metrics that score trials."""
    import search.tools.predict as predict
    from models import hard_dice_per_image

    probs: dict[tuple[int, int], np.ndarray] = {}

    def fake_probability(loaded: object, raws: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for raw in raws:
            h, w = raw.shape[:2]
            out.append(probs.setdefault((h, w), np.resize(np.array([0.25, 0.5, 0.75], np.float32), (h, w))))
        return out

    monkeypatch.setattr(predict, "load_model", lambda study, trial=None: predict.LoadedModel(None, 8, 1, "fake"))
    monkeypatch.setattr(predict, "predict_probability", fake_probability)
    predict.predict_folder(StudyDir(tmp_path / "study"), images=images, out=tmp_path / "m", threshold=0.5)
    for name in IMAGES:
        mask = cv2.imread(str(tmp_path / "m" / f"{Path(name).stem}.png"), cv2.IMREAD_GRAYSCALE)
        prob = probs[mask.shape]
        assert set(np.unique(mask[prob == 0.5]).tolist()) == {0}, name
        assert set(np.unique(mask[prob == 0.75]).tolist()) == {255}, name
        # the metrics' own binarisation of the same probabilities is this mask: dice 1
        assert hard_dice_per_image((mask > 0)[None], prob[None], threshold=0.5)[0] == 1.0, name


def test_threshold_and_trial_weights(study_root: Path, images: Path, tmp_path: Path) -> None:
    from search.tools.predict import load_model, predict_folder, predict_probability

    study = StudyDir(study_root / "p")
    raw = cv2.imread(str(images / "c.bmp"))
    prob = predict_probability(load_model(study), [raw])[0]
    # a threshold in the widest gap between probability values near the median: no pixel sits within
    # float noise of it (predict_folder recomputes the probabilities; exactly the median flipped pixels)
    values = np.unique(prob)
    middle = values[len(values) // 4 : 3 * len(values) // 4 + 1]
    k = int(np.argmax(np.diff(middle)))
    t = float((middle[k] + middle[k + 1]) / 2)
    result = predict_folder(study, images=images, out=tmp_path / "t", threshold=t)
    mask = cv2.imread(str(tmp_path / "t" / "c.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(mask, (prob > t).astype(np.uint8) * 255)
    assert len(result.masks) == len(IMAGES) and result.overlays == []

    # trial 1's weights are the final model's weights, so the masks agree
    assert _cli(study_root, "p", "--images", str(images), "--out", str(tmp_path / "w"), "--trial", "1",
                "--threshold", str(t)) == 0
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "w" / "c.png"), cv2.IMREAD_GRAYSCALE), mask)


def test_predict_errors(study_root: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")

    def fails(code: int, *args: str, message: str) -> None:
        assert _cli(study_root, *args) == code
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err

    fails(2, "nope", "--images", str(images), "--out", out, message="no study 'nope'")
    fails(2, "nofinal", "--images", str(images), "--out", out,
          message="study 'nofinal' has no final model; run `python -m search final nofinal` first")
    fails(2, "p", "--images", str(images), "--out", out, "--trial", "2", message="trial 2 of study 'p' is failed")
    fails(2, "p", "--images", str(images), "--out", out, "--trial", "9", message="study 'p' has no trial 9")
    fails(2, "p", "--images", str(images), "--out", out, "--threshold", "1.5", message="--threshold")
    fails(2, "p", "--images", str(images), "--out", str(images), message="is the image folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("")
    fails(3, "p", "--images", str(empty), "--out", out, message=f"image folder {empty} holds no images")
    fails(3, "p", "--images", str(tmp_path / "absent"), "--out", out, message="does not exist")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    fails(2, "p", "--images", str(images), "--out", str(blocker / "sub"), message="is not writable")
    (images / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    fails(3, "p", "--images", str(images), "--out", out, message="zz_corrupt.png")
    assert not Path(out).exists() or not any(Path(out).iterdir())  # nothing half-written


def test_predict_on_shared_ct_images(study_root: Path, tmp_path: Path) -> None:
    if not SHARED_IMAGES.is_dir():
        pytest.skip(f"shared dataset not found at {SHARED_IMAGES}")
    out = tmp_path / "ct"
    assert _cli(study_root, "p", "--images", str(SHARED_IMAGES), "--out", str(out), "--overlay") == 0
    sources = sorted(p for p in SHARED_IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
    assert sources
    for src in sources:
        h, w = cv2.imread(str(src), cv2.IMREAD_UNCHANGED).shape[:2]
        mask = cv2.imread(str(out / f"{src.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert (out / f"{src.stem}_overlay.png").is_file()


class _Perfect:
    """A model that predicts exactly the label training taught it: the mask resized to the model's size."""

    def __init__(self, label: np.ndarray) -> None:
        self.label = label.astype(np.float32)

    def __call__(self, batch: np.ndarray, training: bool = False) -> np.ndarray:
        return np.repeat(self.label[None, :, :, None], len(batch), axis=0)


def test_a_predicted_blob_lands_where_it_is_at_the_original_size() -> None:
    """Training label (resize_mask at model size) → predict's resize back: no shift at the original size."""
    from data.dataset import resize_mask
    from search.tools.predict import LoadedModel, predict_probability

    rng = np.random.default_rng(2)
    size, model_size = 128, 32
    ys, xs = np.indices((size, size))
    shifts = []
    for _ in range(12):
        cx, cy = rng.uniform(40, 88, 2)
        blob = ((xs - cx) ** 2 + (ys - cy) ** 2 <= rng.uniform(8, 14) ** 2).astype(np.uint8)
        loaded = LoadedModel(model=_Perfect(resize_mask(blob, model_size)), image_size=model_size, channels=1,
                             source="perfect")
        predicted = predict_probability(loaded, [blob * np.uint8(255)])[0] > 0.5
        found = np.array([xs[predicted].mean(), ys[predicted].mean()])
        shifts.append(found - np.array([xs[blob > 0].mean(), ys[blob > 0].mean()]))
    mean_shift = np.abs(np.mean(shifts, axis=0))
    assert mean_shift.max() <= 0.25, f"predicted minus true centroid {mean_shift} px at the original size"


def test_16_bit_images_are_scaled_like_the_studys_training_data() -> None:
    """A 12-bit study (image_bits 12) sees a 12-bit image on the 0..255 scale it was trained on."""
    from search.tools.predict import LoadedModel, predict_probability

    seen: list[np.ndarray] = []

    def model(batch: np.ndarray, training: bool = False) -> np.ndarray:
        seen.append(np.asarray(batch))
        return np.zeros((*batch.shape[:3], 1), np.float32)

    raw = np.resize(np.arange(4096, dtype=np.uint16), (64, 64))
    predict_probability(LoadedModel(model=model, image_size=64, channels=1, source="x", image_bits=12), [raw])
    assert seen[0].dtype == np.float32 and seen[0].max() == pytest.approx(255.0)
    assert len(np.unique(seen[0])) == 4096
