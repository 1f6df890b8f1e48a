"""``nnUNetv2_vismae_plan``: write the fine-tuning plans of a checkpoint's family (``planning/families.py``)
next to the dataset's nnU-Net plans."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

from nnunetv2_vismae.architectures.swin_unet import DECODERS
from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY, checkpoint_reference
from nnunetv2_vismae.flags import OneSentenceParser, console_script
from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.io.folders import unwritable_reason
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, CONFIGURATION_3D, configuration_dims, preprocessed_folder
from nnunetv2_vismae.planning.errors import PlanningError
from nnunetv2_vismae.planning.families import (
    FAMILY_WITHOUT_CHECKPOINT,
    PLANNING,
    PlanRequest,
    check_plans_dims,
    planning_of,
)
from nnunetv2_vismae.planning.vismae_plans import NETWORK_CLASSES, load_plans

PROG = "nnUNetv2_vismae_plan"


class Planned(NamedTuple):
    """What ``plan`` wrote: the plans file, the configuration planned in it, and the trainer it is for."""

    file: Path
    configuration: dict
    trainer: str


# the plans nnU-Net's own planners write: stock nnUNetv2_train -p NAME must keep training nnU-Net's network
NNUNET_PLANS = (
    "nnUNetPlans",
    "nnUNetResEncUNetPlans",
    "nnUNetResEncUNetMPlans",
    "nnUNetResEncUNetLPlans",
    "nnUNetResEncUNetXLPlans",
)
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_plans_name(name: str, source_plans: str) -> None:
    """A name for the plans to write: a file name in the dataset's folder (no path), neither the source
    plans nor nnU-Net's own."""
    if not PLAIN_NAME.fullmatch(name):
        raise PlanningError(f"-o must be a plain plans name (ASCII letters, digits, '_' and '-'), got {name!r}.")
    if name == source_plans:
        raise PlanningError(f"-o {name} is the source plans (-p); give the plans to write another name.")
    if name in NNUNET_PLANS:
        raise PlanningError(f"-o {name} is the name of nnU-Net's own plans; give the plans to write another name.")


def _written_by_us(configuration) -> bool:
    """A configuration this command writes: one that trains SwinUNet or Swin3dUNet or names a pretrained encoder,
    which no configuration of nnU-Net's own plans does."""
    return configuration["architecture"]["network_class_name"] in NETWORK_CLASSES or PRETRAINED_KEY in configuration


