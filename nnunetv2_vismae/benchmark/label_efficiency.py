"""What the label-efficiency benchmark trains, what of it is finished, and the commands for the rest.

One run is (arm, label fraction, fold): ``nnUNetv2_train ID CONFIG FOLD -p PLANS -tr TRAINER``.
Its state comes from the files nnU-Net leaves in the fold folder, so an interrupted benchmark
resumes where it stopped: ``validation/summary.json`` -> done; ``checkpoint_final.pth`` -> only
``--val``; ``checkpoint_latest.pth`` -> continue with ``--c``; nothing -> train.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from nnunetv2_vismae.benchmark.arms import ARMS, PRETRAINED_FLAGS, Arm, trainer_name
from nnunetv2_vismae.benchmark.errors import BenchmarkError
from nnunetv2_vismae.training.env import ext_trainer_value

REQUIRED_ENV = ("nnUNet_preprocessed", "nnUNet_results")
DONE, VALIDATE, CONTINUE, TRAIN = "done", "validate", "continue", "train"


@dataclass(frozen=True)
class Settings:
    """A benchmark as the command line asked for it, checked."""

    dataset: str  # the -d value as given (passed on to the commands)
    dataset_name: str  # DatasetXXX_Name
    configuration: str
    folds: tuple[str, ...]
    labels: tuple[int, ...]
    arms: tuple[Arm, ...]
    pretrained: Path | None
    epochs: int | None
    iters: int | None
    device: str
    out: Path
    pretrained_cnn: Path | None = None

    def checkpoint(self, arm: Arm) -> Path | None:
        """The checkpoint the arm's derived plans are planned from (None: none given or needed)."""
        return {"swin": self.pretrained, "cnn": self.pretrained_cnn}.get(arm.family)

    @property
    def results_dir(self) -> Path:
        return Path(os.environ["nnUNet_results"]) / self.dataset_name

    @property
    def preprocessed_dir(self) -> Path:
        return Path(os.environ["nnUNet_preprocessed"]) / self.dataset_name


@dataclass(frozen=True)
class Run:
    arm: Arm
    labels: int
    fold: str
    trainer: str
    configuration: str

    @property
    def name(self) -> str:
        """Unique per trainer variant, plans, configuration and fold (the log file's name)."""
        return f"{self.trainer}__{self.arm.plans}__{self.configuration}__fold_{self.fold}"

    @property
    def short(self) -> str:
        return f"{self.arm.name} {self.labels}% fold {self.fold}"

    def folder(self, results_dir: Path) -> Path:
        return results_dir / f"{self.trainer}__{self.arm.plans}__{self.configuration}" / f"fold_{self.fold}"

    def summary(self, results_dir: Path) -> Path:
        return self.folder(results_dir) / "validation" / "summary.json"


@dataclass(frozen=True)
class Job:
    """One command to run; ``run`` is None for the planning step."""

    name: str
    cmd: tuple[str, ...]
    run: Run | None = None

    @property
    def text(self) -> str:
        return shlex.join(self.cmd)


def check_environment() -> None:
    for name in REQUIRED_ENV:
        value = os.environ.get(name)
        if not value:
            raise BenchmarkError(f"The environment variable {name} is not set; set nnUNet_raw, "
                                 "nnUNet_preprocessed and nnUNet_results as for nnU-Net's own commands.")
    root = os.environ["nnUNet_preprocessed"]
    if not Path(root).is_dir():
        raise BenchmarkError(f"nnUNet_preprocessed={root} is not a folder.")


def dataset_name(dataset: str) -> str:
    """``4`` or ``Dataset004_Hippocampus`` -> the folder name found in nnU-Net's folders."""
    if dataset.startswith("Dataset"):
        prefix = dataset
    else:
        try:
            number = int(dataset)
        except ValueError:
            raise BenchmarkError(f"Dataset {dataset!r} is neither an integer id nor a DatasetXXX_Name.") from None
        prefix = "Dataset%03d_" % number
    found = set()
    for variable in ("nnUNet_preprocessed", "nnUNet_results"):
        root = Path(os.environ[variable])
        if not root.is_dir():
            continue
        found |= {p.name for p in root.iterdir() if p.is_dir() and (p.name == prefix or (
            prefix.endswith("_") and p.name.startswith(prefix)))}
    if len(found) != 1:
        what = "no dataset folder" if not found else f"several dataset folders ({', '.join(sorted(found))})"
        raise BenchmarkError(f"Found {what} for dataset {dataset} in nnUNet_preprocessed "
                             f"({os.environ['nnUNet_preprocessed']}); run nnUNetv2_plan_and_preprocess for it first.")
    return found.pop()


