"""``nnUNetv2_vismae_env``: print the shell line that lets nnU-Net's own commands find our trainers."""
from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

import nnunetv2_vismae


def ext_trainer_folder() -> str:
    return str(Path(nnunetv2_vismae.__file__).parent / "nnunet_ext")


def ext_trainer_value(current: str | None) -> str:
    """nnUNet_extTrainer with our folder appended to whatever the user already has."""
    parts = [p for p in (current or "").split(os.pathsep) if p]
    folder = ext_trainer_folder()
    return os.pathsep.join(parts if folder in parts else parts + [folder])


def main(argv=None):
    argparse.ArgumentParser(
        description="Print the export line for nnUNet_extTrainer so that nnUNetv2_train and "
                    "nnUNetv2_predict find VisMAETrainer and its variants. "
                    'Use: eval "$(nnUNetv2_vismae_env)"').parse_args(argv)
    print(f"export nnUNet_extTrainer={shlex.quote(ext_trainer_value(os.environ.get('nnUNet_extTrainer')))}")


if __name__ == "__main__":
    main()
