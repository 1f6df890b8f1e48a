"""``nnUNetv2_vismae_benchmark``: label efficiency of VisMAE against vanilla nnU-Net on a dataset.

Trains every (arm, label fraction, fold) that is not finished through nnU-Net's own
``nnUNetv2_train`` (each run's output in ``OUT/logs``), one after another in this process or as
submitit jobs on this machine or a SLURM cluster (``executors``), then reads the folds' validation
summaries and writes ``results.csv``, ``report.md`` and ``label_efficiency.png`` into OUT.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from nnunetv2_vismae.benchmark import executors as ex
from nnunetv2_vismae.benchmark import label_efficiency as le
from nnunetv2_vismae.benchmark.arms import ARMS
from nnunetv2_vismae.benchmark.errors import BenchmarkError
from nnunetv2_vismae.benchmark.report import class_names, read_summary, write_outputs
from nnunetv2_vismae.benchmark.statistics import DEFAULT_MARGIN
from nnunetv2_vismae.errors import StepFailed
from nnunetv2_vismae.flags import OneSentenceParser, console_script, positive_int
from nnunetv2_vismae.io.folders import make_output_folder
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, command_environment, sigterm_as_interrupt

PROG = "nnUNetv2_vismae_benchmark"


def build_parser() -> argparse.ArgumentParser:
    arms = ", ".join(f"{a.name} ({a.trainer} with {a.plans})" for a in ARMS.values())
    parser = OneSentenceParser(
        prog=PROG,
        description="Label-efficiency benchmark: train each arm on a fraction of each fold's training cases "
        "with nnU-Net's own nnUNetv2_train (finished runs are skipped, interrupted ones resumed), "
        "then write results.csv, report.md and label_efficiency.png. Arms: " + arms + ".",
    )
    parser.add_argument("-d", required=True, help="dataset id or DatasetXXX_Name")
    parser.add_argument("-c", default=CONFIGURATION_2D, help=f"configuration (default: {CONFIGURATION_2D})")
    parser.add_argument(
        "-f", nargs="+", default=["0", "1", "2", "3", "4"], metavar="FOLD", help="folds (default: 0 1 2 3 4)"
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        type=int,
        default=[10, 25, 50, 100],
        metavar="P",
        help="label fractions in percent of each fold's training cases, 1..100 "
        "(default: 10 25 50 100); the nnunet arm always runs at 100%% too, the verdict's "
        "reference",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        metavar="ARM",
        help=f"arms to run, of {' '.join(ARMS)} (default: every arm whose inputs are given: nnunet and scratch "
        "always, vismae with a swin checkpoint on 2d or a swin3d one on 3d_fullres, cnn-mae and its twin cnn-scratch "
        "with a cnn checkpoint)",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="also run the frozen-encoder probe of every family whose checkpoint is given: the pretrained "
        "encoder frozen (vismae-frozen, cnn-mae-frozen) against the same network with a random frozen encoder "
        "(vismae-frozen-random, cnn-frozen-random), reported in report.md and probe.png apart from the verdict",
    )
    parser.add_argument(
        "--pretrained",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="encoder checkpoints to fine-tune, at most one per encoder family (the family is read from the file: "
        "swin, or swin3d on 3d_fullres, for the vismae arm, cnn, from nnUNetv2_vismae_pretrain --encoder cnn, for "
        "cnn-mae); each is planned "
        "first with nnUNetv2_vismae_plan --pretrained FILE",
    )
    parser.add_argument(
        "--pretrained-cnn", dest="pretrained", action="extend", nargs=1, metavar="FILE", help="the same as --pretrained"
    )
    parser.add_argument(
        "--subset-seeds",
        nargs="+",
        type=int,
        default=[0],
        metavar="S",
        help="draw each label fraction below 100%% with each of these seeds (trainer suffix "
        "_seed{S}; 0, the default, is no suffix) and pool them like folds",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help="non-inferiority margin in Dice: an arm is non-inferior to nnU-Net at 100%% labels "
        "when the lower 95%% confidence bound of the paired difference is above -margin "
        f"(default: {DEFAULT_MARGIN})",
    )
    parser.add_argument(
        "--test",
        action="store_true",
        help="also predict the raw dataset's imagesTs with every run (nnUNetv2_predict) and score it "
        "against labelsTs (nnUNetv2_evaluate_folder); the statistics then use these test cases, "
        "the same for every run, instead of each fold's validation cases",
    )
    parser.add_argument("--epochs", type=int, help="epochs per run (trainer suffix _{E}epochs; default: the trainer's)")
    parser.add_argument(
        "--iters", type=int, help="training iterations per epoch (suffix _{M}iters; default: the trainer's)"
    )
    parser.add_argument(
        "-device",
        default=None,
        choices=["cpu", "cuda", "mps"],
        help="device for nnUNetv2_train (default: cuda if available, else cpu)",
    )
    parser.add_argument(
        "-o", metavar="OUT", help="output folder (default: $nnUNet_results/DatasetXXX_Name/vismae_benchmark)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the commands that would run and run nothing")
    mode.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: write the report from the runs that finished and say which are missing (after --no-wait)",
    )
    add_executor_arguments(parser)
    return parser


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("executor", "where the trainings run (each run: train, and with --test score)")
    group.add_argument(
        "--executor",
        choices=ex.EXECUTORS,
        default=ex.INLINE,
        help="inline (default): one after another in this process; local: each run a submitit job on this "
        "machine; slurm: each run a task of one SLURM job array (OUT must be on a file system the nodes share)",
    )
    group.add_argument(
        "--max-parallel",
        type=positive_int,
        metavar="N",
        help="local: N trainings at once (default 1), with -device cuda one GPU each, round robin over the "
        "visible GPUs; slurm: at most N array tasks at once (default: submitit's 256)",
    )
    group.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the jobs are submitted; a later run with --collect writes the report",
    )
    group.add_argument("--slurm-partition", metavar="NAME", help="SLURM partition of the jobs")
    group.add_argument(
        "--slurm-gpus-per-job",
        type=positive_int,
        metavar="G",
        help="GPUs per job (default: 1 with -device cuda, none otherwise)",
    )
    group.add_argument(
        "--slurm-time",
        type=positive_int,
        metavar="MINUTES",
        help=f"time limit of each job (default: {ex.DEFAULT_SLURM_TIME}); a run cut by it continues from its "
        "latest checkpoint when the benchmark is run again",
    )
    group.add_argument(
        "--slurm-extra",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="more job settings: submitit's slurm parameters (mem=64GB cpus_per_task=8 account=lab qos=high "
        "constraint=a100 ...), any other KEY passed to sbatch as --KEY=VALUE",
    )


SLURM_FLAGS = ("slurm_partition", "slurm_gpus_per_job", "slurm_time")


def executor_options(args) -> ex.Options:
    """The executor flags, checked against each other."""
    given = [f"--{name.replace('_', '-')}" for name in (*SLURM_FLAGS, "slurm_extra") if getattr(args, name)]
    if given and args.executor != ex.SLURM:
        raise BenchmarkError(f"{given[0]} needs --executor slurm, got --executor {args.executor}.")
    if args.executor == ex.INLINE:
        for flag, value in (("--max-parallel", args.max_parallel), ("--no-wait", args.no_wait)):
            if value:
                raise BenchmarkError(
                    f"{flag} needs --executor local or slurm; the inline benchmark runs one at a time."
                )
    options = ex.Options(
        kind=args.executor,
        max_parallel=args.max_parallel,
        wait=not args.no_wait,
        slurm_partition=args.slurm_partition,
        slurm_gpus_per_job=args.slurm_gpus_per_job,
        slurm_time=args.slurm_time or ex.DEFAULT_SLURM_TIME,
        slurm_extra=ex.parse_extra(args.slurm_extra),
    )
    if options.kind == ex.SLURM and not (args.collect or args.dry_run):
        ex.check_slurm_commands()  # now, not after the planning that precedes submitting
    return options


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def report_commands(settings: le.Settings, invocation: str) -> list[str]:
    """Every command recorded in OUT/commands.txt and this invocation, plus runs found finished that
    no benchmark ran (with the command that makes them)."""
    history = settings.out / ex.HISTORY
    lines = history.read_text().splitlines() if history.is_file() else []
    lines = list(dict.fromkeys(lines + [invocation]))
    lines.insert(0, f"# nnU-Net's commands ran with nnUNet_extTrainer={command_environment()['nnUNet_extTrainer']}")
    foreign = []
    for run in le.all_runs(settings):
        command = shlex.join(le.train_command(settings, run, le.TRAIN))
        if not any(line.startswith(command) for line in lines):
            foreign.append(command)
    if foreign:
        lines += ["# found finished, not run by this benchmark; the equivalent commands:", *foreign]
    return lines


def settings_lines(settings: le.Settings) -> list[str]:
    arms = ", ".join(f"{a.title} (`{a.trainer}_labels{{P}}` with `{a.plans}`)" for a in settings.arms)
    schedule = []
    if settings.epochs is not None:
        schedule.append(f"{settings.epochs} epoch{'s' * (settings.epochs != 1)}")
    if settings.iters is not None:
        schedule.append(f"{settings.iters} training iteration{'s' * (settings.iters != 1)} per epoch")
    default = "the trainers' defaults"
    scored_on = (
        f"the test set ({le.TEST_IMAGES} / {le.TEST_LABELS} of {settings.raw_dir}), predicted by every run"
        if settings.test
        else "each fold's validation cases"
    )
    validation = "" if settings.test else "validation cases are the whole fold's; "
    pretrained = [f"- Pretrained {family} encoder: {path}" for family, path in settings.pretrained.items()]
    return [
        f"- Dataset: {settings.dataset_name}, configuration {settings.configuration}, "
        f"folds {', '.join(settings.folds)}",
        f"- Label fractions: {', '.join(f'{p}%' for p in settings.labels)} of each fold's training cases "
        f"({validation}vanilla nnU-Net also at 100%); "
        f"label-subset seeds {', '.join(map(str, settings.subset_seeds))}",
        f"- Arms: {arms}",
        f"- Schedule: {', '.join(schedule) or default}; device {settings.device}",
        f"- Scored on: {scored_on}",
    ] + (pretrained or ["- Pretrained encoder: none"])


def collect(settings: le.Settings) -> list:
    """The runs' scores: on the test set with --test, else on each fold's validation cases."""
    return [
        read_summary(
            le.scored(settings, run),
            run.arm.name,
            run.labels,
            run.fold,
            run.seed,
            "test" if settings.test else "validation",
        )
        for run in le.all_runs(settings)
        if le.is_finished(settings, run)
    ]


def check_configuration(settings: le.Settings) -> None:
    """nnU-Net's plans must hold the configuration every arm trains (the derived plans copy it)."""
    path = settings.preprocessed_dir / "nnUNetPlans.json"
    if not path.is_file():
        return
    configurations = json.loads(path.read_text()).get("configurations")
    if configurations is not None and settings.configuration not in configurations:
        raise BenchmarkError(
            f"{path} has no {settings.configuration!r} configuration (it has "
            f"{sorted(configurations)}); run nnUNetv2_plan_and_preprocess -d {settings.dataset} "
            f"-c {settings.configuration}."
        )


