"""Where the benchmark's commands run: one after another in this process (``inline``, the default), or
every missing run as a submitit job: ``local`` on this machine (``--max-parallel`` at once, one GPU
each, or on CPU an even share of the cores each), ``slurm`` as one job array.

A job is one run: its training (or resumption) and, with --test, its prediction and scoring. The job
works out what its run still needs when it starts, from the run's fold folder, so a rerun, a requeued
job or a second job for the same run skips or resumes it exactly as the inline benchmark does, and it
holds the run's lock while it works (as the inline benchmark does), so no two jobs or benchmarks train
one run. What jobs leave behind is all a later ``--collect`` reads: the run's summary when it finished,
``logs/<run>.failed`` (the sentence saying why) when it failed; each command's output is in
``logs/<command>.log`` and submitit's own in ``logs/submitit/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import submitit
from tqdm import tqdm

from nnunetv2_vismae.benchmark import label_efficiency as le
from nnunetv2_vismae.benchmark.errors import BenchmarkError
from nnunetv2_vismae.benchmark.report import is_readable_summary
from nnunetv2_vismae.errors import StepFailed
from nnunetv2_vismae.io.lock import flocked
from nnunetv2_vismae.io.nnunet import command_environment, run_logged

INLINE, LOCAL, SLURM = "inline", "local", "slurm"
EXECUTORS = (INLINE, LOCAL, SLURM)
HISTORY = "commands.txt"
JOB_NAME = "vismae_benchmark"
DEFAULT_SLURM_TIME = 24 * 60  # minutes; a run cut by the limit continues from its checkpoint on a rerun
LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # submitit's local default is 2 minutes; a local training takes what it takes
POLL_S = 5.0


@dataclass(frozen=True)
class Options:
    """How the runs are executed, as the command line asked for it."""

    kind: str = INLINE
    max_parallel: int | None = None  # local: trainings at once (default 1); slurm: the array's throttle
    wait: bool = True
    slurm_partition: str | None = None
    slurm_gpus_per_job: int | None = None  # default: 1 with -device cuda, none otherwise
    slurm_time: int = DEFAULT_SLURM_TIME
    slurm_extra: dict = field(default_factory=dict)  # submitit slurm parameter (or sbatch option) -> value


def logs_folder(settings: le.Settings) -> Path:
    return settings.out / "logs"


def failure_file(settings: le.Settings, run: le.Run) -> Path:
    return logs_folder(settings) / f"{run.name}.failed"


def append_history(out: Path, line: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / HISTORY, "a") as handle:
        handle.write(line + "\n")


def run_command(settings: le.Settings, job: le.Job, env: dict) -> None:
    """Run one command into ``logs/<name>.log`` and record it in commands.txt; StepFailed when it fails
    or does not write what it must."""
    log = logs_folder(settings) / f"{job.name}.log"
    code = run_logged(job.cmd, env, log)
    if code != 0:
        raise StepFailed(f"Run {job.label} failed (exit {code}): {job.text}; its output is in {log}")
    if job.produces is not None and not is_readable_summary(job.produces):
        raise StepFailed(f"Run {job.label} finished but wrote no readable {job.produces}; its output is in {log}")
    append_history(settings.out, job.text)


def run_lock(settings: le.Settings, run: le.Run) -> Path:
    """The lock of one run, next to its fold folder: whatever benchmark or job trains the run holds it."""
    return run.folder(settings.results_dir).parent / f".fold_{run.fold}.lock"


@contextlib.contextmanager
def holding_run(settings: le.Settings, run: le.Run):
    """The run's lock, waiting (and saying so) while another benchmark or job holds it."""
    path = run_lock(settings, run)
    with flocked(path, wait=False, create=True) as held:
        if held:
            yield
            return
    tqdm.write(f"{run.short}: another benchmark is training it; waiting for it to end (lock {path}).", file=sys.stderr)
    with flocked(path, create=True):
        yield


def run_inline(settings: le.Settings, jobs: list[le.Job]) -> None:
    """Run the jobs in order in this process, each run's under its lock and worked out again once the lock is
    held (another benchmark may have trained the run meanwhile); raises StepFailed on the first failure."""
    logs_folder(settings).mkdir(parents=True, exist_ok=True)
    env = command_environment()
    with tqdm(total=len(jobs), desc="benchmark", unit="command", dynamic_ncols=True) as bar:
        for job in [job for job in jobs if job.run is None]:  # the planning, which every run needs
            bar.set_postfix_str(job.label)
            run_command(settings, job, env)
            bar.update()
        for run in dict.fromkeys(job.run for job in jobs if job.run is not None):
            with holding_run(settings, run):
                for job in le.run_jobs(settings, run):
                    bar.set_postfix_str(job.label)
                    run_command(settings, job, env)
                    bar.update()


