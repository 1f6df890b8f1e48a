"""``nnUNetv2_vismae_demo [--quick] [-o DIR] [-device cpu|cuda]``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunetv2_vismae.demo.pipeline import DEFAULT, QUICK, DemoError, run_demo
from nnunetv2_vismae.io.folders import unwritable_reason


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Run the whole pipeline on the embedded phantom dataset: generate it, plan and "
                    "preprocess with nnU-Net, pretrain encoders on the unlabeled pool, and "
                    "benchmark vanilla nnU-Net and each pretrained arm with its from-scratch twin at "
                    "several label fractions. Rerunning resumes.")
    parser.add_argument("--quick", action="store_true", help="a smaller, shorter run (minutes on a CPU)")
    parser.add_argument("-o", default="vismae_demo", help="output folder (default: ./vismae_demo)")
    parser.add_argument("-device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    args = parser.parse_args(argv)
    problem = unwritable_reason(args.o)
    if problem:
        print(f"nnUNetv2_vismae_demo: output folder {args.o} cannot be written: {problem}.", file=sys.stderr)
        sys.exit(1)
    if args.quick:
        print("This quick demo is a smoke test of the whole pipeline: its runs are far too short to learn the "
              "organs, so its report draws no verdict.", flush=True)
    try:
        report_dir = run_demo(Path(args.o), QUICK if args.quick else DEFAULT, args.device)
    except DemoError as e:
        print(f"nnUNetv2_vismae_demo: {e}", file=sys.stderr)
        sys.exit(1)
    report = report_dir / "report.md"
    print(report.read_text() if report.exists() else "")
    print(f"Report: {report}\nPlot:   {report_dir / 'label_efficiency.png'}")


if __name__ == "__main__":
    main()
