"""What ``nnUNetv2_vismae_speed`` measures on: a small phantom dataset planned and preprocessed by
nnU-Net's own planner in a scratch folder, both trainers built on its plans, synthetic batches shaped
as nnU-Net's loader makes them, and nnU-Net's predictor around each network. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from nnunetv2_vismae.architectures import Swin3dEncoderConfig, SwinEncoderConfig
from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, CONFIGURATION_3D, ext_trainer_value
from nnunetv2_vismae.phantoms.generator import PIXEL_SPACING_MM, generate_dataset, make_case
from nnunetv2_vismae.phantoms.volumes import generate_volumes

DATASET_ID = 801
DATASET = f"Dataset{DATASET_ID:03d}_VisMAEPhantoms"
# the 3D rows' volumes: nnU-Net plans a 3d_fullres patch of the whole 32x32x32 volume and batch 2 for them, and
# VisMAE's 3D plans keep both (32 is a multiple of SwinUNETR's total stride on every axis), as 2D's 128x128 does
VOLUME_DATASET_ID, VOLUME_SHAPE = 802, (32, 32, 32)
VOLUME_DATASET = f"Dataset{VOLUME_DATASET_ID:03d}_VisMAEPhantoms3D"
DATASETS = {CONFIGURATION_2D: DATASET, CONFIGURATION_3D: VOLUME_DATASET}  # what each configuration is measured on
PLANS, VISMAE_PLANS = "nnUNetPlans", "nnUNetVisMAEPlans"


@contextmanager
def nnunet_folders(root: Path):
    """nnU-Net's folder variables pointing under ``root`` and our trainers findable, for the duration
    (nnU-Net reads them lazily); the environment is restored on exit, even on error."""
    folders = {name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in folders.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    trainers = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))
    with mock.patch.dict(os.environ, {**folders, "nnUNet_extTrainer": trainers}):
        yield


def prepare_plans(
    root: Path, size: int = 128, num_train: int = 8, num_unlabeled: int = 64, encoder: SwinEncoderConfig | None = None
) -> Path:
    """Phantoms; nnU-Net's fingerprint (unless one is already there), plans and, in this process,
    preprocessing of the training cases; VisMAE plans derived from them. Returns the raw folder."""
    from nnunetv2_vismae.planning.vismae_plans import derive_vismae_plans, load_plans

    raw = generate_dataset(
        root / "nnUNet_raw", DATASET_ID, num_train=num_train, num_test=0, num_unlabeled=num_unlabeled, size=size
    )
    folder = plan_and_preprocess(raw, DATASET_ID, CONFIGURATION_2D)
    vismae = derive_vismae_plans(load_plans(folder, PLANS), VISMAE_PLANS, encoder or SwinEncoderConfig(), "conv")
    write_json_atomic(folder / f"{VISMAE_PLANS}.json", vismae)
    return raw


def prepare_volume_plans(
    root: Path,
    num_train: int = 4,
    shape: tuple[int, int, int] = VOLUME_SHAPE,
    encoder: Swin3dEncoderConfig | None = None,
) -> Path:
    """Volume phantoms; nnU-Net's fingerprint (unless one is already there), plans and, in this process,
    3d_fullres preprocessing of the training cases; VisMAE's 3D plans derived from them (Swin3dUNet with
    ``encoder``, default SwinUNETR's, as ``nnUNetv2_vismae_plan -c 3d_fullres`` plans it). Returns the
    preprocessed folder."""
    from nnunetv2_vismae.planning.vismae_plans import derive_vismae3d_plans, load_plans

    raw = generate_volumes(
        root / "nnUNet_raw", VOLUME_DATASET_ID, num_train=num_train, num_test=0, num_unlabeled=0, shape=shape
    )
    folder = plan_and_preprocess(raw, VOLUME_DATASET_ID, CONFIGURATION_3D)
    plans = load_plans(folder, PLANS, CONFIGURATION_3D)
    vismae = derive_vismae3d_plans(plans, VISMAE_PLANS, encoder or Swin3dEncoderConfig())
    write_json_atomic(folder / f"{VISMAE_PLANS}.json", vismae)
    return folder


def plan_and_preprocess(raw: Path, dataset_id: int, configuration: str) -> Path:
    """nnU-Net's fingerprint (unless one is already there), plans, and ``configuration``'s preprocessing of
    the training cases; returns the preprocessed folder."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
    )

    folder = raw.parents[1] / "nnUNet_preprocessed" / raw.name
    if not (folder / "dataset_fingerprint.json").is_file():
        extract_fingerprint_dataset(dataset_id, num_processes=1, check_dataset_integrity=False, verbose=False)
    plan_experiment_dataset(dataset_id)
    preprocess_training_cases(raw, folder, configuration)
    return folder


