"""Two-process DDP on CPU (gloo): gradients really are synchronized across ranks, and every way a
run can stop stops every rank (none is left waiting in a collective)."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.multiprocessing as mp

from tests.pretrain.helpers import TINY

pytestmark = pytest.mark.slow  # two new Python processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)


def run_ranks(worker, args: tuple, world: int = 2, timeout_s: float = 240) -> None:
    """Run ``worker(rank, *args)`` in ``world`` processes; fail if any rank is still running after
    ``timeout_s`` (a rank left waiting in a collective), killing them all."""
    context = mp.start_processes(worker, args=args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"a rank was still running after {timeout_s} s: it hangs")


def _worker(rank: int, world: int, port: int, argv: list[str], result: str) -> None:
    _join_env(rank, world, port)
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
            "ddp_flags": (trainer.ddp.broadcast_buffers, trainer.ddp.gradient_as_bucket_view),
            "lr": trainer.lr,
        },
        result.format(rank=rank),
    )
    runtime.shutdown()


def test_two_process_ddp_keeps_ranks_identical(png_folder, tmp_path):
    out = str(tmp_path / "run")
    argv = [*TINY, "-i", png_folder, "-o", out, "--steps", "3", "--save-every", "100", "--lr", "1e-3"]
    result = str(tmp_path / "rank{rank}.pt")
    run_ranks(_worker, (2, _free_port(), argv, result))
    r0, r1 = (torch.load(result.format(rank=r), weights_only=True) for r in (0, 1))
    assert r0["wrapped"] and r1["wrapped"]
    assert r0["ddp_flags"] == (False, True)  # no buffer broadcast per forward, gradients in the buckets
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


# ------------------------------------------------------------------ runs that must stop every rank
def _scenario_worker(rank: int, world: int, port: int, scenario: str, argvs: list[list[str]], result: str) -> None:
    """Set up (and train) rank ``rank`` with its own argv; write what it ended with: the manifest's
    files, or the sentence of the user error it stopped with."""
    _join_env(rank, world, port)
    import torch.distributed as dist

    from nnunetv2_vismae.errors import UserError
    from pretrain.data import files
    from pretrain.runtime import setup_runtime
    from pretrain.train import Pretrainer
    from tests.pretrain.helpers import parse

    if scenario == "slow_screening":  # rank 0 screens for longer than the default group waits
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=5))
        screen_header = files.screen_header

        def slow_screen_header(path):
            time.sleep(4 if rank == 0 else 0)
            return screen_header(path)

        files.screen_header = slow_screen_header
    runtime = setup_runtime("cpu")
    outcome = {}
    try:
        trainer = Pretrainer(parse(argvs[rank]), runtime).setup()
        outcome["files"] = [s.files for s in trainer.sources]
        if scenario == "non_finite_on_rank_1":
            step = trainer._optimizer_step

            def step_then_poison(loss, grad_norm):
                stepped = step(loss, grad_norm)
                if rank == 1:
                    with torch.no_grad():
                        next(trainer.model.parameters()).view(-1)[0] = float("nan")
                return stepped

            trainer._optimizer_step = step_then_poison
        if scenario == "slow_screening":
            trainer.release()
        else:
            trainer.train()
    except UserError as e:
        outcome["error"] = str(e)
    torch.save(outcome, result.format(rank=rank))
    runtime.shutdown()


def _scenario(scenario: str, argvs: list[list[str]], tmp_path) -> list[dict]:
    result = str(tmp_path / f"{scenario}_rank{{rank}}.pt")
    run_ranks(_scenario_worker, (2, _free_port(), scenario, argvs, result))
    return [torch.load(result.format(rank=r), weights_only=True) for r in (0, 1)]


def test_screening_outlasts_the_default_collective_timeout(png_folder, tmp_path):
    """Each rank screens its share and the shares are gathered on the long-waiting group: rank 0's
    8 s of screening (2 of the 4 files) do not trip the 5 s timeout of the default group."""
    out = str(tmp_path / "run")
    argv = [*TINY, "-i", png_folder, "-o", out, "--steps", "1"]
    r0, r1 = _scenario("slow_screening", [argv, argv], tmp_path)
    assert "error" not in r0 and "error" not in r1, (r0, r1)
    assert r0["files"] == r1["files"] and len(r0["files"][0]) == 4  # one manifest of all files on both
    assert len([f for f in os.listdir(out) if f.startswith("manifest_")]) == 1


def test_ranks_that_see_different_states_all_stop(png_folder, tmp_path):
    """An -o that is not shared: rank 1 finds the state of an earlier run, rank 0 none."""
    from pretrain.runtime import setup_runtime
    from pretrain.train import Pretrainer
    from tests.pretrain.helpers import parse

    flags = [*TINY, "-i", png_folder, "--steps", "2"]
    earlier = str(tmp_path / "earlier")
    Pretrainer(parse([*flags, "-o", earlier]), setup_runtime("cpu")).setup().train(stop_after=1)
    r0, r1 = _scenario("different_states", [[*flags, "-o", str(tmp_path / "new")], [*flags, "-o", earlier]], tmp_path)
    for r in (r0, r1):
        assert "see different state.pt files" in r.get("error", ""), r
        assert "(rank 0: none, rank 1: step 1)" in r["error"] and "every rank (every node) shares" in r["error"]


def test_non_finite_weights_on_one_rank_stop_every_rank(png_folder, tmp_path):
    argv = [*TINY, "-i", png_folder, "-o", str(tmp_path / "run"), "--steps", "3", "--save-every", "1"]
    r0, r1 = _scenario("non_finite_on_rank_1", [argv, argv], tmp_path)
    for r in (r0, r1):
        assert "The weights are no longer finite at step 1" in r.get("error", ""), r
    assert not os.path.exists(tmp_path / "run" / "state.pt")
