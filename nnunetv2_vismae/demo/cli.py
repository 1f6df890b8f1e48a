"""``nnUNetv2_vismae_demo [--quick | --study | --shift] [-o DIR] [-device cpu|cuda] [--dry-run]``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from nnunetv2_vismae.demo.pipeline import DEFAULT, QUICK, SHIFT, STUDY, default_folder, run_demo, steps
from nnunetv2_vismae.flags import OneSentenceParser, console_script
from nnunetv2_vismae.io.folders import make_output_folder
from nnunetv2_vismae.io.nnunet import sigterm_as_interrupt

PROG = "nnUNetv2_vismae_demo"


@console_script(PROG, resumes=True)
def main(argv=None):
    parser = OneSentenceParser(
        prog=PROG,
        description="Run the whole pipeline on the embedded phantom dataset: generate it, plan and "
        "preprocess with nnU-Net, pretrain encoders on the unlabeled pool, and "
        "benchmark vanilla nnU-Net and each pretrained arm with its from-scratch twin at "
        "several label fractions. Rerunning resumes.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_const",
        dest="size",
        const=QUICK,
        default=DEFAULT,
        help="a smoke test: a smaller, shorter run (minutes on a CPU) that draws no verdict",
    )
    size.add_argument(
        "--study",
        action="store_const",
        dest="size",
        const=STUDY,
        help="the study of docs/results/study.md: every arm with its twin at 5, 10 and 25%% labels, scored on 200 "
        "held-out phantoms (about 2.7 h on a 2-core CPU); in a default demo's folder it reuses "
        "that demo's runs",
    )
    size.add_argument(
        "--shift",
        action="store_const",
        dest="size",
        const=SHIFT,
        help="appearance shift: labeled phantoms only in CT and MR T1 style, the unlabeled pool and the "
        "200 test phantoms in all four; every arm at 10%% labels at the study's budget (its own folder)",
    )
    parser.add_argument(
        "-o",
        help="output folder (default: ./vismae_demo, shared by the default demo and --study; "
        "./vismae_demo_quick for --quick, ./vismae_demo_shift for --shift)",
    )
    parser.add_argument("-device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    parser.add_argument("--dry-run", action="store_true", help="print the steps' commands and run nothing")
    args = parser.parse_args(argv)
    out = args.o or default_folder(args.size)
    if args.dry_run:
        for name, action in steps(args.size, Path(out).resolve(), args.device):
            print(f"{name}: " + (f"(in-process) {action.func.__name__}" if callable(action) else shlex.join(action)))
        return
    make_output_folder(out)
    if args.size is QUICK:
        print(
            "This quick demo is a smoke test of the whole pipeline: its runs are far too short to learn the "
            "organs, so its report draws no verdict.",
            flush=True,
        )
    with sigterm_as_interrupt():  # stops the step it runs, as Ctrl-C does
        report_dir = run_demo(Path(out), args.size, args.device)
    report, styles = report_dir / "report.md", report_dir / "styles.md"
    for text in (report, styles):
        print(text.read_text() if text.exists() else "")
    print(f"Report: {report}\nPlot:   {report_dir / 'label_efficiency.png'}")


if __name__ == "__main__":
    sys.exit(main())
