"""The trainer-name grammar: what the benchmark builds, the trainers parse back, for every combination."""

import itertools
import subprocess
import sys

import pytest

from nnunetv2_vismae.trainer_names import TrainerName, parse_trainer_name

BASES = ("nnUNetTrainer", "VisMAETrainerFrozenScratch", "nnUNetTrainerMAEScratchLowLR")
LABELS_AND_SEEDS = [(None, 0)] + [(labels, seed) for labels in (1, 25, 100) for seed in (0, 1, 12)]


@pytest.mark.parametrize("base", BASES)
def test_every_name_built_parses_back_to_its_settings(base):
    for (labels, seed), epochs, iters in itertools.product(LABELS_AND_SEEDS, (None, 1, 100), (None, 1, 250)):
        name = TrainerName(base, labels, seed, epochs, iters)
        assert parse_trainer_name(str(name)) == name, str(name)


def test_names_read_as_nnunet_variants():
    assert str(TrainerName("VisMAETrainer", 25, 1, 5)) == "VisMAETrainer_labels25_seed1_5epochs"
    assert str(TrainerName("nnUNetTrainer", 100, 0, iters=20)) == "nnUNetTrainer_labels100_20iters"
    assert parse_trainer_name("VisMAETrainer_labels25_seed0").suffixes() == {"labels": 25}  # seed 0: the default
    assert parse_trainer_name("VisMAETrainer").suffixes() == {}


@pytest.mark.parametrize(
    "name", ["VisMAETrainer_0epochs", "VisMAETrainer_5", "VisMAETrainer_5epochs_labels25", "VisMAE2_5epochs", "_1iters"]
)
def test_what_is_not_a_trainer_name(name):
    assert parse_trainer_name(name) is None


def test_a_seed_without_labels_is_refused():
    with pytest.raises(ValueError, match="needs a label percentage"):
        TrainerName("VisMAETrainer", seed=1)


def test_names_are_built_and_parsed_without_torch():
    """The benchmark builds names in a process that has not imported torch, and need not."""
    code = "import sys, nnunetv2_vismae.trainer_names, nnunetv2_vismae.benchmark.arms; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
