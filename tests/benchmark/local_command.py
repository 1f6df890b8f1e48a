"""A local job's work for test_executor, in a module of its own so that the job's process imports little."""

import os
from pathlib import Path

from nnunetv2_vismae.benchmark.executors import accept_stop
from nnunetv2_vismae.io.nnunet import run_logged


def start_a_command(pid_file: str, log: str) -> None:
    """A command that starts a process of its own, which writes its pid and runs a minute; as train_run,
    the job accepts stop() first."""
    accept_stop()
    run_logged(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], dict(os.environ), Path(log))
