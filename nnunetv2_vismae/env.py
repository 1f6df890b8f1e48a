"""``nnUNetv2_vismae_env``: print the shell line that lets nnU-Net's own commands find our trainers.

A shell profile runs it at every login, so it lives outside ``training`` and imports neither torch
nor nnU-Net."""

from __future__ import annotations

import os
import shlex
import sys

from nnunetv2_vismae.flags import OneSentenceParser, console_script
from nnunetv2_vismae.io.nnunet import ext_trainer_value

PROG = "nnUNetv2_vismae_env"


@console_script(PROG)
def main(argv=None):
    OneSentenceParser(
        prog=PROG,
        description="Print the export line for nnUNet_extTrainer so that nnUNetv2_train and "
        "nnUNetv2_predict find VisMAETrainer and its variants. "
        'Use: eval "$(nnUNetv2_vismae_env)"',
    ).parse_args(argv)
    print(f"export nnUNet_extTrainer={shlex.quote(ext_trainer_value(os.environ.get('nnUNet_extTrainer')))}")


if __name__ == "__main__":
    sys.exit(main())
