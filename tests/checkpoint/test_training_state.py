"""The resumable state file that pretraining and classification share."""

from __future__ import annotations

import pytest
import torch

from nnunetv2_vismae.checkpoint import CheckpointError
from nnunetv2_vismae.checkpoint.state import STATE_VERSION, load_state, save_state


def test_a_state_round_trips_with_its_version(tmp_path):
    path = tmp_path / "state.pt"
    save_state(path, {"epoch": 3, "weights": torch.arange(4.0), "history": [{"loss": 0.5}]})
    state = load_state(path, "start over")
    assert state["version"] == STATE_VERSION and state["epoch"] == 3 and state["history"] == [{"loss": 0.5}]
    assert torch.equal(state["weights"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary left


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"epoch 3\n", r"state.pt is plain text, not a training state written by torch.save; start over\.$"),
        (b"PK\x03\x04 cut short", r"state.pt cannot be read \(\w+\); start over\.$"),
    ],
)
def test_an_unusable_state_is_one_sentence_ending_in_the_callers_advice(tmp_path, content, expected):
    path = tmp_path / "state.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        load_state(path, "start over")
