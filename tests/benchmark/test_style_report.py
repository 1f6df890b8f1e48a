"""The demo's Dice by appearance style: test cases grouped by the style phantoms.json gives them."""

import json
import shlex
import sys

import pytest

from nnunetv2_vismae.benchmark.style_report import main, write_style_report
from nnunetv2_vismae.demo.pipeline import report_styles

STYLE_OF = {"phantom_ts_000": "ct", "phantom_ts_001": "ct", "phantom_ts_002": "us", "phantom_ts_003": "us"}
DICE = {  # (arm, labels) -> Dice of the four cases
    ("nnunet", 100): (0.9, 0.8, 0.3, 0.5),
    ("vismae", 10): (0.7, 0.6, 0.6, 0.4),
    ("scratch", 10): (0.7, 0.7, 0.2, 0.2),
}


@pytest.fixture
def report_dir(tmp_path):
    rows = ["arm,labels,seed,fold,case,dice_liver,mean_dice"]
    for (arm, labels), values in DICE.items():
        rows += [f"{arm},{labels},0,0,{case},{d},{d}" for case, d in zip(STYLE_OF, values)]
    rows.append("vismae,10,0,0,phantom_tr_000,0.1,0.1")  # a validation case: not a test phantom, left out
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    trained_on = {
        ("nnunet", 100): "",
        ("vismae", 10): "phantom_tr_000 phantom_tr_001",
        ("scratch", 10): "phantom_tr_000",
    }
    runs = [f"{arm},{labels},0,0,4,0.5,0.5,{cases}" for (arm, labels), cases in trained_on.items()]
    (tmp_path / "results.csv").write_text(
        "\n".join(["arm,labels,seed,fold,cases,dice_liver,mean_dice,training_cases", *runs])
    )
    cases = {case: {"split": "ts", "style": style} for case, style in STYLE_OF.items()}
    cases["phantom_tr_000"] = {"split": "tr", "style": "ct"}
    cases["phantom_tr_001"] = {"split": "tr", "style": "ct"}
    meta = {"styles": ["ct", "mr_t1", "mr_t2", "us"], "labeled_styles": ["ct"], "cases": cases}
    (tmp_path / "phantoms.json").write_text(json.dumps(meta))
    return tmp_path


def test_each_run_is_split_into_labeled_and_other_styles(report_dir):
    text = write_style_report(report_dir, report_dir / "phantoms.json").read_text()
    assert "labeled cases in ct only" in text
    assert "| run | trained on | ct (labeled) | us | labeled styles | other styles |" in text
    assert "| VisMAE 10% | ct 2 | 0.650 | 0.500 | 0.650 [" in text  # the validation case's 0.1 is not averaged in
    assert "| VisMAE from scratch 10% | ct 1 |" in text and "| nnU-Net 100% | whole fold | 0.850 | 0.400 |" in text


def test_a_results_csv_without_training_cases_leaves_them_unknown(report_dir):
    (report_dir / "results.csv").write_text("arm,labels,seed,fold,cases,mean_dice\nvismae,10,0,0,4,0.5\n")
    text = write_style_report(report_dir, report_dir / "phantoms.json").read_text()
    assert "| VisMAE 10% | ? | 0.650 |" in text and "| nnU-Net 100% | ? | 0.850 |" in text


def test_comparisons_are_paired_on_the_styles_no_labeled_case_has(report_dir):
    text = write_style_report(report_dir, report_dir / "phantoms.json").read_text()
    assert "- VisMAE 10% − VisMAE from scratch 10%: +0.300 [" in text and ", 2 of 2" in text
    assert "- VisMAE 10% − nnU-Net 100%: +0.100 [" in text
    assert "nnU-Net 100% − nnU-Net 100%" not in text


def test_with_every_style_labeled_there_is_no_other_style_to_compare(report_dir):
    meta = json.loads((report_dir / "phantoms.json").read_text())
    meta["labeled_styles"] = meta["styles"]
    (report_dir / "phantoms.json").write_text(json.dumps(meta))
    text = write_style_report(report_dir, report_dir / "phantoms.json").read_text()
    assert (
        "labeled cases in every style" in text
        and "| run | trained on | ct | us | all |" in text
        and "Paired" not in text
    )


def test_the_demos_step_writes_it_and_a_missing_file_is_one_sentence(report_dir, capsys):
    assert main([str(report_dir), str(report_dir / "phantoms.json")]) == 0
    assert (report_dir / "styles.md").is_file()
    assert main([str(report_dir), str(report_dir / "missing.json")]) != 0


def test_the_demo_runs_it_in_its_process_with_the_log_its_command_wrote(report_dir, tmp_path_factory, capsys):
    phantoms = report_dir / "phantoms.json"
    assert main([str(report_dir), str(phantoms)]) == 0
    printed, by_command = capsys.readouterr().out, (report_dir / "styles.md").read_bytes()
    log = tmp_path_factory.mktemp("logs") / "styles.log"
    report_styles(report_dir, phantoms, log)
    command = [sys.executable, "-m", "nnunetv2_vismae.benchmark.style_report", str(report_dir), str(phantoms)]
    assert log.read_text() == f"$ {shlex.join(command)}\n{printed}"
    assert (report_dir / "styles.md").read_bytes() == by_command
