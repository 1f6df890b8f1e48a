"""A resumed pretraining run trains on the corpus it started on: -o inside an -i folder is refused (the
run would train on its own previews and plots), and a corpus that changed since state.pt (files added,
a pack packed again from changed files) stops the resume with one sentence unless
--accept-changed-data says to go on."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.cli import main
from pretrain.pack_cli import main as pack_main
from tests.pretrain.helpers import TINY

FAST = [*TINY, "--precision", "fp32"]


def _error(capsys, prog: str = "nnUNetv2_vismae_pretrain") -> str:
    """The one error line on stderr (progress bars aside)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"{prog}: ")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("inside", ["", "runs/mae"])
def test_an_output_folder_in_an_input_folder_is_refused(png_folder, capsys, inside):
    out = os.path.join(png_folder, inside)
    before = sorted(os.listdir(png_folder))
    assert main([*FAST, "-i", png_folder, "-o", out, "--steps", "1"]) == 2
    assert _error(capsys) == (
        f"nnUNetv2_vismae_pretrain: error: Output folder {out} is in input folder {png_folder}, where a run "
        "would train on its own previews and plots; choose an -o outside every -i folder."
    )
    assert sorted(os.listdir(png_folder)) == before


def _add_image(folder) -> None:
    Image.fromarray(np.full((40, 40), 7, np.uint8) + np.eye(40, dtype=np.uint8) * 90).save(
        os.path.join(folder, "new.png")
    )


def test_a_folder_that_changed_stops_the_resume_unless_accepted(png_folder, tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = [*FAST, "-i", png_folder, "-o", out]
    assert main([*argv, "--steps", "1"]) == 0
    _add_image(png_folder)
    assert main([*argv, "--steps", "2"]) == 2
    assert _error(capsys) == (
        f"nnUNetv2_vismae_pretrain: error: The data changed since {out}/state.pt was saved (source {png_folder}: "
        "4 files and 4 slices then, 5 files and 5 slices now); rerun with the data of then, use a new -o, or "
        "add --accept-changed-data to go on with the data of now."
    )
    assert torch.load(os.path.join(out, "state.pt"), weights_only=True)["step"] == 1
    assert main([*argv, "--steps", "2", "--accept-changed-data"]) == 0
    assert "Note: the data changed since" in capsys.readouterr().out
    assert main([*argv, "--steps", "3"]) == 0  # the state now records the data of now


def test_a_pack_packed_again_from_changed_files_stops_the_resume(png_folder, tmp_path, capsys):
    pack, out = str(tmp_path / "pack"), str(tmp_path / "run")
    assert pack_main(["-i", png_folder, "-o", pack, "-np", "1"]) == 0
    argv = [*FAST, "--pack", pack, "-o", out]
    assert main([*argv, "--steps", "1"]) == 0
    changed = os.path.join(png_folder, "rgb0.png")
    Image.fromarray(255 - np.asarray(Image.open(changed))).save(changed)  # same shape, other pixels
    os.utime(changed, ns=(1, 1))
    assert pack_main(["-i", png_folder, "-o", pack, "-np", "1"]) == 0
    capsys.readouterr()
    assert main([*argv, "--steps", "2"]) == 2
    assert _error(capsys).endswith(
        f"(source {pack}: the same number of files and slices, but other files, pixels or normalization); rerun "
        "with the data of then, use a new -o, or add --accept-changed-data to go on with the data of now."
    )
