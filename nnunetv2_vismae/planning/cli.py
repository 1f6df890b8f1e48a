"""``nnUNetv2_vismae_plan``: write nnUNetVisMAEPlans.json next to the dataset's nnU-Net plans."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunetv2_vismae.architectures import SwinEncoderConfig
from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.planning.vismae_plans import (
    PlanningError,
    derive_vismae_plans,
    load_plans,
    preprocessed_dataset_folder,
)


def pretrained_encoder(path: str) -> tuple[SwinEncoderConfig, dict]:
    """Encoder config and the plans' checkpoint reference (absolute path and content hash)."""
    from nnunetv2_vismae.checkpoint import CheckpointError, read_encoder_checkpoint

    try:
        checkpoint = read_encoder_checkpoint(path)
    except CheckpointError as e:
        raise PlanningError(str(e)) from None
    if checkpoint.family != "swin":
        raise PlanningError(f"{path} holds a {checkpoint.family!r} encoder; VisMAE plans need a 'swin' one.")
    reference = {"path": str(Path(path).resolve()), "content_hash": checkpoint.content_hash,
                 "family": checkpoint.family}
    return SwinEncoderConfig.from_json(checkpoint.encoder_config), reference


def plan(dataset, source_plans: str, target_plans: str, decoder: str, pretrained: str | None) -> Path:
    folder = preprocessed_dataset_folder(dataset)
    plans = load_plans(folder, source_plans)
    encoder, reference = pretrained_encoder(pretrained) if pretrained else (SwinEncoderConfig(), None)
    derived = derive_vismae_plans(plans, target_plans, encoder, decoder, reference)
    target = folder / f"{target_plans}.json"
    write_json_atomic(target, derived)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description="Derive VisMAE plans (SwinUNet, 2d, same preprocessed "
                                                 "data) from a dataset's nnU-Net plans.")
    parser.add_argument("-d", required=True, help="dataset id or name")
    parser.add_argument("-p", default="nnUNetPlans", help="source nnU-Net plans (default: nnUNetPlans)")
    parser.add_argument("-o", default="nnUNetVisMAEPlans", help="name of the plans to write "
                                                                "(default: nnUNetVisMAEPlans)")
    parser.add_argument("--pretrained", help="encoder checkpoint to fine-tune from (its encoder config is used)")
    parser.add_argument("--decoder", default="conv", choices=["conv", "swin"],
                        help="conv: SwinUNETR-style conv decoder with a full-resolution stem skip "
                             "(default); swin: VIS-MAE's Swin-UNet decoder")
    args = parser.parse_args(argv)
    try:
        target = plan(args.d, args.p, args.o, args.decoder, args.pretrained)
    except PlanningError as e:
        print(f"nnUNetv2_vismae_plan: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"Wrote {target}\nTrain with: nnUNetv2_train {args.d} 2d FOLD -p {args.o} -tr VisMAETrainer")


if __name__ == "__main__":
    main()
