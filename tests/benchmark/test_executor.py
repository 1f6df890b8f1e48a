"""The benchmark's runs as submitit jobs: real tiny trainings through submitit's local executor (the same
commands and report as the sequential benchmark), --no-wait then --collect, a failed job, GPU slots, the
SLURM job array submitit writes (read back from a stand-in sbatch, no cluster needed) and, where SLURM is
installed, the array run by a real single-node cluster."""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import threading
import time
from pathlib import Path

import pytest
from submitit.core.utils import DelayedSubmission

from nnunetv2_vismae.benchmark import cli, executors
from nnunetv2_vismae.benchmark import label_efficiency as le
from nnunetv2_vismae.device import CPU_THREADS
from nnunetv2_vismae.errors import StepFailed
from nnunetv2_vismae.io.lock import flocked
from tests.conftest import set_nnunet_folders

from . import local_command, slurm_cluster
from .conftest import fold_folder, write_summary

TRAINER = "nnUNetTrainer_labels100_1epochs_1iters"
ARGV = ["-d", "990", "--arms", "nnunet", "--labels", "100", "--epochs", "1", "--iters", "1", "-device", "cpu"]
REPORTS = ("results.csv", "cases.csv", "report.md")


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """train_run, called here in the test's process, makes SIGINT and SIGTERM interrupt it, as a local job."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.fixture
def tiny_dataset(preprocessed_dataset, tmp_path, monkeypatch) -> Path:
    """The preprocessed dataset 990 with results of this test's own, set in this process's environment
    (which the jobs inherit); returns the results folder of the dataset."""
    set_nnunet_folders(monkeypatch, dict(preprocessed_dataset, nnUNet_results=str(tmp_path / "results")))
    for name in ("nnUNet_compile", "nnUNet_def_n_proc"):
        monkeypatch.setenv(name, preprocessed_dataset[name])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # augmentation in the training's process: two share 2 cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread each, or two trainings on two cores wait for each other
    return tmp_path / "results" / "Dataset990_Synthetic"


def history(out: Path) -> list[str]:
    return [line for line in (out / executors.HISTORY).read_text().splitlines() if line.startswith("nnUNetv2_train")]


def corrupt_checkpoint(results: Path, fold: int) -> None:
    """The run of ``fold`` resumes (--c) from a checkpoint_latest.pth that torch cannot read: it fails."""
    (fold_folder(results, TRAINER, "nnUNetPlans", fold) / "checkpoint_latest.pth").write_bytes(b"not a checkpoint")


def collect_until_settled(argv: list[str], capsys, limit_s: float = 900) -> tuple[int, str, str]:
    """--collect until no run is queued or running (the jobs run in the background)."""
    deadline = time.monotonic() + limit_s
    while True:
        code = cli.main(argv + ["--collect"])
        out, err = capsys.readouterr()
        if "not finished" not in err or time.monotonic() > deadline:
            return code, out, err
        time.sleep(0.5)


@pytest.mark.slow
def test_local_jobs_run_the_sequential_commands_collect_their_report_and_name_the_failed_one(
    tiny_dataset, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(executors, "POLL_S", 0.5)  # a job that ended is seen sooner: the test waits less
    out = tmp_path / "bench"
    corrupt_checkpoint(tiny_dataset, 1)
    argv = ARGV + ["-o", str(out), "-f", "0", "1"]
    assert cli.main(argv + ["--dry-run"]) == 0
    sequential = capsys.readouterr().out.splitlines()
    assert len(sequential) == 2 and sequential[1].endswith(" --c")

    assert cli.main(argv + ["--executor", "local", "--max-parallel", "2", "--no-wait"]) == 0
    assert capsys.readouterr().out.startswith("Submitted 2 jobs (local; ids ")
    code, printed, err = collect_until_settled(argv, capsys)
    log = out / "logs" / f"{TRAINER}__nnUNetPlans__2d__fold_1.log"
    assert code == 1 and f"Run nnunet 100% fold 1 failed (exit 1): {sequential[1]}; its output is in {log}" in err
    assert "1 of 2 runs failed" in err and "not finished" not in err and printed.startswith("1 of 2 runs summarized")
    deadline = time.monotonic() + 60  # the job records its command after nnU-Net, which wrote the summary, exits
    while not history(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert history(out) == sequential[:1]  # what the sequential benchmark runs, once
    by_jobs = {name: (out / name).read_text() for name in REPORTS}
    assert by_jobs["results.csv"].count("\nnnunet,100,") == 1  # the finished run's results are kept

    one_fold = ARGV + ["-o", str(out), "-f", "0"]
    assert cli.main(one_fold) == 0  # the sequential benchmark finds it finished: trains nothing
    assert len(history(out)) == 1
    inline = {name: (out / name).read_text() for name in REPORTS}
    assert inline["results.csv"] == by_jobs["results.csv"] and inline["cases.csv"] == by_jobs["cases.csv"]
    assert cli.main(one_fold + ["--collect"]) == 0
    collected = (out / "report.md").read_text()
    for report, argv_of_report in ((inline["report.md"], one_fold), (collected, one_fold + ["--collect"])):
        assert shlex.join([cli.PROG, *argv_of_report]) + "\n" in report  # the commands end with its own
    assert inline["report.md"].rsplit("\n", 3)[0] == collected.rsplit("\n", 3)[0]

    capsys.readouterr()
    assert cli.main(argv + ["--executor", "local"]) == 1  # waits; only fold 1 runs again, and fails again
    err = capsys.readouterr().err
    assert "Run nnunet 100% fold 1 failed (exit 1)" in err and str(log) in err
    assert len(history(out)) == 1 and (out / "results.csv").read_text() == by_jobs["results.csv"]


def settings_for(tmp_path, folds=("0",), device="cpu") -> le.Settings:
    """Settings of the nnunet arm at 100% (needs the fake_nnunet fixture's environment)."""
    request = le.Request(
        "990", "2d", folds, (100,), device, ("nnunet",), epochs=1, iters=1, out=str(tmp_path / "bench")
    )
    return le.make_settings(request)


class RecordingExecutor:
    """Stands in for a submitit executor: records what map_array was given."""

    def __init__(self):
        self.calls = []

    def map_array(self, fn, *iterables):
        self.calls = list(zip(*iterables))
        return []


@pytest.mark.parametrize(
    "device, visible, slots, gpus",
    [
        ("cuda", "3,5", [0, 1, 0], ["3", "5", "3"]),  # two at once on distinct GPUs, the third reuses slot 0's
        ("cuda", "GPU-aa,GPU-bb,GPU-cc", [0, 1, 0], ["GPU-aa", "GPU-bb", "GPU-aa"]),
        ("cpu", "0,1", [0, 1, 0], [None, None, None]),  # -device cpu: CUDA_VISIBLE_DEVICES left alone
    ],
)
def test_max_parallel_places_each_local_job_in_a_slot_with_its_own_gpu(
    fake_nnunet, tmp_path, monkeypatch, device, visible, slots, gpus
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    settings = settings_for(tmp_path, ("0", "1", "2"), device)
    recorder = RecordingExecutor()
    monkeypatch.setattr(executors, "make_executor", lambda settings, options: recorder)
    executors.submit(settings, le.all_runs(settings), executors.Options(kind=executors.LOCAL, max_parallel=2))
    assert [call[1].fold for call in recorder.calls] == ["0", "1", "2"]
    assert [(call[3], call[4]) for call in recorder.calls] == list(zip(slots, gpus))
    assert recorder.calls[0][2]["nnUNet_results"] == os.environ["nnUNet_results"]
    assert recorder.calls[0][0].out.is_absolute()
    cpu_threads = recorder.calls[0][2].get(CPU_THREADS)  # on CPU, two at once each take half the cores
    assert cpu_threads == (str(max(1, len(os.sched_getaffinity(0)) // 2)) if device == "cpu" else None)


def test_cuda_without_a_visible_gpu_is_one_sentence():
    with pytest.raises(executors.BenchmarkError, match="needs a GPU, but this process sees none"):
        executors.slot_gpus(2, "cuda", [])


@pytest.fixture
def fake_commands(monkeypatch):
    """Stands in for nnU-Net's commands inside train_run: records each with its environment."""
    calls = []

    def fake_run(cmd, env, log):
        calls.append((list(cmd), env))
        return 0

    monkeypatch.setattr(executors, "run_logged", fake_run)
    return calls


def test_a_job_gives_its_gpu_to_its_commands_and_resumes_its_run(fake_nnunet, tmp_path, fake_commands):
    settings = settings_for(tmp_path)
    (run,) = le.all_runs(settings)
    (fold_folder(fake_nnunet["dataset_results"], TRAINER, "nnUNetPlans", 0) / "checkpoint_latest.pth").write_bytes(b"")
    with pytest.raises(StepFailed, match="wrote no"):  # the fake command trains nothing
        executors.train_run(settings, run, {}, 1, "5")
    (cmd, env) = fake_commands[0]
    assert cmd[-1] == "--c" and env["CUDA_VISIBLE_DEVICES"] == "5"
    assert "wrote no" in executors.failure_file(settings, run).read_text()


def test_a_local_job_accepts_stop_though_started_with_ctrl_c_ignored(fake_nnunet, tmp_path, fake_commands):
    """submitit's cancel() is SIGINT, which a job of a benchmark started in the background inherits ignored;
    stop() follows it with SIGTERM: both interrupt a local job."""
    settings = settings_for(tmp_path)
    (run,) = le.all_runs(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # restored by signal_handlers_restored
    with pytest.raises(StepFailed):
        executors.train_run(settings, run, {}, 0, None)
    assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is signal.default_int_handler


def test_a_run_another_job_holds_is_left_to_it(fake_nnunet, tmp_path, fake_commands):
    settings = settings_for(tmp_path)
    (run,) = le.all_runs(settings)
    lock = executors.run_lock(settings, run)
    with flocked(lock, wait=False, create=True) as held:
        assert held
        assert executors.train_run(settings, run, {}, None, None).endswith("left to that job")
    assert fake_commands == []


def test_a_failed_command_fails_its_job_with_the_log(fake_nnunet, tmp_path, monkeypatch):
    settings = settings_for(tmp_path)
    (run,) = le.all_runs(settings)
    monkeypatch.setattr(executors, "run_logged", lambda cmd, env, log: 3)
    log = executors.logs_folder(settings) / f"{run.name}.log"
    with pytest.raises(StepFailed, match=rf"failed \(exit 3\).*its output is in {re.escape(str(log))}$"):
        executors.train_run(settings, run, {}, None, None)
    assert executors.outcome(settings).failed == [executors.failure_file(settings, run).read_text().strip()]


def test_collect_reports_what_finished_and_names_the_failed_and_the_missing(fake_nnunet, tmp_path, capsys):
    results, out = fake_nnunet["dataset_results"], tmp_path / "bench"
    write_summary(fold_folder(results, TRAINER, "nnUNetPlans", 0), 0.9, 0.8)
    failed = out / "logs" / f"{TRAINER}__nnUNetPlans__2d__fold_1.failed"
    failed.parent.mkdir(parents=True)
    failed.write_text("Run nnunet 100% fold 1 failed (exit 1): ...; its output is in LOG\n")
    assert cli.main(ARGV + ["-f", "0", "1", "2", "-o", str(out), "--collect"]) == 1
    printed, err = capsys.readouterr()
    assert printed.startswith("1 of 3 runs summarized")
    assert "1 of 3 runs are not finished (queued, running or not submitted): nnunet 100% fold 2" in err
    assert "Run nnunet 100% fold 1 failed (exit 1): ...; its output is in LOG" in err
    assert err.strip().endswith("the same command retries the failed ones")
    assert (out / "results.csv").read_text().count("\nnnunet,100,") == 1
    failed.unlink()
    assert cli.main(ARGV + ["-f", "0", "1", "2", "-o", str(out), "--collect"]) == 0  # missing is no failure


def fake_slurm(folder: Path, monkeypatch) -> Path:
    """sbatch and srun on PATH that submit nothing: sbatch keeps the script it is given and answers as
    SLURM does; returns the file the script is copied to."""
    folder.mkdir()
    record = folder / "submitted.sh"
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" {shlex.quote(str(record))}\necho "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 1\n",
    }
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return record


def test_slurm_submits_one_job_array_with_the_flags_as_sbatch_options(fake_nnunet, tmp_path, monkeypatch, capsys):
    record = fake_slurm(tmp_path / "bin", monkeypatch)
    out = tmp_path / "bench"
    argv = ARGV + ["-f", "0", "1", "2", "-o", str(out), "--executor", "slurm", "--no-wait", "--max-parallel", "2"]
    argv += ["--slurm-partition", "gpu", "--slurm-gpus-per-job", "2", "--slurm-time", "90"]
    argv += ["--slurm-extra", "mem=64GB", "cpus_per_task=8", "reservation=lab"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("Submitted 3 jobs (slurm; ids 4242_0, 4242_1, 4242_2)")
    script = record.read_text().splitlines()
    for option in (
        "--array=0-2%2",  # one array, at most --max-parallel tasks at once
        "--partition=gpu",
        "--gpus-per-node=2",
        "--time=90",
        "--mem=64GB",
        "--cpus-per-task=8",
        "--reservation=lab",  # not a submitit parameter: passed to sbatch as it is
        "--job-name=vismae_benchmark",
        f"--output={out / 'logs' / 'submitit'}/%A_%a_0_log.out",
    ):
        assert f"#SBATCH {option}" in script
    tasks = [DelayedSubmission.load(out / "logs" / "submitit" / f"4242_{i}_submitted.pkl") for i in range(3)]
    assert all(task.function is executors.train_run for task in tasks)
    assert [(task.args[1].fold, task.args[3], task.args[4]) for task in tasks] == [(f, None, None) for f in "012"]


def test_slurm_parameters_default_to_one_gpu_with_cuda():
    options = executors.Options(kind=executors.SLURM, slurm_extra={"qos": "high", "exclusive": True})
    assert executors.slurm_parameters(options, "cuda") == {
        "job_name": "vismae_benchmark",
        "time": executors.DEFAULT_SLURM_TIME,
        "stderr_to_stdout": True,
        "gpus_per_node": 1,
        "qos": "high",
        "exclusive": True,
    }
    assert "gpus_per_node" not in executors.slurm_parameters(options, "cpu")
    assert executors.parse_extra(["cpus_per_task=8", "exclusive=true", "account=a=b"]) == {
        "cpus_per_task": 8,
        "exclusive": True,
        "account": "a=b",
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-parallel", "2"], "--max-parallel needs --executor local or slurm"),
        (["--no-wait"], "--no-wait needs --executor local or slurm"),
        (["--executor", "local", "--slurm-partition", "gpu"], "--slurm-partition needs --executor slurm"),
        (["--executor", "slurm", "--slurm-extra", "mem"], "--slurm-extra takes KEY=VALUE items, got 'mem'."),
        (["--executor", "local", "--max-parallel", "0"], "--max-parallel must be at least 1, got 0."),
        (["--collect", "--dry-run"], "not allowed with argument"),
        (["--executor", "slurm"], "--executor slurm needs SLURM's sbatch and srun on PATH"),
    ],
)
def test_executor_flags_are_checked_in_one_sentence(fake_nnunet, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    assert cli.main(ARGV + ["-f", "0", "-o", str(tmp_path / "bench"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A single-node SLURM cluster on this host for this module's tests."""
    with slurm_cluster.single_node_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


NO_SLURM = slurm_cluster.missing_reason()


@pytest.mark.slow
@pytest.mark.skipif(NO_SLURM is not None, reason=str(NO_SLURM))  # before the dataset is preprocessed for nothing
def test_a_real_slurm_cluster_runs_the_array_and_reports_the_failed_run(
    tiny_dataset, slurm, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    monkeypatch.setattr(executors, "POLL_S", 0.5)  # submitit asks SLURM at its own pace; a result file is seen sooner
    corrupt_checkpoint(tiny_dataset, 1)
    out = tmp_path / "bench"
    argv = ARGV + ["-f", "0", "1", "-o", str(out), "--executor", "slurm", "--slurm-partition", "debug"]
    assert cli.main(argv + ["--slurm-time", "30"]) == 1
    printed, err = capsys.readouterr()
    log = out / "logs" / f"{TRAINER}__nnUNetPlans__2d__fold_1.log"
    assert "Run nnunet 100% fold 1 failed (exit 1)" in err and str(log) in err
    assert printed.startswith("1 of 2 runs summarized")
    assert (out / "results.csv").read_text().count("\nnnunet,100,") == 1
    (script,) = (out / "logs" / "submitit").glob("*_submission.sh")
    assert "#SBATCH --array=0-1%2" in script.read_text().splitlines()


def test_slurm_extra_numbers_are_ascii_digits_only():
    assert executors.parse_extra(["cpus_per_task=²", "nodes=2"]) == {"cpus_per_task": "²", "nodes": 2}


def process_runs(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_ctrl_c_while_waiting_stops_the_local_jobs_and_what_they_started(fake_nnunet, tmp_path, monkeypatch):
    executor = executors.make_executor(settings_for(tmp_path), executors.Options(kind=executors.LOCAL))
    pid_file = tmp_path / "command.pid"
    # as from a benchmark started in the background (nohup, &): the job inherits Ctrl-C ignored
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    job = executor.submit(local_command.start_a_command, str(pid_file), str(tmp_path / "command.log"))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # this process: as the benchmark's own
    try:

        def ctrl_c_once_started():
            while not (pid_file.is_file() and pid_file.read_text().strip()):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the benchmark's terminal

        monkeypatch.setattr(executors, "POLL_S", 0.05)
        threading.Thread(target=ctrl_c_once_started, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            executors.wait([job], [None], stop_on_interrupt=True)
        assert job.state != "RUNNING"
        command = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while process_runs(command) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_runs(command), "the local job's command trains on after Ctrl-C"
    finally:
        signal.signal(signal.SIGINT, before)
        job.cancel()
        if pid_file.is_file() and pid_file.read_text().strip() and process_runs(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), 9)
