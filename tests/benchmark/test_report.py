"""Prepared validation summaries with known per-case Dice -> results.csv, cases.csv, report.md, plot."""

import csv

import numpy as np
import pytest

from nnunetv2_vismae.benchmark import cli, executors
from nnunetv2_vismae.benchmark.arms import ARMS, trainer_name
from nnunetv2_vismae.benchmark.errors import BenchmarkError
from nnunetv2_vismae.benchmark.report import read_summary

from .conftest import fold_folder, write_summary

FOLDS = (0, 1)
# six validation cases per fold: (disc, square) Dice of vanilla nnU-Net at 100% labels
REFERENCE = {f"fold_{f}_case{i}": (0.80 + 0.01 * i, 0.70 + 0.02 * i) for f in FOLDS for i in range(6)}


def plant(
    results, arm: str, labels: int, shift: float = 0.0, noise: float = 0.0, square: float | None = None, seed: int = 0
):
    """Summaries of both folds: the reference's per-case Dice + shift (+ seeded noise per case)."""
    rng = np.random.default_rng(labels * 100 + seed + len(arm))
    for fold in FOLDS:
        cases = {
            case: (
                d + shift + rng.normal(0, noise),
                (square if square is not None else s) + shift + rng.normal(0, noise),
            )
            for case, (d, s) in REFERENCE.items()
            if case.startswith(f"fold_{fold}_")
        }
        write_summary(
            fold_folder(results, trainer_name(ARMS[arm], labels, 2, seed=seed), ARMS[arm].plans, fold), 0, 0, cases
        )


@pytest.fixture
def no_runs(monkeypatch):
    def refuse(cmd, env, log):
        raise AssertionError(f"nothing should run, got {cmd}")

    monkeypatch.setattr(executors, "run_logged", refuse)


def benchmark(fake_nnunet, labels, arms=("nnunet", "vismae", "scratch"), extra=()) -> str:
    """The benchmark over finished runs; runs a test did not plant score like the reference."""
    for arm in arms:
        for p in labels:
            if (
                not fold_folder(
                    fake_nnunet["dataset_results"], trainer_name(ARMS[arm], p, 2), ARMS[arm].plans, FOLDS[0]
                )
                .joinpath("validation")
                .is_dir()
            ):
                plant(fake_nnunet["dataset_results"], arm, p, noise=0.01)
    out = fake_nnunet["results"] / "bench"
    argv = [
        "-d",
        "990",
        "-f",
        *map(str, FOLDS),
        "--labels",
        *map(str, labels),
        "--arms",
        *arms,
        "--epochs",
        "2",
        "--pretrained",
        str(fake_nnunet["pretrained"]),
        "-device",
        "cpu",
        "-o",
        str(out),
        *extra,
    ]
    assert cli.main(argv) == 0
    return (out / "report.md").read_text()


def test_report_leads_with_non_inferiority_and_the_twin_gain(fake_nnunet, no_runs):
    results = fake_nnunet["dataset_results"]
    plant(results, "nnunet", 25, shift=-0.15, noise=0.01)
    plant(results, "nnunet", 100)
    plant(results, "vismae", 25, shift=-0.10, noise=0.01)  # clearly inferior
    plant(results, "vismae", 50, shift=-0.002, noise=0.004)  # within the margin
    plant(results, "scratch", 25, shift=-0.10, noise=0.01)
    plant(results, "scratch", 50, shift=-0.06, noise=0.01)
    plant(results, "nnunet", 50, shift=-0.08, noise=0.01)
    report = benchmark(fake_nnunet, [25, 50, 100]).splitlines()

    verdict = report[2:4]
    assert verdict[0].startswith(
        "- **VisMAE** is non-inferior to vanilla nnU-Net at 100% labels with as few as "
        "**50%** of the labels: paired difference -0.00"
    )
    assert verdict[0].endswith("over 12 cases, above −0.02 (non-inferior at 50%, 100% of 25%, 50%, 100%).")
    # at 25% both arms got the same shift but different noise: no measurable difference, not a win
    assert verdict[1].startswith("  At 25% it does not measurably differ from its scratch twin (the CI includes 0)")
    text = "\n".join(report)
    assert text.index("non-inferior to vanilla") < text.index("## Dice per arm")
    assert "| nnU-Net | 100% | 12 | 2 | 0.787 [" in text  # 12 cases pooled over 2 runs, with a CI
    assert "| vs scratch twin | VisMAE 50% − VisMAE from scratch 50% | 12 |" in text
    assert "| vs nnU-Net, same labels | VisMAE 25% − nnU-Net 25% | 12 | +0.05" in text
    assert "| vs nnU-Net@100% | nnU-Net 25% − nnU-Net 100% | 12 | -0.15" in text
    assert "12/12" in text  # VisMAE 25% improved every case over nnU-Net 25%

    out = fake_nnunet["results"] / "bench"
    runs = list(csv.DictReader((out / "results.csv").open()))
    header = ["arm", "labels", "seed", "fold", "cases", "dice_disc", "dice_square", "mean_dice", "training_cases"]
    assert list(runs[0]) == header
    assert len(runs) == 18 and {r["cases"] for r in runs} == {"6"}
    cases = list(csv.DictReader((out / "cases.csv").open()))
    assert list(cases[0]) == ["arm", "labels", "seed", "fold", "case", "dice_disc", "dice_square", "mean_dice"]
    assert len(cases) == 108
    row = next(r for r in cases if (r["arm"], r["labels"], r["case"]) == ("nnunet", "100", "fold_1_case2"))
    assert float(row["dice_disc"]) == pytest.approx(0.82) and float(row["mean_dice"]) == pytest.approx(0.78)
    png = (out / "label_efficiency.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_a_clearly_inferior_arm_is_never_called_non_inferior(fake_nnunet, no_runs):
    results = fake_nnunet["dataset_results"]
    plant(results, "nnunet", 25, shift=-0.15, noise=0.01)
    plant(results, "nnunet", 100)
    for p in (25, 100):
        plant(results, "vismae", p, shift=-0.04, noise=0.005)  # mean 0.04 below, CI well below -0.02
    plant(results, "scratch", 25, shift=-0.12, noise=0.01)
    report = benchmark(fake_nnunet, [25, 100], arms=("nnunet", "vismae", "scratch"), extra=["--margin", "0.02"])
    assert (
        "- **VisMAE** is non-inferior to vanilla nnU-Net at 100% labels at none of the fractions run (25%, 100%; "
        "margin 0.02 Dice)."
    ) in report
    assert "  At 25% it beats its scratch twin: +0.08" in report
    assert "with as few as" not in report
    wide = benchmark(fake_nnunet, [25, 100], extra=["--margin", "0.1"])
    assert "with as few as **25%** of the labels" in wide


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("square", "has not learned every class (Dice below 0.5: square 0."),
        ("no gain", "is not better than at 25% by a confidence interval that excludes 0"),
    ],
)
def test_the_warning_leads_and_no_claim_is_made_when_nnunet_at_100_is_untrained(
    fake_nnunet, no_runs, problem, expected
):
    results = fake_nnunet["dataset_results"]
    plant(results, "nnunet", 25, noise=0.01)
    plant(results, "nnunet", 100, square=0.3 if problem == "square" else None, noise=0.01)
    plant(results, "vismae", 25, shift=0.05)
    plant(results, "scratch", 25)
    report = benchmark(fake_nnunet, [25, 100]).splitlines()
    assert report[2].startswith("**No verdict: ") and expected in report[2]
    assert not any("is non-inferior to" in line or "it beats" in line for line in report)


