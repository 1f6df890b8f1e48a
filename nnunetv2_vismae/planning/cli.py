"""``nnUNetv2_vismae_plan``: write nnUNetVisMAEPlans.json (swin) or nnUNetMAEPlans.json (cnn checkpoint)
next to the dataset's nnU-Net plans."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from nnunetv2_vismae.architectures import SwinEncoderConfig
from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY, checkpoint_reference
from nnunetv2_vismae.flags import OneSentenceParser, console_script
from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.io.folders import unwritable_reason
from nnunetv2_vismae.io.nnunet import preprocessed_folder
from nnunetv2_vismae.planning.cnn_plans import MAE_PLANS, MAE_TRAINER, check_checkpoint_fits, derive_mae_plans
from nnunetv2_vismae.planning.vismae_plans import (
    NETWORK_CLASS,
    PlanningError,
    derive_vismae_plans,
    load_plans,
)


PROG = "nnUNetv2_vismae_plan"
VISMAE_PLANS, VISMAE_TRAINER = "nnUNetVisMAEPlans", "VisMAETrainer"
# the plans nnU-Net's own planners write: stock nnUNetv2_train -p NAME must keep training nnU-Net's network
NNUNET_PLANS = (
    "nnUNetPlans",
    "nnUNetResEncUNetPlans",
    "nnUNetResEncUNetMPlans",
    "nnUNetResEncUNetLPlans",
    "nnUNetResEncUNetXLPlans",
)
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


def num_input_channels(folder: Path) -> int:
    dataset = json.loads((folder / "dataset.json").read_text())
    return len(dataset.get("channel_names") or dataset.get("modality") or {"0": ""})


def pretrained_encoder(path: str, checkpoint=None) -> tuple[SwinEncoderConfig, dict]:
    """Encoder config and the plans' checkpoint reference (absolute path and content hash)."""
    checkpoint = checkpoint or read_encoder_checkpoint(path)
    if checkpoint.family != "swin":
        raise PlanningError(f"{path} holds a {checkpoint.family!r} encoder; VisMAE plans need a 'swin' one.")
    return SwinEncoderConfig.from_json(checkpoint.encoder_config), checkpoint_reference(path, checkpoint)


def fine_tuning_trainer(plans_file: Path) -> str:
    reference = json.loads(plans_file.read_text())["configurations"]["2d"].get(PRETRAINED_KEY) or {}
    return MAE_TRAINER if reference.get("family") == "cnn" else VISMAE_TRAINER


def check_plans_name(name: str, source_plans: str) -> None:
    """A name for the plans to write: a file name in the dataset's folder (no path), neither the source
    plans nor nnU-Net's own."""
    if not PLAIN_NAME.fullmatch(name):
        raise PlanningError(f"-o must be a plain plans name (ASCII letters, digits, '_' and '-'), got {name!r}.")
    if name == source_plans:
        raise PlanningError(f"-o {name} is the source plans (-p); give the plans to write another name.")
    if name in NNUNET_PLANS:
        raise PlanningError(f"-o {name} is the name of nnU-Net's own plans; give the plans to write another name.")


def written_by_us(plans_file: Path) -> bool:
    """Plans this command wrote: one 2d configuration that trains SwinUNet or names a pretrained encoder."""
    try:
        configurations = json.loads(plans_file.read_text())["configurations"]
        config = configurations["2d"]
        return list(configurations) == ["2d"] and (
            config["architecture"]["network_class_name"] == NETWORK_CLASS or PRETRAINED_KEY in config
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def plan(dataset, source_plans: str, target_plans: str | None, decoder: str, pretrained: str | None) -> Path:
    """Write the plans (default name by the checkpoint's family) and return their file."""
    if target_plans is not None:
        check_plans_name(target_plans, source_plans)
    folder = preprocessed_folder(dataset, PlanningError)
    plans = load_plans(folder, source_plans)
    checkpoint = read_encoder_checkpoint(pretrained) if pretrained else None
    cnn = checkpoint is not None and checkpoint.family == "cnn"
    target_plans = target_plans or (MAE_PLANS if cnn else VISMAE_PLANS)
    problem = unwritable_reason(folder)
    if problem:
        raise PlanningError(f"Cannot write plans {target_plans} into {folder}: {problem}.")
    if cnn:  # nnU-Net's own network, unchanged
        check_checkpoint_fits(plans, source_plans, num_input_channels(folder), checkpoint)
        derived = derive_mae_plans(plans, target_plans, checkpoint_reference(pretrained, checkpoint))
    else:
        encoder, reference = pretrained_encoder(pretrained, checkpoint) if pretrained else (SwinEncoderConfig(), None)
        derived = derive_vismae_plans(plans, target_plans, encoder, decoder, reference)
    target = folder / f"{target_plans}.json"
    if target.exists() and not written_by_us(target):
        raise PlanningError(
            f"{target} holds plans that {PROG} did not write, which it never overwrites; give -o another name."
        )
    write_json_atomic(target, derived)
    return target


@console_script(PROG)
def main(argv=None):
    parser = OneSentenceParser(
        prog=PROG,
        description="Derive fine-tuning plans (2d, same preprocessed data) from "
        "a dataset's nnU-Net plans: SwinUNet for a swin checkpoint (or "
        "none), nnU-Net's own network for a cnn checkpoint.",
    )
    parser.add_argument("-d", required=True, help="dataset id or name")
    parser.add_argument("-p", default="nnUNetPlans", help="source nnU-Net plans (default: nnUNetPlans)")
    parser.add_argument(
        "-o", help="name of the plans to write (default: nnUNetVisMAEPlans, or nnUNetMAEPlans for a cnn checkpoint)"
    )
    parser.add_argument(
        "--pretrained",
        help="encoder checkpoint to fine-tune from (swin: its encoder config is used; "
        "cnn: it must come from the 2d network of -p)",
    )
    parser.add_argument(
        "--decoder",
        default="conv",
        choices=["conv", "swin"],
        help="conv: SwinUNETR-style conv decoder with a full-resolution stem skip "
        "(default); swin: VIS-MAE's Swin-UNet decoder",
    )
    args = parser.parse_args(argv)
    target = plan(args.d, args.p, args.o, args.decoder, args.pretrained)
    print(
        f"Wrote {target}\nTrain with: nnUNetv2_train {args.d} 2d FOLD -p {target.stem} "
        f"-tr {fine_tuning_trainer(target)}"
    )


if __name__ == "__main__":
    sys.exit(main())