def written_by_us(plans_file: Path) -> bool:
    """Plans this command wrote: each of their configurations is one it writes."""
    try:
        configurations = json.loads(plans_file.read_text())["configurations"]
        return bool(configurations) and all(_written_by_us(c) for c in configurations.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def kept_configurations(target: Path, derived: dict) -> dict:
    """``derived`` with the other configurations the plans at ``target`` had (a 2d one stays when
    3d_fullres is added); PlanningError when plans there were not written by this command."""
    if not target.exists():
        return derived
    if not written_by_us(target):
        raise PlanningError(
            f"{target} holds plans that {PROG} did not write, which it never overwrites; give -o another name."
        )
    earlier = json.loads(target.read_text())["configurations"]
    return {**derived, "configurations": {**earlier, **derived["configurations"]}}


def check_checkpoint_dims(checkpoint, plans: dict, source_plans: str, configuration: str) -> None:
    """The checkpoint's encoder has as many spatial dimensions as the configuration (one sentence otherwise)."""
    dims = configuration_dims(plans, configuration, PlanningError)
    if checkpoint.spatial_dims != dims:
        raise PlanningError(
            f"Encoder checkpoint {checkpoint.path} holds a {checkpoint.spatial_dims}D encoder, but configuration "
            f"{configuration} of plans {source_plans} is {dims}D; plan the configuration it was pretrained on."
        )


def plan(
    dataset,
    source_plans: str,
    target_plans: str | None,
    decoder: str,
    pretrained: str | None,
    configuration: str = CONFIGURATION_2D,
    checkpoint_network: bool = False,
) -> Planned:
    """Write the plans of ``configuration`` (default name by the checkpoint's family); what was written."""
    if target_plans is not None:
        check_plans_name(target_plans, source_plans)
    if checkpoint_network and not pretrained:
        raise PlanningError("--checkpoint-network plans the network of a checkpoint; name it with --pretrained.")
    folder = preprocessed_folder(dataset, PlanningError)
    plans = load_plans(folder, source_plans, configuration)
    checkpoint = read_encoder_checkpoint(pretrained) if pretrained else None
    dims = configuration_dims(plans, configuration, PlanningError)
    family_name = checkpoint.family if checkpoint else FAMILY_WITHOUT_CHECKPOINT[dims]
    family = planning_of(family_name)
    check_plans_dims(family_name, dims, configuration)
    if checkpoint:
        check_checkpoint_dims(checkpoint, plans, source_plans, configuration)
    target_plans = target_plans or family.plans
    problem = unwritable_reason(folder)
    if problem:
        raise PlanningError(f"Cannot write plans {target_plans} into {folder}: {problem}.")
    request = PlanRequest(
        plans,
        source_plans,
        target_plans,
        folder,
        decoder,
        checkpoint,
        checkpoint_reference(pretrained, checkpoint) if checkpoint else None,
        configuration,
        checkpoint_network,
    )
    derived = family.derive(request)
    target = folder / f"{target_plans}.json"
    write_json_atomic(target, kept_configurations(target, derived))
    return Planned(target, derived["configurations"][configuration], family.trainer)


def planned_network_line(config: dict) -> str:
    """What --checkpoint-network planned: the network, patch and batch size the trainer will use."""
    network = config["architecture"]["network_class_name"].rsplit(".", 1)[-1]
    return (
        f"Planned the checkpoint's {network} on {config['data_identifier']} (spacing {config['spacing']}): "
        f"patch size {config['patch_size']}, batch size {config['batch_size']}."
    )


@console_script(PROG)
def main(argv=None):
    by_family = ", ".join(f"{planning.plans} for a {family} checkpoint" for family, planning in PLANNING.items())
    without_checkpoint = ", ".join(
        f"{PLANNING[family].plans} of the {family} family on {dims}D"
        for dims, family in FAMILY_WITHOUT_CHECKPOINT.items()
    )
    parser = OneSentenceParser(
        prog=PROG,
        description="Derive fine-tuning plans of one configuration (same preprocessed data) from a dataset's "
        f"nnU-Net plans: {by_family}; without a checkpoint, {without_checkpoint}. "
        "Other configurations of plans it wrote before are kept.",
    )
    parser.add_argument("-d", required=True, help="dataset id or name")
    parser.add_argument("-p", default="nnUNetPlans", help="source nnU-Net plans (default: nnUNetPlans)")
    parser.add_argument(
        "-c",
        default=CONFIGURATION_2D,
        help=f"configuration to plan (default: {CONFIGURATION_2D}; {CONFIGURATION_3D} for a 3D checkpoint or a 3D "
        "network from scratch)",
    )
    parser.add_argument("-o", help=f"name of the plans to write (default: {by_family})")
    parser.add_argument(
        "--pretrained",
        help="encoder checkpoint to fine-tune from (a Swin's encoder config is used; "
        "cnn: it must come from the -c network of -p, unless --checkpoint-network)",
    )
    parser.add_argument(
        "--checkpoint-network",
        action="store_true",
        help="cnn: plan the checkpoint's own network (e.g. a converted nnssl ResEnc-L) instead of the -c network "
        "of -p, keeping that configuration's spacing, normalization and preprocessed data; the patch size is "
        "rounded up to a multiple of the network's total stride and the batch size is 2",
    )
    parser.add_argument(
        "--decoder",
        default="conv",
        choices=DECODERS,
        help="SwinUNet's decoder: conv, a SwinUNETR-style conv decoder with a full-resolution stem skip "
        "(default); swin, VIS-MAE's Swin-UNet decoder",
    )
    args = parser.parse_args(argv)
    planned = plan(args.d, args.p, args.o, args.decoder, args.pretrained, args.c, args.checkpoint_network)
    if args.checkpoint_network:
        print(planned_network_line(planned.configuration))
    print(
        f"Wrote {planned.file}\nTrain with: nnUNetv2_train {args.d} {args.c} FOLD -p {planned.file.stem} "
        f"-tr {planned.trainer}"
    )


if __name__ == "__main__":
    sys.exit(main())
