"""The multi-node pretraining recipe of docs/scale.md (sbatch + srun torchrun, rendezvous from SLURM's environment),
submitted as written to a real single-node SLURM cluster, scaled down to one node, two CPU ranks and a tiny
encoder; skipped where SLURM is not installed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.benchmark import slurm_cluster
from tests.conftest import write_raw_dataset
from tests.pretrain.helpers import TINY

ROOT = Path(__file__).resolve().parents[2]
NO_SLURM = slurm_cluster.missing_reason()


def readme_recipe() -> str:
    """The ```bash block of docs/scale.md's "Pretraining on many nodes (SLURM)"."""
    section = ROOT.joinpath("docs", "scale.md").read_text().split("## Pretraining on many nodes (SLURM)", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def scaled_down(script: str, pngs: Path, out: Path, logs: Path) -> str:
    """The recipe on one node with two CPU ranks: every change is one the recipe's numbers invite."""
    tiny = " ".join([*TINY[: TINY.index("-device")], "--precision", "fp32", "--steps", "2"])
    changes = [
        ("#SBATCH --nodes=4", "#SBATCH --nodes=1"),
        ("#SBATCH --cpus-per-task=64", f"#SBATCH --cpus-per-task={os.cpu_count()}"),
        ("#SBATCH --time=48:00:00", "#SBATCH --time=10"),
        ("#SBATCH --output=%x_%j.out", f"#SBATCH --output={logs}/%x_%j.out"),
        ("MASTER_PORT=29500", f"MASTER_PORT={slurm_cluster.free_port()}"),
        ("--nproc_per_node 8", "--nproc_per_node 2"),
        ("-i /shared/corpus -o /shared/mae -device cuda", f"-i {pngs} -o {out} -device cpu {tiny}"),
    ]
    for old, new in changes:
        assert old in script, f"the recipe of docs/scale.md no longer has {old!r}"
        script = script.replace(old, new)
    return re.sub(r"^#SBATCH --gpus-per-node=.*\n", "", script, flags=re.M)


@pytest.mark.slow
@pytest.mark.skipif(NO_SLURM is not None, reason=str(NO_SLURM))
def test_the_readme_recipe_pretrains_with_two_ranks_on_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # as if activated
    pngs = write_raw_dataset(tmp_path / "raw") / "imagesTr"
    out, job = tmp_path / "mae", tmp_path / "pretrain.sbatch"
    job.write_text(scaled_down(readme_recipe(), pngs, out, tmp_path))
    with slurm_cluster.single_node_cluster(tmp_path / "slurm") as env:
        job_id = subprocess.run(["sbatch", "--parsable", str(job)], env=env, check=True, capture_output=True, text=True)
        job_id = job_id.stdout.strip()
        deadline = time.monotonic() + 300
        while subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True).stdout.strip():
            assert time.monotonic() < deadline, "the pretraining job did not end within 5 minutes"
            time.sleep(1)
    log = (tmp_path / f"vismae_pretrain_{job_id}.out").read_text()
    assert (out / "encoder.safetensors").is_file(), log[-3000:]
    with safe_open(out / "encoder.safetensors", "pt") as checkpoint:
        training = json.loads(checkpoint.metadata()["training"])
    assert training["world_size"] == 2 and training["total_steps"] == 2