def check_writable(settings: le.Settings) -> None:
    make_output_folder(settings.out)  # before planning or training: one sentence where it cannot be


def benchmark(args, argv: list[str]) -> int:
    options = executor_options(args)
    if not 0 <= args.margin < 1:
        raise BenchmarkError(f"--margin must be a Dice difference between 0 and 1, got {args.margin}.")
    request = le.Request(
        dataset=args.d,
        configuration=args.c,
        folds=tuple(args.f),
        labels=tuple(args.labels),
        device=args.device or default_device(),
        arms=tuple(args.arms) if args.arms else None,
        probe=args.probe,
        pretrained=tuple(args.pretrained),
        epochs=args.epochs,
        iters=args.iters,
        out=args.o,
        subset_seeds=tuple(args.subset_seeds),
        test=args.test,
    )
    settings = le.make_settings(request)
    le.check_planned_from(settings)  # a dry run refuses what the real run refuses
    jobs, finished = le.pending_jobs(settings)
    total = len(finished) + sum(j.run is not None for j in jobs)
    if args.dry_run:
        for job in jobs:
            print(job.text)
        print(
            f"{len(finished)} of {total} runs finished; {len(jobs)} commands to run "
            "(nnUNet_extTrainer is set for them).",
            file=sys.stderr,
        )
        return 0
    invocation = shlex.join([PROG, *argv])
    if args.collect:
        check_writable(settings)
        return report_outcome(settings, ex.outcome(settings), invocation, args.margin)
    le.check_plans_exist(settings, jobs)
    check_configuration(settings)
    check_writable(settings)
    if jobs:
        ex.append_history(settings.out, invocation)
    if options.kind == ex.INLINE:
        if jobs:
            ex.run_inline(settings, jobs)
        results = collect(settings)
        files = write_report(settings, results, invocation, args.margin)
        print(f"{len(results)} runs summarized; wrote " + ", ".join(str(f) for f in files))
        return 0
    return run_as_jobs(settings, jobs, options, invocation, args.margin)


