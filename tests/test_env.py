"""``nnUNetv2_vismae_env``, which a shell profile runs at every login: its export line, printed
without loading torch or nnU-Net."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from nnunetv2_vismae.io.nnunet import ext_trainer_folder, ext_trainer_value

ROOT = Path(__file__).resolve().parents[1]


def test_env_command_appends_to_existing_value(monkeypatch, capsys):
    from nnunetv2_vismae.env import main

    folder = ext_trainer_folder()
    assert ext_trainer_value("/a") == os.pathsep.join(["/a", folder])
    assert ext_trainer_value(os.pathsep.join([folder, "/a"])) == os.pathsep.join([folder, "/a"])
    monkeypatch.setenv("nnUNet_extTrainer", "/mine")
    main([])
    out = capsys.readouterr().out
    assert out.startswith("export nnUNet_extTrainer=") and "/mine" in out and folder in out


def test_env_command_imports_neither_torch_nor_nnunet():
    """The console script's own module, run as the script runs it: a shell profile cannot wait ten
    seconds and a gigabyte for torch and nnU-Net's trainer."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["nnUNetv2_vismae_env"]
    module, function = target.split(":")
    code = (
        f"import sys; from {module} import {function}; {function}([]); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'nnunetv2', 'numpy', 'timm'}))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    export, heavy = out.splitlines()
    assert export.startswith("export nnUNet_extTrainer=") and heavy == "[]", out