def preprocess_training_cases(raw: Path, folder: Path, configuration_name: str = CONFIGURATION_2D) -> None:
    """nnU-Net's preprocessing (``configuration_name``) of every training case, in this process (its pool
    takes longer to start than the work); trainers need the preprocessed folder to exist even when fed synthetic
    batches, and 3D pretraining reads it."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(str(folder / f"{PLANS}.json"))
    configuration = plans.get_configuration(configuration_name)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    out = folder / configuration.data_identifier
    out.mkdir(exist_ok=True)
    for image in sorted((raw / "imagesTr").iterdir()):
        case = image.name[: -len("_0000" + dataset_json["file_ending"])]
        DefaultPreprocessor(verbose=False).run_case_save(
            str(out / case),
            [str(image)],
            str(raw / "labelsTr" / (case + dataset_json["file_ending"])),
            plans,
            configuration,
            dataset_json,
        )


def load_trainer(trainer_class, plans_name: str, device: torch.device, configuration: str = CONFIGURATION_2D):
    """The trainer ``nnUNetv2_train`` builds for ``configuration`` of the plans, on that configuration's dataset."""
    folder = Path(os.environ["nnUNet_preprocessed"]) / DATASETS[configuration]
    plans = json.loads((folder / f"{plans_name}.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans["continue_training"] = False  # what nnUNetv2_train adds before building a trainer
    trainer = trainer_class(plans, configuration, 0, dataset_json, device)
    trainer.initialize()
    return trainer


def trainer_classes() -> dict:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunetv2_vismae.training import VisMAETrainer

    return {"nnunet": (nnUNetTrainer, PLANS), "vismae": (VisMAETrainer, VISMAE_PLANS)}


def synthetic_batch(trainer, batch_size: int) -> dict:
    """A batch shaped as nnU-Net's loader makes it: data and one target per deep-supervision scale."""
    patch = trainer.configuration_manager.patch_size
    data = torch.randn(batch_size, trainer.num_input_channels, *patch)
    scales = trainer._get_deep_supervision_scales() or [[1.0] * len(patch)]
    labels = len(trainer.label_manager.all_labels)
    targets = [
        torch.randint(0, labels, (batch_size, 1, *[round(p * s) for p, s in zip(patch, scale)])).float()
        for scale in scales
    ]
    return {"data": data, "target": targets if trainer.enable_deep_supervision else targets[0]}


def phantom_case(size: int) -> tuple[np.ndarray, dict]:
    """One phantom image, as nnU-Net's SimpleITK reader returns a 2D image: (1, 1, H, W) and spacing."""
    image, _ = make_case(np.random.default_rng(7), size, "ct")
    return image[None, None].astype(np.float32), {"spacing": [999.0, PIXEL_SPACING_MM, PIXEL_SPACING_MM]}


def predictor_for(cls, plans: str, device: torch.device):
    """nnU-Net's predictor set up as ``nnUNetv2_predict`` sets it up: a network built afresh by the
    trainer class, with the weights as nnU-Net's checkpoint holds them (those of the plain network:
    the trainer's is compiled on CUDA, and its own names carry the wrapper's ``_orig_mod.``); the
    predictor compiles it only where nnUNet_compile says so."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunetv2_vismae.training.base import unwrap

    trainer = load_trainer(cls, plans, device)
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets the mirroring axes
    network = cls.build_network_architecture(
        trainer.plans_manager,
        trainer.configuration_manager,
        trainer.num_input_channels,
        trainer.label_manager.num_segmentation_heads,
        enable_deep_supervision=False,
    )
    predictor = nnUNetPredictor(device=device, allow_tqdm=False, verbose=False, verbose_preprocessing=False)
    predictor.manual_initialization(
        network,
        trainer.plans_manager,
        trainer.configuration_manager,
        [unwrap(trainer.network).state_dict()],
        trainer.dataset_json,
        cls.__name__,
        trainer.inference_allowed_mirroring_axes,
    )
    return predictor
