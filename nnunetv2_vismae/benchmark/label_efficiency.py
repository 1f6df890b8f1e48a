"""What the label-efficiency benchmark trains, what of it is finished, and the commands for the rest.

One run is (arm, label fraction, fold): ``nnUNetv2_train ID CONFIG FOLD -p PLANS -tr TRAINER``.
Its state comes from the files nnU-Net leaves in the fold folder, so an interrupted benchmark
resumes where it stopped: a readable ``validation/summary.json`` -> done; ``checkpoint_final.pth`` -> only
``--val``; ``checkpoint_latest.pth`` -> continue with ``--c``; nothing -> train.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from nnunetv2_vismae.benchmark.arms import (
    ARMS,
    REFERENCE_ARM,
    REFERENCE_LABELS,
    Arm,
    default_arms,
    probe_arms,
    trainer_name,
)
from nnunetv2_vismae.benchmark.errors import BenchmarkError
from nnunetv2_vismae.benchmark.report import is_readable_summary
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, configuration_dims, dataset_name
from nnunetv2_vismae.label_subsets import is_label_percentage

REQUIRED_ENV = ("nnUNet_preprocessed", "nnUNet_results")
DONE, VALIDATE, CONTINUE, TRAIN = "done", "validate", "continue", "train"
TEST_IMAGES, TEST_LABELS = "imagesTs", "labelsTs"  # nnU-Net's raw test folders, scored with --test


@dataclass(frozen=True)
class Request:
    """A benchmark as the command line asks for it, unchecked."""

    dataset: str
    configuration: str
    folds: tuple[str, ...]
    labels: tuple[int, ...]
    device: str
    arms: tuple[str, ...] | None = None  # None: every arm whose inputs are given
    probe: bool = False  # add the frozen-encoder probe arms of the given checkpoints' families
    pretrained: tuple[str, ...] = ()  # encoder checkpoints, at most one per family
    epochs: int | None = None
    iters: int | None = None
    out: str | None = None
    subset_seeds: tuple[int, ...] = (0,)
    test: bool = False


@dataclass(frozen=True)
class Settings:
    """A benchmark as the command line asked for it, checked."""

    dataset: str  # the -d value as given (passed on to the commands)
    dataset_name: str  # DatasetXXX_Name
    configuration: str
    folds: tuple[str, ...]
    labels: tuple[int, ...]
    arms: tuple[Arm, ...]
    epochs: int | None
    iters: int | None
    device: str
    out: Path
    pretrained: dict[str, Path] = field(default_factory=dict)  # family -> its checkpoint (absolute)
    references: dict[str, dict] = field(default_factory=dict)  # family -> what plans record of its checkpoint
    subset_seeds: tuple[int, ...] = (0,)  # label subsets drawn with each seed (0: the trainers' default draw)
    test: bool = False  # every run also predicts and scores the raw dataset's imagesTs / labelsTs
    dims: int = 2  # the configuration's spatial dimensions

    def family(self, arm: Arm) -> str | None:
        """The encoder family whose plans the arm trains on this configuration (None: nnU-Net's own)."""
        return arm.family_for(self.dims)

    def checkpoint(self, arm: Arm) -> Path | None:
        """The checkpoint the arm's derived plans are planned from (None: none given or needed)."""
        return self.pretrained.get(self.family(arm))

    @property
    def results_dir(self) -> Path:
        return Path(os.environ["nnUNet_results"]) / self.dataset_name

    @property
    def preprocessed_dir(self) -> Path:
        return Path(os.environ["nnUNet_preprocessed"]) / self.dataset_name

    @property
    def raw_dir(self) -> Path:
        return Path(os.environ.get("nnUNet_raw", "")) / self.dataset_name


@dataclass(frozen=True)
class Run:
    arm: Arm
    labels: int
    fold: str
    trainer: str
    configuration: str
    seed: int = 0  # label-subset seed (always 0 at 100%: every seed draws all cases)

    @property
    def name(self) -> str:
        """Unique per trainer variant, plans, configuration and fold (the log file's name)."""
        return f"{self.trainer}__{self.arm.plans}__{self.configuration}__fold_{self.fold}"

    @property
    def short(self) -> str:
        seed = f" seed {self.seed}" if self.seed else ""
        return f"{self.arm.name} {self.labels}%{seed} fold {self.fold}"

    def folder(self, results_dir: Path) -> Path:
        return results_dir / f"{self.trainer}__{self.arm.plans}__{self.configuration}" / f"fold_{self.fold}"

    def summary(self, results_dir: Path) -> Path:
        return self.folder(results_dir) / "validation" / "summary.json"

    def test_summary(self, results_dir: Path) -> Path:
        return self.folder(results_dir) / "test" / "summary.json"


@dataclass(frozen=True)
class Job:
    """One command to run; ``run`` is None for the planning step; ``produces`` must exist after it."""

    name: str
    cmd: tuple[str, ...]
    run: Run | None = None
    produces: Path | None = None

    @property
    def text(self) -> str:
        return shlex.join(self.cmd)

    @property
    def label(self) -> str:
        if self.run is None:
            return self.name
        return self.run.short + ("" if self.cmd[0] == "nnUNetv2_train" else f" ({self.cmd[0]})")


def check_environment() -> None:
    for name in REQUIRED_ENV:
        value = os.environ.get(name)
        if not value:
            raise BenchmarkError(
                f"The environment variable {name} is not set; set nnUNet_raw, "
                "nnUNet_preprocessed and nnUNet_results as for nnU-Net's own commands."
            )
    root = os.environ["nnUNet_preprocessed"]
    if not Path(root).is_dir():
        raise BenchmarkError(f"nnUNet_preprocessed={root} is not a folder.")


def make_settings(request: Request) -> Settings:
    """Check everything a user can get wrong before anything runs (raises BenchmarkError); reads (never
    unpickles) and verifies the checkpoints."""
    check_environment()
    name = dataset_name(request.dataset, BenchmarkError)
    bad = [p for p in request.labels if not is_label_percentage(p)]
    if bad:
        raise BenchmarkError(f"--labels must be percentages between 1 and 100, got {bad[0]}.")
    for flag, value in (("--epochs", request.epochs), ("--iters", request.iters)):
        if value is not None and value < 1:
            raise BenchmarkError(f"{flag} must be at least 1, got {value}.")
    if any(seed < 0 for seed in request.subset_seeds):
        raise BenchmarkError(f"--subset-seeds must be non-negative integers, got {min(request.subset_seeds)}.")
    dims = planned_dims(Path(os.environ["nnUNet_preprocessed"]) / name, request.configuration)
    pretrained, references = read_checkpoints(request.pretrained, request.configuration, dims)
    chosen = tuple(
        ARMS[a] for a in chosen_arms(request.arms, request.probe, set(pretrained), request.configuration, dims)
    )
    settings = Settings(
        dataset=str(request.dataset),
        dataset_name=name,
        configuration=request.configuration,
        folds=tuple(dict.fromkeys(fold_name(str(f)) for f in request.folds)),
        labels=tuple(sorted(set(request.labels))),
        arms=chosen,
        epochs=request.epochs,
        iters=request.iters,
        device=request.device,
        out=Path("."),
        pretrained=pretrained,
        references=references,
        subset_seeds=tuple(dict.fromkeys(int(s) for s in request.subset_seeds)),
        test=request.test,
        dims=dims,
    )
    check_checkpoints_given(settings)
    if request.test:
        check_test_set(settings)
    return replace(settings, out=Path(request.out) if request.out else settings.results_dir / "vismae_benchmark")


def planned_dims(preprocessed_dir: Path, configuration: str) -> int:
    """The configuration's spatial dimensions in the dataset's nnU-Net plans; where they do not hold it (yet:
    the benchmark says so before anything runs), by nnU-Net's names, whose one 2D configuration is 2d."""
    try:
        plans = json.loads((preprocessed_dir / "nnUNetPlans.json").read_text())
        return configuration_dims(plans, configuration)
    except (OSError, ValueError):
        return 2 if configuration == CONFIGURATION_2D else 3


def read_checkpoints(paths, configuration: str, dims: int) -> tuple[dict[str, Path], dict[str, dict]]:
    """Each checkpoint read and verified (never unpickled), its family read from it, its spatial dimensions
    those of the configuration: (family -> absolute path, family -> what plans record of it); one checkpoint
    per family."""
    if not paths:
        return {}, {}
    from nnunetv2_vismae.checkpoint import read_encoder_checkpoint  # here: the package imports torch
    from nnunetv2_vismae.checkpoint.reference import checkpoint_reference

    pretrained, references = {}, {}
    for path in paths:
        if not Path(path).is_file():
            raise BenchmarkError(f"The pretrained checkpoint {path} does not exist.")
        checkpoint = read_encoder_checkpoint(path)
        if checkpoint.spatial_dims != dims:
            raise BenchmarkError(
                f"--pretrained {path} holds a {checkpoint.spatial_dims}D encoder, but -c {configuration} is {dims}D; "
                "benchmark the configuration it was pretrained on."
            )
        family = checkpoint.family
        if family in pretrained:
            raise BenchmarkError(
                f"--pretrained {pretrained[family]} and {Path(path).resolve()} both hold a {family} encoder; "
                "give one checkpoint per encoder family."
            )
        pretrained[family] = Path(path).resolve()
        references[family] = checkpoint_reference(path, checkpoint)
    return pretrained, references


def chosen_arms(named, probe: bool, given: set[str], configuration: str = CONFIGURATION_2D, dims: int = 2) -> list[str]:
    """--arms (default: every arm whose inputs are given), and with --probe the probe arms of the given families;
    only arms that train the configuration's ``dims`` dimensions (one sentence for a named one that does not)."""
    if probe and not given:
        raise BenchmarkError(
            "--probe compares a pretrained frozen encoder with a random one and needs its checkpoint: "
            "pass --pretrained FILE (one per encoder family)."
        )
    unknown = [a for a in named or () if a not in ARMS]
    if unknown:
        raise BenchmarkError(f"Unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}.")
    unplanned = [ARMS[a] for a in named or () if not ARMS[a].trains_dims(dims)]
    if unplanned:
        raise BenchmarkError(unplanned[0].unplanned_dims(configuration, dims))
    arms = list(dict.fromkeys(named or default_arms(given, dims)))
    return list(dict.fromkeys(arms + probe_arms(given, dims))) if probe else arms


def fold_name(fold: str) -> str:
    """The fold as nnU-Net names its folder: ``00`` -> ``0`` (nnU-Net writes fold_0), ``all`` as it is."""
    if fold == "all":
        return fold
    if not (fold.isascii() and fold.isdigit()):  # str.isdigit alone takes '²'
        raise BenchmarkError(f"Fold {fold!r} is neither a non-negative integer nor 'all'.")
    return str(int(fold))


def check_checkpoints_given(settings: Settings) -> None:
    """Arms that load weights need their family's checkpoint; plans that copy a checkpoint's network can
    only be planned from one (or exist)."""
    for arm in settings.arms:
        if settings.checkpoint(arm) is not None:
            continue
        family = settings.family(arm)
        if arm.needs_pretrained:
            raise BenchmarkError(
                f"The {arm.name} arm fine-tunes a pretrained {family} encoder; pass --pretrained FILE with "
                f"a {family} checkpoint{given_families(settings)} (or leave the arm out with --arms)."
            )
        if arm.planned_from_checkpoint_only(settings.dims) and not is_planned(settings, arm):
            raise BenchmarkError(
                f"The {arm.name} arm trains the network of {arm.plans}, which is planned from a "
                f"{family} checkpoint; pass --pretrained FILE with one once{given_families(settings)}."
            )


def given_families(settings: Settings) -> str:
    """`` (given: FILE, a swin encoder)``: what the checkpoints passed hold, for the sentences above."""
    if not settings.pretrained:
        return ""
    return " (given: " + "; ".join(f"{path}, a {family} encoder" for family, path in settings.pretrained.items()) + ")"


def run_labels(settings: Settings, arm: Arm) -> tuple[int, ...]:
    """The fractions an arm runs at: --labels, and always 100% for vanilla nnU-Net (the verdict's reference)."""
    if arm.name == REFERENCE_ARM:
        return tuple(sorted({*settings.labels, REFERENCE_LABELS}))
    return settings.labels


def all_runs(settings: Settings) -> list[Run]:
    return [
        Run(arm, p, fold, trainer_name(arm, p, settings.epochs, settings.iters, seed), settings.configuration, seed)
        for arm in settings.arms
        for p in run_labels(settings, arm)
        for seed in (settings.subset_seeds if p < REFERENCE_LABELS else (0,))
        for fold in settings.folds
    ]


def run_state(folder: Path) -> str:
    if is_readable_summary(folder / "validation" / "summary.json"):
        return DONE
    if (folder / "checkpoint_final.pth").is_file():
        return VALIDATE
    if (folder / "checkpoint_latest.pth").is_file():
        return CONTINUE
    return TRAIN


def train_command(settings: Settings, run: Run, state: str) -> tuple[str, ...]:
    cmd = [
        "nnUNetv2_train",
        settings.dataset,
        run.configuration,
        run.fold,
        "-p",
        run.arm.plans,
        "-tr",
        run.trainer,
        "-device",
        settings.device,
    ]
    if state == VALIDATE:
        cmd.append("--val")
    elif state == CONTINUE:
        cmd.append("--c")
    return tuple(cmd)


def is_planned(settings: Settings, arm: Arm) -> bool:
    """Whether the arm's derived plans exist with the configuration (nnUNetv2_vismae_plan adds a configuration
    to plans it wrote and keeps the others)."""
    path = settings.preprocessed_dir / f"{arm.plans}.json"
    if not path.is_file():
        return False
    try:
        configurations = json.loads(path.read_text())["configurations"]
    except (OSError, ValueError, KeyError, TypeError):
        return True  # plans of unknown content are never planned over (check_planned_from reads them)
    return not isinstance(configurations, dict) or settings.configuration in configurations


def planning_jobs(settings: Settings, pending: list[Run]) -> list[Job]:
    """``nnUNetv2_vismae_plan`` for derived plans that pending runs need and that do not exist yet:
    existing plans may be the user's own and are never overwritten (``check_planned_from`` makes sure
    they were planned from the given checkpoint)."""
    jobs = []
    for plans, arm in {r.arm.plans: r.arm for r in pending if r.arm.derived_plans}.items():
        checkpoint = settings.checkpoint(arm)
        if is_planned(settings, arm):
            continue
        cmd = ["nnUNetv2_vismae_plan", "-d", settings.dataset, "-o", plans]
        if settings.configuration != CONFIGURATION_2D:  # the command's default
            cmd[3:3] = ["-c", settings.configuration]
        if checkpoint is not None:
            cmd += ["--pretrained", str(checkpoint)]
        jobs.append(Job(f"plan_{plans}", tuple(cmd)))
    return jobs


def test_jobs(settings: Settings, run: Run) -> list[Job]:
    """Predict the raw test images with the run's final checkpoint, then score them with nnU-Net."""
    out, raw = run.test_summary(settings.results_dir).parent, settings.raw_dir
    predict = (
        "nnUNetv2_predict",
        "-i",
        str(raw / TEST_IMAGES),
        "-o",
        str(out),
        "-d",
        settings.dataset,
        "-c",
        run.configuration,
        "-f",
        run.fold,
        "-p",
        run.arm.plans,
        "-tr",
        run.trainer,
        "-chk",
        "checkpoint_final.pth",
        "-device",
        settings.device,
        "--disable_progress_bar",
    )
    evaluate = (
        "nnUNetv2_evaluate_folder",
        str(raw / TEST_LABELS),
        str(out),
        "-djfile",
        str(out / "dataset.json"),
        "-pfile",
        str(out / "plans.json"),
        "-o",
        str(out / "summary.json"),
    )
    return [
        Job(f"{run.name}__predict", predict, run),
        Job(f"{run.name}__evaluate", evaluate, run, produces=run.test_summary(settings.results_dir)),
    ]


def scored(settings: Settings, run: Run) -> Path:
    """The summary a finished run is scored from: its test summary with --test, else its validation one."""
    return run.test_summary(settings.results_dir) if settings.test else run.summary(settings.results_dir)


def is_finished(settings: Settings, run: Run) -> bool:
    return is_readable_summary(scored(settings, run))


def run_jobs(settings: Settings, run: Run) -> list[Job]:
    """The commands one run still needs, from the files its fold folder holds now: training (or its
    resumption), then with --test the prediction and scoring of the test set; none when it is finished."""
    jobs = []
    state = run_state(run.folder(settings.results_dir))
    if state != DONE:
        jobs.append(Job(run.name, train_command(settings, run, state), run, run.summary(settings.results_dir)))
    if settings.test and not is_readable_summary(run.test_summary(settings.results_dir)):
        jobs += test_jobs(settings, run)
    return jobs


def pending_jobs(settings: Settings) -> tuple[list[Job], list[Run]]:
    """(jobs still to run, runs already finished and scored)."""
    finished, training, jobs = [], [], []
    for run in all_runs(settings):
        commands = run_jobs(settings, run)
        if not commands:
            finished.append(run)
        elif commands[0].cmd[0] == "nnUNetv2_train":
            training.append(run)
        jobs += commands
    return planning_jobs(settings, training) + jobs, finished


def check_test_set(settings: Settings) -> None:
    """--test needs nnU-Net's raw test images and their labels."""
    if not os.environ.get("nnUNet_raw"):
        raise BenchmarkError("--test scores the raw dataset's imagesTs and labelsTs; set nnUNet_raw.")
    for name in (TEST_IMAGES, TEST_LABELS):
        folder = settings.raw_dir / name
        if not folder.is_dir() or not any(folder.iterdir()):
            raise BenchmarkError(f"--test needs the test set's {name} in {folder}, which is missing or empty.")


def check_plans_exist(settings: Settings, jobs: list[Job]) -> None:
    """nnU-Net's own plans must be there before anything trains."""
    needed = {j.run.arm.plans for j in jobs if j.run is not None and not j.run.arm.derived_plans}
    if any(j.run is None for j in jobs):
        needed.add("nnUNetPlans")  # nnUNetv2_vismae_plan derives from them
    for plans in sorted(needed):
        path = settings.preprocessed_dir / f"{plans}.json"
        if not path.is_file():
            raise BenchmarkError(
                f"{path} does not exist; run nnUNetv2_plan_and_preprocess -d {settings.dataset} "
                f"-c {settings.configuration} first."
            )


def recorded_reference(plans_file: Path, configuration: str) -> dict | None:
    """What plans record of the checkpoint their configuration was planned from ({}: none; None: they have no
    such configuration); BenchmarkError when unreadable."""
    from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY  # here: the package imports torch

    try:
        configurations = json.loads(plans_file.read_text())["configurations"]
        if configuration not in configurations:
            return None
        reference = configurations[configuration].get(PRETRAINED_KEY)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BenchmarkError(
            f"{plans_file} is not readable plans with a {configuration} configuration ({type(e).__name__}: {e})."
        ) from None
    return reference if isinstance(reference, dict) else {}


def check_planned_from(settings: Settings) -> None:
    """The derived plans, and the runs already trained with them, must come from the checkpoints given now:
    otherwise planning would overwrite the user's plans, or the report would name the given encoder for runs
    fine-tuned from another one. A checkpoint is the same when its tensors and its metadata hash as recorded."""
    references = settings.references
    runs = [run for run in all_runs(settings) if run.arm.derived_plans and settings.checkpoint(run.arm) is not None]
    for arm in {run.arm.plans: run.arm for run in runs}.values():
        plans = settings.preprocessed_dir / f"{arm.plans}.json"
        recorded = recorded_reference(plans, settings.configuration) if plans.is_file() else None
        given = references[settings.family(arm)]
        if recorded is not None and not same_checkpoint(recorded, given):
            raise BenchmarkError(
                f"{plans} was planned from {described(recorded)}, not from --pretrained "
                f"{described(given)}, and the benchmark does not overwrite plans; pass the "
                f"checkpoint they were planned from, or move {plans.name} away."
            )
    for folder, arm in {run.folder(settings.results_dir).parent: run.arm for run in runs}.items():
        copy = folder / "plans.json"  # nnU-Net's copy of the plans its runs trained with
        recorded = recorded_reference(copy, settings.configuration) if copy.is_file() else None
        given = references[settings.family(arm)]
        if recorded is not None and not same_checkpoint(recorded, given):
            raise BenchmarkError(
                f"The runs in {folder} were trained with plans planned from {described(recorded)}, not from "
                f"--pretrained {described(given)}; pass that checkpoint, or "
                "move the folder away to train them anew."
            )


def same_checkpoint(recorded: dict, given: dict) -> bool:
    """Whether plans' checkpoint reference names the given checkpoint's tensors and metadata (plans written
    before the metadata was hashed record none, and are not taken for any checkpoint's)."""
    return all(recorded.get(key) == given[key] for key in ("content_hash", "metadata_hash"))


def described(reference: dict) -> str:
    """A plans' checkpoint reference in words."""
    if not reference:
        return "no checkpoint"
    return (
        f"{reference.get('path')} (content hash {reference.get('content_hash')}, "
        f"metadata hash {reference.get('metadata_hash', 'not recorded')})"
    )
