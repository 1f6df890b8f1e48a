"""Tests of the 3D phantom dataset (nnunetv2_vismae.phantoms.volumes)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.phantoms.test_generator import exact_digest, image_fingerprint
from nnunetv2_vismae.phantoms.volumes import (
    LABELS,
    SPACING_MM,
    VOLUME_STYLES,
    generate_volumes,
    make_volume,
)

SHAPE = (12, 24, 24)
SMALL = dict(num_train=6, num_test=3, num_unlabeled=3, shape=SHAPE)


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_volumes(tmp_path_factory.mktemp("raw"), dataset_id=811, name="TinyVolumes", seed=3, **SMALL)


@pytest.mark.parametrize("style", VOLUME_STYLES)
def test_make_volume_returns_image_and_label_of_the_requested_shape(style):
    image, label = make_volume(np.random.default_rng(0), (16, 32, 32), style)
    assert image.shape == label.shape == (16, 32, 32)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert np.isfinite(image).all() and image.std() > 0
    assert set(np.unique(label)) <= set(LABELS.values())


def test_make_volume_is_deterministic_by_seed():
    a, b, c = (make_volume(np.random.default_rng(seed), SHAPE, "mr_t2") for seed in (7, 7, 8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_make_volume_rejects_unknown_style_and_tiny_or_flat_shapes():
    with pytest.raises(ValueError, match="style 'us'"):  # a sector scan is a 2D probe's
        make_volume(np.random.default_rng(0), SHAPE, "us")
    for shape in ((4, 32, 32), (16, 8, 32), (32, 32)):
        with pytest.raises(ValueError, match="shape"):
            make_volume(np.random.default_rng(0), shape, "ct")


def test_every_organ_occurs_and_organs_span_several_slices():
    seen = set()
    for i in range(6):
        _, label = make_volume(np.random.default_rng(i), (16, 32, 32), VOLUME_STYLES[i % 3])
        present = set(np.unique(label)) - {0}
        assert {LABELS["liver"], LABELS["spleen"]} <= present, f"case {i} has only classes {present}"
        seen |= present
        assert all(np.any(label == c, axis=(1, 2)).sum() >= 3 for c in present)  # solids, not slices
    assert seen == set(LABELS.values()) - {0}


def test_styles_have_their_units_and_contrasts():
    ratios = []
    for i in range(6):
        ct, t1, t2 = (make_volume(np.random.default_rng(100 + i), (16, 32, 32), s) for s in VOLUME_STYLES)
        assert ct[0].min() < -800 and -50 < ct[0][ct[1] == LABELS["liver"]].mean() < 200  # Hounsfield units
        assert t1[0].min() >= 0 and t2[0].min() >= 0  # magnitudes
        np.testing.assert_array_equal(t1[1], t2[1])  # the same anatomy in every style
        liver, spleen = t1[1] == LABELS["liver"], t1[1] == LABELS["spleen"]
        ratios.append([t1[0][liver].mean() / t1[0][spleen].mean(), t2[0][spleen].mean() / t2[0][liver].mean()])
    # T1 shows the liver brighter than the spleen, T2 the reverse (per case the bias field may blur it)
    t1_liver_to_spleen, t2_spleen_to_liver = np.median(ratios, axis=0)
    assert t1_liver_to_spleen > 1.1 and t2_spleen_to_liver > 1.4


def test_nnunet_pools_the_slices_later_than_the_plane():
    """The voxels' anisotropy makes nnU-Net's planner (get_pool_and_conv_props, as ExperimentPlanner calls it)
    pool only in-plane first: anisotropic strides."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pool_kernels, conv_kernels, _, _ = get_pool_and_conv_props(SPACING_MM, (24, 48, 48), 4, 999999)
    assert pool_kernels[1] == (1, 2, 2) and (2, 2, 2) in pool_kernels and conv_kernels[0] == (1, 3, 3)


