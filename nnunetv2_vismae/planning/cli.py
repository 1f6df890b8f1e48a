"""``nnUNetv2_vismae_plan``: write the fine-tuning plans of a checkpoint's family (``planning/families.py``)
next to the dataset's nnU-Net plans."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from nnunetv2_vismae.architectures.swin_unet import DECODERS
from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY, checkpoint_reference
from nnunetv2_vismae.flags import OneSentenceParser, console_script
from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.io.folders import unwritable_reason
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, preprocessed_folder
from nnunetv2_vismae.planning.errors import PlanningError
from nnunetv2_vismae.planning.families import FAMILY_WITHOUT_CHECKPOINT, PLANNING, PlanRequest, planning_of
from nnunetv2_vismae.planning.vismae_plans import NETWORK_CLASS, load_plans

PROG = "nnUNetv2_vismae_plan"
# the plans nnU-Net's own planners write: stock nnUNetv2_train -p NAME must keep training nnU-Net's network
NNUNET_PLANS = (
    "nnUNetPlans",
    "nnUNetResEncUNetPlans",
    "nnUNetResEncUNetMPlans",
    "nnUNetResEncUNetLPlans",
    "nnUNetResEncUNetXLPlans",
)
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


def fine_tuning_trainer(plans_file: Path) -> str:
    """The trainer for plans this command wrote: that of the family of the checkpoint they name."""
    reference = json.loads(plans_file.read_text())["configurations"][CONFIGURATION_2D].get(PRETRAINED_KEY) or {}
    return planning_of(reference.get("family", FAMILY_WITHOUT_CHECKPOINT)).trainer


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
        config = configurations[CONFIGURATION_2D]
        return list(configurations) == [CONFIGURATION_2D] and (
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
    family = planning_of(checkpoint.family if checkpoint else FAMILY_WITHOUT_CHECKPOINT)
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
    )
    derived = family.derive(request)
    target = folder / f"{target_plans}.json"
    if target.exists() and not written_by_us(target):
        raise PlanningError(
            f"{target} holds plans that {PROG} did not write, which it never overwrites; give -o another name."
        )
    write_json_atomic(target, derived)
    return target


@console_script(PROG)
def main(argv=None):
    by_family = ", ".join(f"{planning.plans} for a {family} checkpoint" for family, planning in PLANNING.items())
    parser = OneSentenceParser(
        prog=PROG,
        description=f"Derive fine-tuning plans ({CONFIGURATION_2D}, same preprocessed data) from a dataset's nnU-Net "
        f"plans: {by_family}; without a checkpoint, {PLANNING[FAMILY_WITHOUT_CHECKPOINT].plans}.",
    )
    parser.add_argument("-d", required=True, help="dataset id or name")
    parser.add_argument("-p", default="nnUNetPlans", help="source nnU-Net plans (default: nnUNetPlans)")
    parser.add_argument("-o", help=f"name of the plans to write (default: {by_family})")
    parser.add_argument(
        "--pretrained",
        help="encoder checkpoint to fine-tune from (swin: its encoder config is used; "
        f"cnn: it must come from the {CONFIGURATION_2D} network of -p)",
    )
    parser.add_argument(
        "--decoder",
        default="conv",
        choices=DECODERS,
        help="SwinUNet's decoder: conv, a SwinUNETR-style conv decoder with a full-resolution stem skip "
        "(default); swin, VIS-MAE's Swin-UNet decoder",
    )
    args = parser.parse_args(argv)
    target = plan(args.d, args.p, args.o, args.decoder, args.pretrained)
    print(
        f"Wrote {target}\nTrain with: nnUNetv2_train {args.d} {CONFIGURATION_2D} FOLD -p {target.stem} "
        f"-tr {fine_tuning_trainer(target)}"
    )


if __name__ == "__main__":
    sys.exit(main())
