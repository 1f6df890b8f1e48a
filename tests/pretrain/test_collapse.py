"""The collapse diagnostic: effective rank of each encoder stage's features, logged during pretraining."""

from __future__ import annotations

import csv

import pytest
import torch

from pretrain.collapse import effective_rank, stage_ranks, tokens_by_channels
from pretrain.runtime import setup_runtime
from pretrain.train import Pretrainer
from tests.pretrain.helpers import TINY, parse


def test_features_spread_evenly_over_n_directions_have_rank_n():
    n = 6
    even = torch.cat([torch.eye(n), -torch.eye(n)])  # column means 0: centring changes nothing
    assert effective_rank(even) == pytest.approx(n)
    assert effective_rank(even * 1e3) == pytest.approx(n)  # the scale does not matter
    assert effective_rank(torch.eye(n)) == pytest.approx(n - 1)  # centring removes the common direction


def test_features_on_one_line_have_rank_one_and_constant_features_rank_zero():
    generator = torch.Generator().manual_seed(0)
    along = torch.randn(50, 1, generator=generator) @ torch.randn(1, 8, generator=generator)
    assert effective_rank(along + 3.0) == pytest.approx(1.0)  # an offset is centred away
    assert effective_rank(torch.full((50, 8), 2.5)) == 0.0
    uneven = torch.cat([torch.eye(2) * torch.tensor([1.0, 0.1]), -torch.eye(2) * torch.tensor([1.0, 0.1])])
    assert 1.0 < effective_rank(uneven) < 1.2  # one strong direction and a weak one


def test_a_feature_map_becomes_tokens_by_channels_and_other_shapes_are_refused():
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    tokens = tokens_by_channels(features)
    assert tokens.shape == (40, 3) and torch.equal(tokens[7], features[0, :, 1, 2])
    with pytest.raises(ValueError, match="expects a tokens x channels matrix, got shape"):
        effective_rank(features)


def test_stage_ranks_run_in_eval_mode_and_restore_the_mode():
    from pretrain.families.cnn import CnnMAE

    from ..training.test_frozen_trainers import tiny_cnn_network

    encoder = CnnMAE(tiny_cnn_network().encoder, 1).encoder.train()
    modes = []
    encoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    ranks = stage_ranks(encoder, torch.randn(2, 1, 32, 32))
    assert modes == [False] and encoder.training
    assert len(ranks) == len(encoder.output_channels)
    assert all(1.0 <= r <= c for r, c in zip(ranks, encoder.output_channels))


def run(out, *flags):
    trainer = Pretrainer(parse([*TINY, "-o", str(out), *flags]), setup_runtime("cpu")).setup()
    trainer.train()
    return trainer


def test_log_csv_gets_a_rank_column_per_stage_every_save_every_steps(png_folder, tmp_path, capsys):
    trainer = run(tmp_path / "run", "-i", png_folder, "--steps", "3", "--save-every", "2")
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-2:] == ["rank_s1", "rank_s2"]  # TINY: two stages of 24 and 48 channels
    assert [bool(r["rank_s1"]) for r in rows] == [False, True, True]  # step 2 (save) and 3 (the last)
    assert all(1.0 <= float(rows[1][f"rank_s{i + 1}"]) <= c for i, c in enumerate((24, 48)))
    assert "Step 2: effective feature rank per stage (of its channels) " in capsys.readouterr().out
    assert trainer.family.stage_channels(trainer.model) == [24, 48]


def test_measuring_the_rank_changes_neither_the_weights_nor_the_data_stream(png_folder, tmp_path):
    flags = ["-i", png_folder, "--steps", "3", "--drop-path", "0.2"]  # drop path draws random numbers in training
    every_step = run(tmp_path / "each", *flags, "--save-every", "1")
    at_the_end = run(tmp_path / "end", *flags, "--save-every", "100")
    assert every_step.data_position == at_the_end.data_position
    for (name, a), b in zip(every_step.model.state_dict().items(), at_the_end.model.state_dict().values()):
        assert torch.equal(a, b), name