def test_without_nnunet_at_100_there_is_no_verdict(fake_nnunet, no_runs):
    plant(fake_nnunet["dataset_results"], "vismae", 25)
    report = benchmark(fake_nnunet, [25], arms=("vismae",))
    assert report.splitlines()[2].startswith("**No verdict: there is no run of vanilla nnU-Net at 100% labels")


def test_subset_seeds_are_pooled_per_case_like_folds(fake_nnunet, no_runs, capsys):
    results = fake_nnunet["dataset_results"]
    plant(results, "nnunet", 100)
    plant(results, "nnunet", 25, shift=-0.10, seed=0)
    plant(results, "nnunet", 25, shift=-0.20, seed=3)
    report = benchmark(fake_nnunet, [25, 100], arms=("nnunet",), extra=["--subset-seeds", "0", "3"])
    row = next(line for line in report.splitlines() if line.startswith("| nnU-Net | 25% |")).split(" | ")
    assert row[2:4] == ["12", "4"]  # 12 cases from 4 runs, each case the mean of its two seeds' Dice
    assert float(row[4].split()[0]) == pytest.approx(0.7875 - 0.15, abs=1e-3)
    assert "label-subset seeds 0, 3" in report
    cases = list(csv.DictReader((fake_nnunet["results"] / "bench" / "cases.csv").open()))
    assert sorted({(r["labels"], r["seed"]) for r in cases}) == [("100", "0"), ("25", "0"), ("25", "3")]


def test_a_runs_label_subset_is_read_from_its_fold_folder(tmp_path):
    folder = fold_folder(tmp_path, "nnUNetTrainer_labels10", "nnUNetPlans", 0)
    summary = write_summary(folder, 0.5, 0.5)
    assert read_summary(summary, "nnunet", 100, "0").training_cases == ()  # no subset: the whole fold
    (folder / "label_subset.json").write_text('{"percent": 10, "seed": 0, "train": ["case_b", "case_a"]}')
    assert read_summary(summary, "nnunet", 10, "0").training_cases == ("case_a", "case_b")
    (folder / "label_subset.json").write_text('{"percent": 10')
    with pytest.raises(BenchmarkError, match=r"label_subset.json is not a readable label subset \(JSONDecodeError"):
        read_summary(summary, "nnunet", 10, "0")


@pytest.mark.parametrize("train", ['"case_a"', "[1, 2]", "null"])
def test_a_label_subset_that_is_no_list_of_case_names_is_one_sentence(tmp_path, train):
    folder = fold_folder(tmp_path, "nnUNetTrainer_labels10", "nnUNetPlans", 0)
    summary = write_summary(folder, 0.5, 0.5)
    (folder / "label_subset.json").write_text(f'{{"percent": 10, "seed": 0, "train": {train}}}')
    with pytest.raises(
        BenchmarkError,
        match=r"label_subset.json is not a readable label subset \(its train is not a list of case names",
    ):
        read_summary(summary, "nnunet", 10, "0")