def accept_stop() -> None:
    """Let ``stop`` interrupt this local job's process, which then stops its command (``run_logged``):
    submitit's cancel() is a SIGINT, which a benchmark started in the background (nohup, &) hands its jobs
    ignored, so ``stop`` follows it with a SIGTERM, which submitit's local controller forwards here."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def train_run(settings: le.Settings, run: le.Run, variables: dict, slot: int | None, gpu: str | None) -> str:
    """One job, in the job's own process: wait for its slot of --max-parallel (local executor), then do
    what the run still needs under the run's lock; StepFailed (also written to logs/<run>.failed) when a
    command fails."""
    if slot is not None:  # a local job (SLURM jobs keep submitit's own signal handling)
        accept_stop()
    os.environ.update(variables)  # nnU-Net's folders and settings as the benchmark saw them
    logs_folder(settings).mkdir(parents=True, exist_ok=True)
    locks = logs_folder(settings) / "locks"
    slot_lock = flocked(locks / f"slot_{slot}.lock", create=True) if slot is not None else contextlib.nullcontext()
    with slot_lock, flocked(run_lock(settings, run), wait=False, create=True) as held:
        if not held:
            return f"{run.short}: another job holds it, left to that job"
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        print(f"{run.short}: slot {slot}, CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}", flush=True)
        try:
            for job in le.run_jobs(settings, run):
                run_command(settings, job, env)
        except StepFailed as e:
            failure_file(settings, run).write_text(f"{e}\n")
            raise
    return f"{run.short}: finished"


def slot_gpus(max_parallel: int, device: str, gpus: list[str]) -> list[str | None]:
    """The GPU of each of the local executor's slots, round robin over the visible ones (None: leave
    CUDA_VISIBLE_DEVICES alone, for -device cpu)."""
    if device != "cuda":
        return [None] * max_parallel
    if not gpus:
        raise BenchmarkError("-device cuda with --executor local needs a GPU, but this process sees none.")
    return [gpus[slot % len(gpus)] for slot in range(max_parallel)]


def parse_extra(items: list[str]) -> dict:
    """``KEY=VALUE`` items of --slurm-extra -> {key: value}, numbers as int and true/false as bool."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchmarkError(f"--slurm-extra takes KEY=VALUE items, got {item!r}.")
        number = value.isascii() and value.isdigit()  # str.isdigit alone takes '²', which int() refuses
        extra[key] = int(value) if number else {"true": True, "false": False}.get(value.lower(), value)
    return extra


def slurm_parameters(options: Options, device: str) -> dict:
    """submitit's SlurmExecutor parameters: the flags mapped, --slurm-extra keys that are submitit
    parameters set as such and any other key passed to sbatch as ``--KEY=VALUE``."""
    gpus = options.slurm_gpus_per_job
    if gpus is None and device == "cuda":
        gpus = 1
    parameters = {"job_name": JOB_NAME, "time": options.slurm_time, "stderr_to_stdout": True}
    if options.slurm_partition is not None:
        parameters["partition"] = options.slurm_partition
    if gpus:
        parameters["gpus_per_node"] = gpus
    if options.max_parallel is not None:
        parameters["array_parallelism"] = options.max_parallel
    known = submitit.SlurmExecutor._valid_parameters()
    sbatch_options = {key: value for key, value in options.slurm_extra.items() if key not in known}
    parameters.update({key: value for key, value in options.slurm_extra.items() if key in known})
    if sbatch_options:
        parameters["additional_parameters"] = sbatch_options
    return parameters


def check_slurm_commands() -> None:
    missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
    if missing:
        raise BenchmarkError(
            f"--executor slurm needs SLURM's {' and '.join(missing)} on PATH; run the benchmark on a node "
            "that submits jobs to the cluster."
        )


def make_executor(settings: le.Settings, options: Options) -> submitit.Executor:
    folder = logs_folder(settings) / "submitit"
    if options.kind == LOCAL:
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, stderr_to_stdout=True)
        return executor
    check_slurm_commands()
    executor = submitit.SlurmExecutor(folder)
    try:
        executor.update_parameters(**slurm_parameters(options, settings.device))
    except ValueError as e:  # submitit checks the values it formats into the sbatch script
        raise BenchmarkError(f"submitit refuses the slurm parameters: {str(e).splitlines()[0]}") from None
    return executor