def make_settings(dataset: str, configuration: str, folds, labels, arms, pretrained: str | None,
                  epochs: int | None, iters: int | None, device: str, out: str | None,
                  pretrained_cnn: str | None = None) -> Settings:
    """Check everything a user can get wrong before anything runs (raises BenchmarkError)."""
    check_environment()
    name = dataset_name(str(dataset))
    bad = [p for p in labels if not 1 <= p <= 100]
    if bad:
        raise BenchmarkError(f"--labels must be percentages between 1 and 100, got {bad[0]}.")
    for flag, value in (("--epochs", epochs), ("--iters", iters)):
        if value is not None and value < 1:
            raise BenchmarkError(f"{flag} must be at least 1, got {value}.")
    for fold in folds:
        if fold != "all" and not (fold.isdigit()):
            raise BenchmarkError(f"Fold {fold!r} is neither a non-negative integer nor 'all'.")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise BenchmarkError(f"Unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}.")
    chosen = tuple(ARMS[a] for a in dict.fromkeys(arms))
    derived = [a.name for a in chosen if a.derived_plans]
    if derived and configuration != "2d":
        raise BenchmarkError(f"The {derived[0]} arm trains the 2d configuration only, got -c {configuration}.")
    given = {"swin": pretrained, "cnn": pretrained_cnn}
    needing = [a for a in chosen if a.needs_pretrained and given[a.family] is None]
    if needing:
        raise BenchmarkError(f"The {needing[0].name} arm fine-tunes a pretrained {needing[0].family} encoder; pass "
                             f"{PRETRAINED_FLAGS[needing[0].family]} FILE (or leave the arm out with --arms).")
    for path in (pretrained, pretrained_cnn):
        if path is not None and not Path(path).is_file():
            raise BenchmarkError(f"The pretrained checkpoint {path} does not exist.")
    settings = Settings(dataset=str(dataset), dataset_name=name, configuration=configuration,
                        folds=tuple(dict.fromkeys(str(f) for f in folds)), labels=tuple(sorted(set(labels))),
                        arms=chosen, pretrained=Path(pretrained).resolve() if pretrained else None,
                        epochs=epochs, iters=iters, device=device, out=Path("."),
                        pretrained_cnn=Path(pretrained_cnn).resolve() if pretrained_cnn else None)
    return replace(settings, out=Path(out) if out else settings.results_dir / "vismae_benchmark")


def all_runs(settings: Settings) -> list[Run]:
    return [Run(arm, p, fold, trainer_name(arm, p, settings.epochs, settings.iters), settings.configuration)
            for arm in settings.arms for p in settings.labels for fold in settings.folds]


def run_state(folder: Path) -> str:
    if (folder / "validation" / "summary.json").is_file():
        return DONE
    if (folder / "checkpoint_final.pth").is_file():
        return VALIDATE
    if (folder / "checkpoint_latest.pth").is_file():
        return CONTINUE
    return TRAIN


def train_command(settings: Settings, run: Run, state: str) -> tuple[str, ...]:
    cmd = ["nnUNetv2_train", settings.dataset, run.configuration, run.fold, "-p", run.arm.plans,
           "-tr", run.trainer, "-device", settings.device]
    if state == VALIDATE:
        cmd.append("--val")
    elif state == CONTINUE:
        cmd.append("--c")
    return tuple(cmd)


def planning_jobs(settings: Settings, pending: list[Run]) -> list[Job]:
    """``nnUNetv2_vismae_plan`` for derived plans that pending runs need.

    With a checkpoint of the plans' family the plans are (re)written from it; without one they are
    written only when missing (scratch-only benchmarks)."""
    jobs = []
    for plans, arm in {r.arm.plans: r.arm for r in pending if r.arm.derived_plans}.items():
        checkpoint = settings.checkpoint(arm)
        if checkpoint is None and (settings.preprocessed_dir / f"{plans}.json").is_file():
            continue
        cmd = ["nnUNetv2_vismae_plan", "-d", settings.dataset, "-o", plans]
        if checkpoint is not None:
            cmd += ["--pretrained", str(checkpoint)]
        jobs.append(Job(f"plan_{plans}", tuple(cmd)))
    return jobs


def pending_jobs(settings: Settings) -> tuple[list[Job], list[Run]]:
    """(jobs still to run, runs already finished)."""
    finished, jobs = [], []
    for run in all_runs(settings):
        state = run_state(run.folder(settings.results_dir))
        if state == DONE:
            finished.append(run)
        else:
            jobs.append(Job(run.name, train_command(settings, run, state), run))
    return planning_jobs(settings, [j.run for j in jobs]) + jobs, finished


def check_plans_exist(settings: Settings, jobs: list[Job]) -> None:
    """nnU-Net's own plans must be there before anything trains."""
    needed = {j.run.arm.plans for j in jobs if j.run is not None and not j.run.arm.derived_plans}
    if any(j.run is None for j in jobs):
        needed.add("nnUNetPlans")  # nnUNetv2_vismae_plan derives from them
    for plans in sorted(needed):
        path = settings.preprocessed_dir / f"{plans}.json"
        if not path.is_file():
            raise BenchmarkError(f"{path} does not exist; run nnUNetv2_plan_and_preprocess -d {settings.dataset} "
                                 f"-c {settings.configuration} first.")


def subprocess_env() -> dict:
    return dict(os.environ, nnUNet_extTrainer=ext_trainer_value(os.environ.get("nnUNet_extTrainer")))


def executable(name: str) -> str:
    """The console script of this environment when it is there, else whatever PATH finds."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


def run_command(cmd: tuple[str, ...], env: dict, log: Path) -> int:
    """Run one command with its output appended to ``log``; returns the exit status."""
    with open(log, "a") as handle:
        handle.write(f"$ {shlex.join(cmd)}\n")
        handle.flush()
        return subprocess.call([executable(cmd[0]), *cmd[1:]], env=env, stdout=handle, stderr=subprocess.STDOUT)
