"""The benchmark end to end through nnU-Net's commands on the tiny dataset (about 2 minutes after
preprocessing: the VisMAE plans, then one vanilla and one scratch run of 1 epoch with 2 iterations)."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_benchmark_trains_reports_and_resumes(preprocessed_dataset, tmp_path):
    env = dict(preprocessed_dataset, nnUNet_n_proc_DA="0")
    out = tmp_path / "bench"
    # another test of the session may have written the VisMAE plans already; then none are written
    plans = Path(env["nnUNet_preprocessed"]) / "Dataset990_Synthetic" / "nnUNetVisMAEPlans.json"
    plans_written = not plans.exists()
    cmd = [sys.executable, "-m", "nnunetv2_vismae.benchmark.cli", "-d", "990", "--arms", "nnunet", "scratch",
           "--labels", "50", "-f", "0", "--epochs", "1", "--iters", "2", "-device", "cpu", "-o", str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["arm"], r["labels"], r["fold"]) for r in rows] == [("nnunet", "50", "0"), ("scratch", "50", "0")]
    assert all(0.0 <= float(r["mean_dice"]) <= 1.0 for r in rows)
    assert {"dice_disc", "dice_square"} <= set(rows[0])
    report = (out / "report.md").read_text()
    assert "| VisMAE from scratch | 50% | 1 |" in report and "cannot be computed" in report
    assert ("nnUNetv2_vismae_plan -d 990 -o nnUNetVisMAEPlans" in report) == plans_written and plans.is_file()
    assert (out / "label_efficiency.png").read_bytes().startswith(b"\x89PNG")
    assert len(list((out / "logs").iterdir())) == 2 + plans_written
    results = Path(env["nnUNet_results"]) / "Dataset990_Synthetic"
    subset = results / "VisMAETrainerScratch_labels50_1epochs_2iters__nnUNetVisMAEPlans__2d" / "fold_0"
    assert (subset / "label_subset.json").is_file() and (subset / "validation" / "summary.json").is_file()

    again = subprocess.run(cmd + ["--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == ""  # nothing left to run