def submit(settings: le.Settings, runs: list[le.Run], options: Options) -> list[submitit.Job]:
    """One job per run (a job array on SLURM); a run's earlier failure is forgotten as it is resubmitted."""
    from nnunetv2_vismae.device import (
        CPU_THREADS,
        cpu_share,
        visible_gpus,
    )  # here, not at the top: jobs import this module

    settings = replace(settings, out=settings.out.resolve())  # the jobs may start in another folder
    executor = make_executor(settings, options)
    for run in runs:
        failure_file(settings, run).unlink(missing_ok=True)
    variables = {k: v for k, v in command_environment().items() if k.startswith("nnUNet_")}
    if options.kind == LOCAL:
        parallel = options.max_parallel or 1
        gpus = slot_gpus(parallel, settings.device, visible_gpus())
        if settings.device == "cpu":  # side by side, each training takes its share of the cores, not all of them
            variables[CPU_THREADS] = str(cpu_share(parallel))
        slots = [i % parallel for i in range(len(runs))]
        placements = [(slot, gpus[slot]) for slot in slots]
    else:  # SLURM places the jobs and sets each one's CUDA_VISIBLE_DEVICES
        placements = [(None, None)] * len(runs)
    return executor.map_array(
        train_run,
        [settings] * len(runs),
        runs,
        [variables] * len(runs),
        [slot for slot, _ in placements],
        [gpu for _, gpu in placements],
    )


def wait(jobs: list[submitit.Job], runs: list[le.Run], stop_on_interrupt: bool = False) -> None:
    """Until every job has ended, with a bar over the runs; interrupted (Ctrl-C, SIGTERM) with
    ``stop_on_interrupt``, the jobs are stopped first."""
    pending = list(zip(jobs, runs))
    try:
        with tqdm(total=len(pending), desc="benchmark", unit="run", dynamic_ncols=True) as bar:
            while pending:
                ended = [(job, run) for job, run in pending if job.done()]
                for job, run in ended:
                    pending.remove((job, run))
                    bar.set_postfix_str(run.short)
                    bar.update()
                if pending:
                    time.sleep(POLL_S)
    except KeyboardInterrupt:
        if stop_on_interrupt:
            stop(jobs)
        raise


def stop(jobs: list[submitit.Job], limit_s: float = 30.0, sigint_s: float = 2.0) -> None:
    """Stop local jobs and wait (up to ``limit_s``) until their processes have ended: each gets SIGINT
    (submitit's cancel), then SIGTERM where that did not end it within ``sigint_s`` (a benchmark started
    in the background passed SIGINT on ignored), on which ``run_logged`` stops its command and every
    process the command started."""
    for job in jobs:
        job.cancel()
    start = time.monotonic()
    terminated = False
    while any(job.state == "RUNNING" for job in jobs) and time.monotonic() < start + limit_s:
        if not terminated and time.monotonic() > start + sigint_s:
            for job in jobs:  # submitit's local controller forwards SIGTERM to the job's process
                with contextlib.suppress(AttributeError, OSError):
                    job._process.send_signal(signal.SIGTERM)
            terminated = True
        time.sleep(0.1)


@dataclass
class Outcome:
    """Every run of the benchmark by what became of it."""

    finished: list[le.Run]
    failed: list[str]  # one sentence per failed run, naming its log
    unfinished: list[le.Run]  # neither: queued, running, left to another job or never submitted


def outcome(settings: le.Settings, jobs: dict | None = None) -> Outcome:
    """What the runs' files say, and for a run whose job (``jobs``: run -> job) ended without a result
    or a failure sentence (killed, out of memory, out of time) that job's log."""
    result = Outcome([], [], [])
    for run in le.all_runs(settings):
        failure = failure_file(settings, run)
        job = (jobs or {}).get(run)
        if le.is_finished(settings, run):
            result.finished.append(run)
        elif failure.is_file():
            result.failed.append(failure.read_text().strip())
        elif job is not None and job.exception() is not None:
            result.failed.append(
                f"Run {run.short}: its job {job.job_id} ended without finishing it (killed, out of memory or "
                f"out of time?); its output is in {job.paths.stdout}"
            )
        else:
            result.unfinished.append(run)
    return result