def test_dataset_layout_spacing_and_dataset_json(dataset):
    assert dataset.name == "Dataset811_TinyVolumes"
    description = json.loads((dataset / "dataset.json").read_text())
    assert description["labels"] == LABELS and description["channel_names"] == {"0": "image"}
    assert description["file_ending"] == ".nii.gz" and description["numTraining"] == 6
    folders = ("imagesTr", "labelsTr", "imagesTs", "labelsTs", description["unlabeled_folder"])
    counts = {d: len(list((dataset / d).glob("*.nii.gz"))) for d in folders}
    assert counts == {"imagesTr": 6, "labelsTr": 6, "imagesTs": 3, "labelsTs": 3, "imagesUnlabeled": 3}
    image = sitk.ReadImage(str(dataset / "imagesTr" / "phantom_tr_000_0000.nii.gz"))
    assert image.GetSpacing() == (1.0, 1.0, 3.0) and image.GetSize() == (24, 24, 12)
    assert sitk.GetArrayFromImage(image).dtype == np.float32
    labels = np.stack([_read(p) for p in sorted((dataset / "labelsTr").iterdir())])
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == set(LABELS.values())
    cases = json.loads((dataset / "phantoms.json").read_text())["cases"]
    assert {c["style"] for c in cases.values() if c["split"] == "tr"} == set(VOLUME_STYLES)


def test_dataset_passes_nnunet_verify_dataset_integrity(dataset):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(dataset), num_processes=1)


def test_unlabeled_pool_is_disjoint_and_cases_do_not_change_with_their_number(dataset, tmp_path):
    def digests(folder):
        return {hashlib.sha1(_read(p).tobytes()).hexdigest() for p in (dataset / folder).iterdir()}

    labeled, unlabeled = digests("imagesTr") | digests("imagesTs"), digests("imagesUnlabeled")
    assert len(labeled) == 9 and len(unlabeled) == 3 and not labeled & unlabeled
    fewer = generate_volumes(
        tmp_path, 811, "TinyVolumes", num_train=2, num_test=0, num_unlabeled=0, shape=SHAPE, seed=3
    )
    for p in sorted((fewer / "imagesTr").iterdir()):
        np.testing.assert_array_equal(_read(p), _read(dataset / "imagesTr" / p.name))


def test_generate_volumes_rejects_bad_counts_and_ids(tmp_path):
    with pytest.raises(ValueError, match="num_train"):
        generate_volumes(tmp_path, num_train=0)
    with pytest.raises(ValueError, match="dataset_id"):
        generate_volumes(tmp_path, dataset_id=1000)


GOLDEN = dict(dataset_id=812, name="GoldenVolumes", seed=5, num_train=3, num_test=1, num_unlabeled=1, shape=(8, 16, 16))
# per image: sum, sum of squares, sum weighted by a 0..1 ramp over the voxels; images are float, and numpy's
# vectorised exp/log/trigonometry may differ in the last bits between CPUs, so they are pinned loosely
GOLDEN_IMAGES = {
    "imagesTr/phantom_tr_000_0000.nii.gz": (-1413433.08167696, 1310536048.1164317, -713098.7910842814),
    "imagesTr/phantom_tr_001_0000.nii.gz": (669749.6297414303, 471194299.569564, 358717.4658721774),
    "imagesTr/phantom_tr_002_0000.nii.gz": (1308390.1214027405, 1356674570.7565665, 698742.6907436824),
    "imagesTs/phantom_ts_000_0000.nii.gz": (557031.6492727995, 252544867.22415265, 307464.44706479105),
    "imagesUnlabeled/phantom_un_0000_0000.nii.gz": (505460.0373965204, 296327719.24056566, 263109.312139412),
}
GOLDEN_EXACT = "3c5e6906721f002275ce17d962eb7e07ec33b64e9b2123b584a71756a75dca16"


def test_a_small_dataset_is_the_golden_one(tmp_path):
    """Pins what generate_volumes writes: a change of any voxel is a new dataset (a new VOLUMES_VERSION)."""
    folder = generate_volumes(tmp_path, **GOLDEN)
    assert exact_digest(folder, generator_named=True) == GOLDEN_EXACT
    images = sorted(str(p.relative_to(folder)) for p in folder.glob("images*/*.nii.gz"))
    assert images == sorted(GOLDEN_IMAGES)
    for name, fingerprint in GOLDEN_IMAGES.items():
        np.testing.assert_allclose(image_fingerprint(folder / name), fingerprint, rtol=1e-5, err_msg=name)