def run_as_jobs(settings: le.Settings, jobs: list[le.Job], options: ex.Options, invocation: str, margin: float) -> int:
    """Plan here, then submit every pending run as a job; wait for them and report, or leave that to --collect."""
    planning = [job for job in jobs if job.run is None]
    if planning:  # before any training: every run's plans must exist
        ex.run_inline(settings, planning)
    runs = list(dict.fromkeys(job.run for job in jobs if job.run is not None))
    submitted = ex.submit(settings, runs, options) if runs else []
    if not options.wait:
        ids = ", ".join(job.job_id for job in submitted)
        print(
            f"Submitted {len(submitted)} jobs ({options.kind}; ids {ids or 'none'}), their output goes to "
            f"{ex.logs_folder(settings)}; run the same command with --collect to write the report from the runs "
            "that finished."
        )
        return 0
    ex.wait(submitted, runs, stop_on_interrupt=options.kind == ex.LOCAL)  # SLURM jobs run on (README)
    return report_outcome(settings, ex.outcome(settings, dict(zip(runs, submitted))), invocation, margin)


def write_report(settings: le.Settings, results: list, invocation: str, margin: float) -> list:
    names = class_names(settings.preprocessed_dir / "dataset.json")
    if not names and le.all_runs(settings):
        names = class_names(le.all_runs(settings)[0].folder(settings.results_dir).parent / "dataset.json")
    return write_outputs(
        settings.out,
        results,
        names,
        f"{settings.dataset_name} ({settings.configuration})",
        report_commands(settings, invocation),
        settings_lines(settings),
        settings.dims,
        margin,
    )


def report_outcome(settings: le.Settings, outcome: ex.Outcome, invocation: str, margin: float) -> int:
    """The report from the runs that finished, then which did not: each failed run with its log (and exit
    status 1), the number of those still queued or running."""
    total = len(le.all_runs(settings))
    if outcome.finished:
        files = write_report(settings, collect(settings), invocation, margin)
        print(f"{len(outcome.finished)} of {total} runs summarized; wrote " + ", ".join(str(f) for f in files))
    else:
        print(f"None of the {total} runs has finished yet; no report written.")
    if outcome.unfinished:
        print(
            f"{len(outcome.unfinished)} of {total} runs are not finished (queued, running or not submitted): "
            + ", ".join(run.short for run in outcome.unfinished),
            file=sys.stderr,
        )
    for failure in outcome.failed:
        print(f"{PROG}: {failure}", file=sys.stderr)
    if outcome.failed:
        raise StepFailed(
            f"{len(outcome.failed)} of {total} runs failed (each named above with its log); the report holds "
            "the others and the same command retries the failed ones"
        )
    return 0


@console_script(PROG, resumes=True)
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    with sigterm_as_interrupt():
        return benchmark(build_parser().parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
