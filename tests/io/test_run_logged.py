"""run_logged: a command that is interrupted stops with every process it started."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import os, signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job inherits Ctrl-C ignored
from nnunetv2_vismae.io.nnunet import run_logged
run_logged(["sh", "-c", "sleep 60 & echo $! > " + sys.argv[1] + "; wait"], dict(os.environ), Path(sys.argv[2]))
"""


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(condition, limit_s: float = 30.0) -> bool:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_ctrl_c_stops_the_command_and_the_processes_it_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    caller = subprocess.Popen([sys.executable, "-c", SCRIPT, str(pid_file), str(tmp_path / "log")])
    try:
        assert wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip())
        grandchild = int(pid_file.read_text())
        caller.send_signal(signal.SIGINT)  # Ctrl-C of the caller alone (the benchmark; SIGTERM becomes this)
        caller.wait(30)
        assert wait_for(lambda: not running(grandchild), 10), "the command's own child outlived it"
    finally:
        caller.kill()
        if pid_file.is_file() and running(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
