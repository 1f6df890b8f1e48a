"""The label-efficiency benchmark: both arms at two fractions, same images per seed, resumable."""

from __future__ import annotations

import csv
import json

from nnunetv2_vismae.classification.cli import main
from nnunetv2_vismae.phantoms.classification_task import write_style_task


def test_benchmark_runs_both_arms_and_reports(tiny_checkpoint, tmp_path, capsys):
    task = write_style_task(tmp_path / "task", num_train=16, num_test=8, size=32)
    out = tmp_path / "bench"
    argv = [
        "benchmark",
        "-i",
        str(task["train"]),
        "--val",
        str(task["test"]),
        "-o",
        str(out),
        "--pretrained",
        tiny_checkpoint,
        "--labels",
        "50",
        "100",
        "--epochs",
        "1",
        "--size",
        "32",
        "--batch-size",
        "8",
    ]
    assert main(argv) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["arm"], r["labels"]) for r in rows] == [
        ("pretrained", "50"),
        ("pretrained", "100"),
        ("scratch", "50"),
        ("scratch", "100"),
    ]
    splits = {
        name: json.loads((out / "runs" / name / "split.json").read_text())
        for name in ("pretrained_labels50_seed0", "scratch_labels50_seed0", "pretrained_labels100_seed0")
    }
    assert splits["pretrained_labels50_seed0"] == splits["scratch_labels50_seed0"]
    assert (
        len(splits["pretrained_labels50_seed0"]["train"]) == 8
        and len(splits["pretrained_labels100_seed0"]["train"]) == 16
    )
    scratch = json.loads((out / "runs" / "scratch_labels50_seed0" / "model" / "model.json").read_text())
    assert (
        scratch["pretrained"] is None and scratch["encoder_config"]["embed_dim"] == 12
    )  # the checkpoint's architecture
    report = (out / "report.md").read_text()
    assert "| from scratch | 100% | 1 |" in report and (out / "label_efficiency.png").stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/state.pt")}
    assert main(argv) == 0  # finished runs are re-reported, not retrained
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/state.pt")} == stamps
