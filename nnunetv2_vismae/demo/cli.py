"""``nnUNetv2_vismae_demo [--quick | --study | --shift] [--3d] [-o DIR] [-device cpu|cuda] [--dry-run]``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from nnunetv2_vismae.demo.pipeline import (
    DEFAULT,
    QUICK,
    QUICK_3D,
    SHIFT,
    STUDY,
    default_folder,
    in_volumes,
    run_demo,
    steps,
)
from nnunetv2_vismae.flags import OneSentenceParser, console_script
from nnunetv2_vismae.io.folders import make_output_folder
from nnunetv2_vismae.io.nnunet import sigterm_as_interrupt

PROG = "nnUNetv2_vismae_demo"
SMOKE_SENTENCES = {
    QUICK.preset: "This quick demo is a smoke test of the whole pipeline: its runs are far too short to learn the "
    "organs, so its report draws no verdict.",
    QUICK_3D.preset: "No verdict: this quick 3D demo is a smoke test of the 3D pipeline (nnU-Net's 3d_fullres on "
    "phantom volumes), whose runs are far too short to learn the organs; on a CPU a 3D verdict is out of reach, "
    "run --3d --study on a GPU for one.",
}


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
        "--3d",
        dest="volumes",
        action="store_true",
        help="on phantom volumes with nnU-Net's 3d_fullres and all five arms (nnunet; vismae and scratch: the 3D "
        "Swin; cnn-mae and cnn-scratch: nnU-Net's own network; both encoders pretrained on the unlabeled volumes): "
        "alone (or with --quick) a smoke test of minutes on a CPU that draws no verdict, with --study a study sized "
        "for one GPU (not timed yet)",
    )
    parser.add_argument(
        "-o",
        help="output folder (default: ./vismae_demo, shared by the default demo and --study; "
        "./vismae_demo_quick for --quick, ./vismae_demo_shift for --shift, ./vismae_demo_3d for --3d, "
        "./vismae_demo_3d_study for --3d --study)",
    )
    parser.add_argument("-device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    parser.add_argument("--dry-run", action="store_true", help="print the steps' commands and run nothing")
    args = parser.parse_args(argv)
    size = in_volumes(args.size) if args.volumes else args.size
    out = args.o or default_folder(size)
    if args.dry_run:
        for name, action in steps(size, Path(out).resolve(), args.device):
            print(f"{name}: " + (f"(in-process) {action.func.__name__}" if callable(action) else shlex.join(action)))
        return
    make_output_folder(out)
    if size.preset in SMOKE_SENTENCES:  # presets too short to learn the organs say so before they start
        print(SMOKE_SENTENCES[size.preset], flush=True)
    with sigterm_as_interrupt():  # stops the step it runs, as Ctrl-C does
        report_dir = run_demo(Path(out), size, args.device)
    report, styles = report_dir / "report.md", report_dir / "styles.md"
    for text in (report, styles):
        print(text.read_text() if text.exists() else "")
    print(f"Report: {report}\nPlot:   {report_dir / 'label_efficiency.png'}")


if __name__ == "__main__":
    sys.exit(main())
