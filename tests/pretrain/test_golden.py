"""Golden outputs of 2D pretraining for both families on a tiny generated nnU-Net dataset: what the
first steps see (data and masks, exactly), the learning rate of every step, the losses, the optimizer's
weight-decay groups, and a resume that continues as the uninterrupted run. Refactors keep them.

Data and masks are pinned by hashes of their bytes (the data is stored float32 copied without
arithmetic, the masks are integer draws); the lr to 1e-12 (libm's cosine may differ by an ulp between
CPUs); losses to rtol 1e-5 (fp32 kernels differ in their last bits between CPUs).
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from pretrain.runtime import setup_runtime
from pretrain.train import Pretrainer
from tests.pretrain.helpers import TINY, parse, write_nnunet_dataset
from tests.pretrain.test_cnn_family import PLAIN

STEPS = ["--steps", "5", "--warmup-steps", "2", "--save-every", "100", "--precision", "fp32"]
GOLDEN = {
    "swin": {
        "data": "d084d0e55460517c",
        "masks": "8228ff9e391a7d1b",
        "lrs": [3.90625e-06, 7.8125e-06, 7.8125e-06, 5.859375e-06, 1.953125000000001e-06],
        "losses": [1.1070902347564697, 1.2581850290298462, 1.1919015645980835, 1.2050169706344604, 1.1802729368209839],
        "groups": [(0.0, 40, "17b89a003f69df86"), (0.05, 16, "198b12f361fc2eb7")],
    },
    "cnn": {
        "data": "d084d0e55460517c",
        "masks": "01e45bcf5cba7066",
        "lrs": [3.90625e-06, 7.8125e-06, 7.8125e-06, 5.859375e-06, 1.953125000000001e-06],
        "losses": [1.5917056798934937, 1.7315235137939453, 1.6372445821762085, 1.7040742635726929, 1.79061758518219],
        "groups": [(0.0, 33, "147782ba5afe2c2f"), (0.05, 14, "cd6c207b3568dbc9")],
    },
}


def digest(tensors: list[torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for t in tensors:
        sha.update(t.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """Dataset 1: two cases of 3 and 2 slices (float32 stored as is), plans naming a small 2D PlainConvUNet."""
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    folder, _ = write_nnunet_dataset(str(tmp_path))
    plans_file = os.path.join(folder, "nnUNetPlans.json")
    with open(plans_file) as f:
        plans = json.load(f)
    plans["configurations"]["2d"]["architecture"] = PLAIN
    with open(plans_file, "w") as f:
        json.dump(plans, f)
    return tmp_path


def recorded_run(family: str, out, stop_after: int | None = None) -> tuple[Pretrainer, dict]:
    """A run (or its resumption) in ``out`` with every step's batch, mask, lr and loss recorded."""
    trainer = Pretrainer(parse([*TINY, *STEPS, "--encoder", family, "-d", "1", "-o", str(out)]), setup_runtime("cpu"))
    trainer.setup()
    record = {"imgs": [], "masks": [], "lrs": [], "losses": [], "groups": weight_decay_groups(trainer)}
    train_step = trainer.train_step

    def recording_step(batches, generator):
        lr = trainer.optimizer.param_groups[0]["lr"]
        outcome = train_step(batches, generator)
        record["imgs"].append(outcome.imgs)
        record["masks"].append(outcome.mask)
        record["lrs"].append(lr)
        record["losses"].append(trainer.last_loss)
        return outcome

    trainer.train_step = recording_step
    assert trainer.train(stop_after=stop_after) == 0
    return trainer, record


def weight_decay_groups(trainer: Pretrainer) -> list[tuple[float, int, str]]:
    """(weight decay, number of tensors, hash of their names) of each optimizer group, in order."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    groups = []
    for group in trainer.optimizer.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        groups.append(
            (group["weight_decay"], len(group_names), hashlib.sha256("\n".join(group_names).encode()).hexdigest()[:16])
        )
    return groups


@pytest.mark.parametrize("family", sorted(GOLDEN))
def test_golden_run_and_resume(family, dataset):
    full, record = recorded_run(family, dataset / "full")
    golden = GOLDEN[family]
    assert digest(record["imgs"]) == golden["data"] and digest(record["masks"]) == golden["masks"]
    assert record["lrs"] == pytest.approx(golden["lrs"], rel=1e-12, abs=0)
    assert record["losses"] == pytest.approx(golden["losses"], rel=1e-5, abs=0)
    assert record["groups"] == golden["groups"]

    first, _ = recorded_run(family, dataset / "split", stop_after=2)
    resumed, rest = recorded_run(family, dataset / "split")
    assert (first.step, resumed.step) == (2, 5)
    assert digest(rest["imgs"]) == digest(record["imgs"][2:]) and digest(rest["masks"]) == digest(record["masks"][2:])
    assert rest["lrs"] == record["lrs"][2:] and rest["losses"] == record["losses"][2:]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
