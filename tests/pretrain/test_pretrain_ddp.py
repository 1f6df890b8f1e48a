"""Two-process DDP on CPU (gloo): gradients really are synchronized across ranks."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.pretrain.helpers import TINY

pytestmark = pytest.mark.slow  # two new Python processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, argv: list[str], result: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from torch.nn.parallel import DistributedDataParallel

    from tests.pretrain.helpers import parse
    from pretrain.runtime import setup_runtime
    from pretrain.train import Pretrainer

    runtime = setup_runtime("cpu")
    trainer = Pretrainer(parse(argv), runtime).setup()
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    first_sample = trainer.dataset[0]
    trainer.train()
    torch.save(
        {
            "initial": initial,
            "final": trainer.model.state_dict(),
            "first_sample": first_sample,
            "wrapped": isinstance(trainer.ddp, DistributedDataParallel),
            "lr": trainer.lr,
        },
        result.format(rank=rank),
    )
    runtime.shutdown()


def test_two_process_ddp_keeps_ranks_identical(png_folder, tmp_path):
    out = str(tmp_path / "run")
    argv = [*TINY, "-i", png_folder, "-o", out, "--steps", "3", "--save-every", "100", "--lr", "1e-3"]
    result = str(tmp_path / "rank{rank}.pt")
    mp.spawn(_worker, args=(2, _free_port(), argv, result), nprocs=2, join=True)
    r0, r1 = (torch.load(result.format(rank=r), weights_only=True) for r in (0, 1))
    assert r0["wrapped"] and r1["wrapped"]
    assert not torch.equal(r0["first_sample"], r1["first_sample"])  # ranks read different data
    for name, p0 in r0["final"].items():
        assert torch.equal(p0, r1["final"][name]), name  # gradients were averaged
    changed = [n for n, p in r0["final"].items() if p.is_floating_point() and not torch.equal(p, r0["initial"][n])]
    assert any(n.startswith("encoder.layers.") for n in changed) and "mask_token" in changed
    assert os.path.isfile(os.path.join(out, "encoder.safetensors"))  # written once, by rank 0
    assert sorted(os.listdir(out)) == sorted(
        ["encoder.safetensors", "state.pt", "log.csv", "loss.png"]
        + [f for f in os.listdir(out) if f.startswith("manifest_")]
    )
    assert len([f for f in os.listdir(out) if f.startswith("manifest_")]) == 1
