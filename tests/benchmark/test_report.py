"""Aggregation of prepared validation summaries into results.csv, report.md and the plot."""
import csv
import math

import pytest

from nnunetv2_vismae.benchmark import cli
from nnunetv2_vismae.benchmark import label_efficiency as le
from nnunetv2_vismae.benchmark.report import Stat, matching_fraction, matching_sentence, stat

from .conftest import fold_folder, write_summary

# mean Dice per (arm, labels) over folds 0, 1, 2; disc = mean + 0.05, square = mean - 0.05
MEANS = {("nnunet", 25): [0.60, 0.62, 0.64], ("nnunet", 50): [0.70, 0.72, 0.74], ("nnunet", 100): [0.80, 0.82, 0.84],
         ("vismae", 25): [0.70, 0.72, 0.74], ("vismae", 50): [0.81, 0.815, 0.82], ("vismae", 100): [0.83, 0.84, 0.85]}
TRAINERS = {"nnunet": ("nnUNetTrainer", "nnUNetPlans"), "vismae": ("VisMAETrainer", "nnUNetVisMAEPlans")}


def plant(results, means=MEANS, suffix="_2epochs"):
    for (arm, labels), values in means.items():
        base, plans = TRAINERS[arm]
        for fold, value in enumerate(values):
            write_summary(fold_folder(results, f"{base}_labels{labels}{suffix}", plans, fold),
                          value + 0.05, value - 0.05)


@pytest.fixture
def no_runs(monkeypatch):
    def refuse(cmd, env, log):
        raise AssertionError(f"nothing should run, got {cmd}")
    monkeypatch.setattr(le, "run_command", refuse)


def test_stat_is_mean_and_sample_sd():
    s = stat([0.8, 0.82, 0.84])
    assert s.mean == pytest.approx(0.82) and s.sd == pytest.approx(0.02) and s.n == 3
    assert stat([0.5]).sd is None and stat([0.5, math.nan]).n == 1
    assert Stat(0.5, None, 1).text() == "0.500 ± –"


def test_matching_fraction_uses_a_margin_of_one_hundredth():
    stats = {("nnunet", 100): {"mean": Stat(0.82, 0.02, 3)}, ("vismae", 10): {"mean": Stat(0.80, 0.0, 3)},
             ("vismae", 25): {"mean": Stat(0.8101, 0.0, 3)}, ("vismae", 50): {"mean": Stat(0.79, 0.0, 3)}}
    assert matching_fraction(stats, "vismae") == 25
    assert matching_fraction({k: v for k, v in stats.items() if k[0] == "vismae"}, "vismae") is None
    assert matching_sentence(stats, "scratch") == "VisMAE from scratch was not part of this benchmark."
    stats[("vismae", 25)] = {"mean": Stat(0.805, 0.0, 3)}
    assert matching_fraction(stats, "vismae") is None
    assert matching_sentence(stats, "vismae") == ("VisMAE does not match vanilla nnU-Net at 100% labels (mean Dice "
                                                  "0.820) at any label fraction tested; its best is 0.805 at 25%.")


def test_finished_summaries_become_csv_report_and_plot(fake_nnunet, no_runs, capsys):
    plant(fake_nnunet["dataset_results"])
    out = fake_nnunet["results"] / "bench"
    argv = ["-d", "990", "-f", "0", "1", "2", "--labels", "25", "50", "100", "--arms", "nnunet", "vismae",
            "--pretrained", str(fake_nnunet["pretrained"]), "--epochs", "2", "-device", "cpu", "-o", str(out)]
    assert cli.main(argv) == 0

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert list(rows[0]) == ["arm", "labels", "fold", "dice_disc", "dice_square", "mean_dice"]
    assert len(rows) == 18
    row = next(r for r in rows if (r["arm"], r["labels"], r["fold"]) == ("vismae", "50", "1"))
    assert float(row["mean_dice"]) == pytest.approx(0.815)
    assert float(row["dice_disc"]) == pytest.approx(0.865) and float(row["dice_square"]) == pytest.approx(0.765)

    report = (out / "report.md").read_text()
    assert "| nnU-Net | 100% | 3 | 0.820 ± 0.020 | 0.870 ± 0.020 | 0.770 ± 0.020 |" in report
    assert "| VisMAE | 50% | 3 | 0.815 ± 0.005 | 0.865 ± 0.005 | 0.765 ± 0.005 |" in report
    assert ("The smallest label fraction at which VisMAE matches vanilla nnU-Net at 100% labels is 50% "
            "(mean Dice 0.815 vs 0.820).") in report
    assert "at 100% labels minus 0.01" in report
    # the runs were found finished, so the report names the commands that make them
    assert "nnUNetv2_train 990 2d 1 -p nnUNetVisMAEPlans -tr VisMAETrainer_labels25_2epochs -device cpu" in report

    png = (out / "label_efficiency.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_without_a_full_label_nnunet_run_the_match_cannot_be_computed(fake_nnunet, no_runs):
    plant(fake_nnunet["dataset_results"], {k: v for k, v in MEANS.items() if k != ("nnunet", 100)}, suffix="")
    out = fake_nnunet["results"] / "bench"
    assert cli.main(["-d", "Dataset990_Synthetic", "-f", "0", "1", "2", "--labels", "25", "50", "--arms", "nnunet",
                     "vismae", "--pretrained", str(fake_nnunet["pretrained"]), "-device", "cpu", "-o", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "cannot be computed: there is no nnU-Net run at 100% labels" in report
    assert "| VisMAE | 25% | 3 | 0.720 ± 0.020 |" in report


def test_report_warns_when_the_reference_has_not_learned_or_gains_nothing_from_labels():
    from nnunetv2_vismae.benchmark.report import reference_caveat

    stats = {("nnunet", 10): {"mean": Stat(0.60, None, 1)}, ("nnunet", 100): {"mean": Stat(0.80, None, 1)}}
    assert reference_caveat(stats) is None
    stats[("nnunet", 100)] = {"mean": Stat(0.05, None, 1)}
    assert "reached only mean Dice 0.050" in reference_caveat(stats)
    stats[("nnunet", 100)] = {"mean": Stat(0.605, None, 1)}
    assert "as well with 10% of the labels (0.600) as with 100% (0.605)" in reference_caveat(stats)
