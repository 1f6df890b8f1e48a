"""A real single-node SLURM cluster for one test: munged, slurmctld -D and slurmd -D on this host, each with
its files in a folder of the test (its own munge key and socket, its own slurm.conf and ports), found by the
clients through SLURM_CONF. Debian: ``apt-get install slurmctld slurmd slurm-client munge``."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo")
START_LIMIT_S = 60


def missing_reason() -> str | None:
    """Why no cluster can be started here, or None."""
    absent = [name for name in DAEMONS if shutil.which(name) is None]
    if absent:
        return (
            f"SLURM is not installed ({', '.join(absent)} missing; apt-get install slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path, host: str, munge_socket: Path) -> str:
    ctld_port, d_port = free_port(), free_port()
    return "\n".join(
        [
            "ClusterName=vismae_test",
            f"SlurmctldHost={host}(127.0.0.1)",  # by address: the host name need not resolve
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",  # no cgroups, which containers rarely delegate
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "MpiDefault=none",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def wait_until_idle(env: dict, processes: dict) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        ended = [name for name, process in processes.items() if process.poll() is not None]
        if ended:
            raise RuntimeError(f"{ended[0]} stopped while the cluster started")
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        if state.returncode == 0 and state.stdout.strip() == "idle":
            return
        time.sleep(1)
    raise RuntimeError(f"the node did not become idle within {START_LIMIT_S} s")


@contextlib.contextmanager
def single_node_cluster(folder: Path):
    """Start the cluster in ``folder``; yields the environment its clients (sbatch, srun, sinfo) need."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("state", "spool", "munge"):
        (folder / name).mkdir(exist_ok=True)
    key, munge_socket = folder / "munge" / "munge.key", folder / "munge" / "socket"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, socket.gethostname().split(".")[0], munge_socket))
    env = dict(os.environ, SLURM_CONF=str(conf))
    munge = [
        "munged",
        "--foreground",
        "--force",  # a key folder under /tmp is not "secure" in munged's sense; fine for a test
        f"--key-file={key}",
        f"--socket={munge_socket}",
        f"--pid-file={folder / 'munge' / 'munged.pid'}",
        f"--log-file={folder / 'munge' / 'munged.log'}",
        f"--seed-file={folder / 'munge' / 'seed'}",
    ]
    commands = {"munged": munge, **{daemon: [daemon, "-D", "-f", str(conf)] for daemon in ("slurmctld", "slurmd")}}
    processes = {}
    try:
        for name, command in commands.items():
            with open(folder / f"{name}.out", "w") as log:
                processes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            while name == "munged" and not munge_socket.exists() and processes[name].poll() is None:
                time.sleep(0.1)  # the daemons authenticate through it from their start
        wait_until_idle(env, processes)
        yield env
    finally:
        for process in reversed(processes.values()):
            process.terminate()
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
