"""Tests of the embedded phantom dataset (nnunetv2_vismae.phantoms.generator)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_vismae.phantoms.generator import LABELS, STYLES, generate_dataset, make_case

SMALL = dict(num_train=8, num_test=4, num_unlabeled=8, size=64)


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _arrays(folder: Path) -> dict:
    return {str(p.relative_to(folder)): _read(p) for p in sorted(folder.rglob("*.nii.gz"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("raw"), dataset_id=801, name="Tiny", seed=3, **SMALL)


@pytest.mark.parametrize("style", STYLES)
def test_make_case_returns_image_and_label_of_the_requested_size(style):
    image, label = make_case(np.random.default_rng(0), 96, style)
    assert image.shape == label.shape == (96, 96)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert np.isfinite(image).all()
    assert set(np.unique(label)) <= set(LABELS.values())
    assert image.std() > 0


def test_make_case_is_deterministic_by_seed():
    a = make_case(np.random.default_rng(7), 64, "mr_t2")
    b = make_case(np.random.default_rng(7), 64, "mr_t2")
    c = make_case(np.random.default_rng(8), 64, "mr_t2")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])


def test_make_case_rejects_unknown_style_and_tiny_size():
    with pytest.raises(ValueError, match="style"):
        make_case(np.random.default_rng(0), 64, "pet")
    with pytest.raises(ValueError, match="size"):
        make_case(np.random.default_rng(0), 8, "ct")


def test_cases_have_at_least_three_foreground_classes_and_all_classes_occur():
    seen = set()
    for i in range(12):
        _, label = make_case(np.random.default_rng(i), 128, STYLES[i % len(STYLES)])
        present = set(np.unique(label)) - {0}
        assert len(present) >= 3, f"case {i} has only classes {present}"
        seen |= present
    assert seen == set(LABELS.values()) - {0}


def _region_means(style, n=8):
    """Per case: mean intensity of liver, spleen, kidney, and image-wide statistics."""
    rows = []
    for i in range(n):
        image, label = make_case(np.random.default_rng(100 + i), 128, style)
        liver = image[label == LABELS["liver"]]
        rows.append(
            dict(liver=liver.mean(), spleen=image[label == LABELS["spleen"]].mean(), min=image.min(), max=image.max())
        )
    return rows


def test_styles_have_different_image_statistics():
    ct, t1, t2, us = (_region_means(s) for s in STYLES)
    # CT is in Hounsfield units: air at about -1000, soft tissue near 0..200
    assert all(r["min"] < -800 for r in ct)
    assert all(-50 < r["liver"] < 200 for r in ct)
    # MR and ultrasound are non-negative magnitudes; ultrasound is 0..255
    assert all(r["min"] >= 0 for r in t1 + t2 + us)
    assert all(r["max"] <= 255 for r in us)
    # T1 and T2 invert the liver / spleen contrast (per case the bias field may blur it)
    assert np.median([r["liver"] / r["spleen"] for r in t1]) > 1.1
    assert np.median([r["spleen"] / r["liver"] for r in t2]) > 1.4
    # ultrasound shows a sector: the top corners lie outside the field of view, in image and labels
    for i in range(8):
        image, label = make_case(np.random.default_rng(100 + i), 128, "us")
        assert image[0, 0] == image[0, -1] == 0 and label[0, 0] == label[0, -1] == 0


def test_dataset_layout_and_dataset_json(dataset):
    assert dataset.name == "Dataset801_Tiny"
    ds = json.loads((dataset / "dataset.json").read_text())
    assert ds["labels"] == LABELS
    assert ds["channel_names"] == {"0": "image"}
    assert ds["file_ending"] == ".nii.gz"
    assert ds["numTraining"] == SMALL["num_train"]
    counts = {
        d: len(list((dataset / d).glob("*.nii.gz")))
        for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", ds["unlabeled_folder"])
    }
    assert counts == {"imagesTr": 8, "labelsTr": 8, "imagesTs": 4, "labelsTs": 4, "imagesUnlabeled": 8}
    for d in ("imagesTr", "imagesTs", "imagesUnlabeled"):
        assert all(p.name.endswith("_0000.nii.gz") for p in (dataset / d).iterdir())
    labels = np.stack([_read(p) for p in sorted((dataset / "labelsTr").iterdir())])
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == set(LABELS.values())
    image = _read(dataset / "imagesTr" / "phantom_tr_000_0000.nii.gz")
    assert image.shape == (64, 64) and image.dtype == np.float32


def test_dataset_passes_nnunet_verify_dataset_integrity(dataset):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(dataset), num_processes=1)


def test_every_style_is_generated_in_every_split(dataset):
    cases = json.loads((dataset / "phantoms.json").read_text())["cases"]
    for split in ("tr", "ts", "un"):
        assert {c["style"] for c in cases.values() if c["split"] == split} == set(STYLES)


def test_unlabeled_pool_is_disjoint_from_labeled_cases(dataset):
    def digests(folder):
        return {hashlib.sha1(_read(p).tobytes()).hexdigest(): p.name for p in (dataset / folder).iterdir()}

    labeled = {**digests("imagesTr"), **digests("imagesTs")}
    unlabeled = digests("imagesUnlabeled")
    assert len(unlabeled) == SMALL["num_unlabeled"] and len(labeled) == SMALL["num_train"] + SMALL["num_test"]
    assert not set(labeled) & set(unlabeled)
    assert not {n.split("_0000")[0] for n in labeled.values()} & {n.split("_0000")[0] for n in unlabeled.values()}


def test_generate_dataset_is_deterministic_by_seed(dataset, tmp_path):
    again = generate_dataset(tmp_path / "a", dataset_id=801, name="Tiny", seed=3, **SMALL)
    other = generate_dataset(tmp_path / "b", dataset_id=801, name="Tiny", seed=4, **SMALL)
    first, second, third = _arrays(dataset), _arrays(again), _arrays(other)
    assert first.keys() == second.keys() == third.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert all(not np.array_equal(first[k], third[k]) for k in first if "images" in k)
    assert (dataset / "dataset.json").read_text() == (again / "dataset.json").read_text()


def test_cases_do_not_change_with_the_number_of_cases(dataset, tmp_path):
    fewer = generate_dataset(
        tmp_path, dataset_id=801, name="Tiny", seed=3, num_train=3, num_test=0, num_unlabeled=0, size=64
    )
    for p in sorted((fewer / "imagesTr").iterdir()):
        np.testing.assert_array_equal(_read(p), _read(dataset / "imagesTr" / p.name))


def test_labeled_styles_shift_only_the_labeled_cases(dataset, tmp_path):
    """An appearance shift: labeled cases in the chosen styles, balanced; the test set and the unlabeled pool
    are those of the unshifted dataset, case for case."""
    shifted = generate_dataset(tmp_path, dataset_id=801, name="Tiny", seed=3, labeled_styles=("us", "ct"), **SMALL)
    meta = json.loads((shifted / "phantoms.json").read_text())
    train_styles = [c["style"] for c in meta["cases"].values() if c["split"] == "tr"]
    assert sorted(train_styles) == ["ct"] * 4 + ["us"] * 4 and meta["labeled_styles"] == ["us", "ct"]
    for folder in ("imagesTs", "labelsTs", "imagesUnlabeled"):
        for p in sorted((dataset / folder).iterdir()):
            np.testing.assert_array_equal(_read(shifted / folder / p.name), _read(p), err_msg=p.name)
    with pytest.raises(ValueError, match="labeled_styles"):
        generate_dataset(tmp_path, labeled_styles=("ct", "xray"))
    with pytest.raises(ValueError, match="labeled_styles"):
        generate_dataset(tmp_path, labeled_styles=())


def test_generate_dataset_rejects_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="num_train"):
        generate_dataset(tmp_path, num_train=0)


GOLDEN = dict(dataset_id=802, name="Golden", seed=5, num_train=4, num_test=1, num_unlabeled=1, size=32)
# per image: sum, sum of squares, sum weighted by a 0..1 ramp over the pixels; images are float, and numpy's
# vectorised exp/log differ in the last bits between CPUs (AVX-512 here, AVX2 on CI), so they are pinned loosely
GOLDEN_IMAGES = {
    "imagesTr/phantom_tr_000_0000.nii.gz": (324734.48866057396, 282114140.4778682, 165853.4515146566),
    "imagesTr/phantom_tr_001_0000.nii.gz": (-464402.9477233887, 427881806.78850836, -219849.65077081666),
    "imagesTr/phantom_tr_002_0000.nii.gz": (75807.65394043922, 12608795.296606917, 39420.61435907724),
    "imagesTr/phantom_tr_003_0000.nii.gz": (424058.4850373268, 333977897.4048364, 211739.22308143077),
    "imagesTs/phantom_ts_000_0000.nii.gz": (388421.4070148468, 295802247.2644104, 196069.49850052566),
    "imagesUnlabeled/phantom_un_0000_0000.nii.gz": (424265.72582274675, 459961430.9577137, 213534.0096428775),
}
GOLDEN_EXACT = "674bf65626b848d6d45cf04fee38803708321269e8957952f329c58c2e90e271"


def _header(image: sitk.Image) -> str:
    return repr((image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), image.GetPixelIDValue()))


def exact_digest(folder: Path, generator_named: bool = False) -> str:
    """Every file's name, the headers of the images, the labels' pixels and the two JSON files, except the
    fields that name the generator's module (kept with ``generator_named``)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        if path.name.endswith(".nii.gz"):
            image = sitk.ReadImage(str(path))
            digest.update(_header(image).encode())
            if "labels" in path.parent.name:
                digest.update(sitk.GetArrayFromImage(image).tobytes())
        else:
            description = json.loads(path.read_text())
            if not generator_named:
                description.pop("converted_by" if path.name == "dataset.json" else "generator")
            digest.update(json.dumps(description, sort_keys=True).encode())
    return digest.hexdigest()


def image_fingerprint(path: Path) -> tuple:
    pixels = _read(path).astype(np.float64).ravel()
    return pixels.sum(), (pixels * pixels).sum(), (pixels * np.linspace(0, 1, pixels.size)).sum()


def test_a_small_dataset_is_the_golden_one(tmp_path):
    """Pins what generate_dataset writes (moving the generator must not change a pixel)."""
    folder = generate_dataset(tmp_path, **GOLDEN)
    assert exact_digest(folder) == GOLDEN_EXACT
    images = sorted(str(p.relative_to(folder)) for p in folder.glob("images*/*.nii.gz"))
    assert images == sorted(GOLDEN_IMAGES)
    for name, fingerprint in GOLDEN_IMAGES.items():
        np.testing.assert_allclose(image_fingerprint(folder / name), fingerprint, rtol=1e-5, err_msg=name)
