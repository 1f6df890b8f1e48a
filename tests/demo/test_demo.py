"""The demo pipeline: what each step runs, resuming, and ``nnUNetv2_vismae_demo --quick`` end to end."""

import csv
import os
import shlex
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from nnunetv2_vismae.benchmark.arms import ARMS
from nnunetv2_vismae.demo import pipeline
from nnunetv2_vismae.demo.cli import main
from nnunetv2_vismae.errors import StepFailed, UserError
from nnunetv2_vismae.phantoms.generator import UNLABELED_FOLDER
from tests.conftest import run


@pytest.mark.parametrize("size", [pipeline.QUICK, pipeline.DEFAULT, pipeline.STUDY])
def test_pretraining_reads_only_the_unlabeled_pool_and_the_benchmark_compares_the_arms(size, tmp_path):
    commands = {name: action for name, action in pipeline.steps(size, tmp_path, "cpu") if not callable(action)}
    assert ("pretrain_cnn" in commands) == ("cnn-mae" in size.arms)
    for pretrain in commands["pretrain"], commands.get("pretrain_cnn", commands["pretrain"]):
        inputs = pretrain[pretrain.index("-i") + 1 : pretrain.index("--patch-size")]
        assert inputs == [str(tmp_path / "nnUNet_raw" / pipeline.DATASET / UNLABELED_FOLDER)]
        assert "-d" not in pretrain  # the preprocessed (labeled, scored) cases are never pretrained on
    bench = commands[size.name]
    assert bench[bench.index("--arms") + 1 : bench.index("--pretrained")] == list(size.arms)
    assert {"nnunet", "vismae", "scratch"} <= set(size.arms)  # nnunet runs at 100% too, always
    assert ("--test" in bench) == size.test and bench[bench.index("-o") + 1] == str(tmp_path / size.name)


def test_the_study_runs_every_arm_with_its_twin_at_three_fractions_on_held_out_cases(capsys):
    assert main(["--study", "--dry-run", "-o", "study_out"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = ["generate", "preprocess", "pretrain", "pretrain_cnn", "study", "styles"]
    assert [line.split(":")[0] for line in lines] == names
    study = shlex.split(lines[-2].split(": ", 1)[1])
    arms = study[study.index("--arms") + 1 : study.index("--pretrained")]
    assert {a.twin for a in map(ARMS.get, arms) if a.twin} <= set(arms) and {"cnn-mae", "vismae"} <= set(arms)
    assert len([p for p in study[study.index("--labels") + 1 : study.index("--arms")] if int(p) < 100]) >= 3
    pretrained = study[study.index("--pretrained") + 1 : study.index("--pretrained") + 3]
    assert [Path(p).parent.name for p in pretrained] == ["pretrain", "pretrain_cnn"]
    assert "--test" in study and pipeline.STUDY.num_test >= 200


def test_the_study_shares_the_default_demos_data_and_encoders_at_the_converged_budget():
    """So that ``--study`` in a default demo's folder reuses its phantoms and pretraining, and both score the
    same test cases; the study trains 2,400 iterations, where vanilla nnU-Net has learned the test set
    (docs/results/budget.md)."""
    default, study = pipeline.DEFAULT, pipeline.STUDY
    trainings = {"name", "test", "labels", "arms", "epochs", "parallel", "preset"}
    assert replace(study, **{k: getattr(default, k) for k in trainings}) == default
    assert study.epochs * study.iters == 2400 and study.parallel == 2
    bench = dict(pipeline.steps(study, Path("out"), "cpu"))[study.name]
    assert bench[bench.index("--executor") :][:4] == ["--executor", "local", "--max-parallel", "2"]
    assert "--executor" not in dict(pipeline.steps(default, Path("out"), "cpu"))[default.name]


def test_the_shift_preset_labels_two_styles_and_scores_every_arm_on_all_four(tmp_path):
    shift = pipeline.SHIFT
    plan = dict(pipeline.steps(shift, tmp_path, "cpu"))
    assert plan["generate"].keywords["labeled_styles"] == ("ct", "mr_t1") == shift.labeled_styles
    bench = plan["shift"]
    assert bench[bench.index("--arms") + 1 : bench.index("--pretrained")] == list(pipeline.ARMS)
    assert "--test" in bench and shift.epochs * shift.iters == 2400 and shift.num_test == 200
    raw = tmp_path / "nnUNet_raw" / pipeline.DATASET
    assert plan["styles"].args[:2] == (tmp_path / "shift", raw / "phantoms.json")


def test_a_folder_of_other_phantoms_is_refused_before_any_step(tmp_path, monkeypatch):
    """The study reuses a default demo's folder; the shift preset's phantoms differ: neither reuses the other's."""
    ran = []
    monkeypatch.setattr(pipeline, "run_command", lambda name, cmd, env, logs: ran.append(name))
    pipeline.generate_dataset(
        tmp_path / "nnUNet_raw",
        pipeline.DATASET_ID,
        num_train=2,
        num_test=0,
        num_unlabeled=0,
        size=32,
        labeled_styles=("ct", "mr_t1"),
    )
    with pytest.raises(UserError, match=r"labeled in the styles ct, mr_t1, not ct, mr_t1, mr_t2, us; .*\(-o\)"):
        pipeline.run_demo(tmp_path, pipeline.QUICK)
    assert ran == [] and not (tmp_path / "steps_done.txt").exists()
    pipeline.check_same_phantoms(tmp_path, pipeline.SHIFT)  # its own folder: fine
    (tmp_path / "nnUNet_raw" / pipeline.DATASET / "phantoms.json").write_text("[1, 2")
    with pytest.raises(UserError, match="not the demo's phantom description"):
        pipeline.check_same_phantoms(tmp_path, pipeline.SHIFT)


@pytest.fixture
def steps_run(monkeypatch) -> list:
    """The demo's steps, recorded instead of run."""
    ran = []
    monkeypatch.setattr(pipeline, "generate_dataset", lambda *a, **k: ran.append("generate"))
    monkeypatch.setattr(pipeline, "run_command", lambda name, cmd, env, logs: ran.append(name))
    monkeypatch.setattr(pipeline, "report_styles", lambda *a: ran.append("styles"))
    return ran


def test_the_default_demo_after_the_quick_one_runs_in_its_own_default_folder(steps_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--quick"]) == 0 and main([]) == 0
    assert steps_run == ["generate", "preprocess", "pretrain", "benchmark"] * 2
    assert (tmp_path / "vismae_demo_quick" / "steps_done.txt").is_file()
    assert (tmp_path / "vismae_demo" / "steps_done.txt").is_file()


@pytest.mark.parametrize("found, wanted", [("quick", "default"), ("quick", "study"), ("study", "shift")])
def test_a_folder_holding_another_presets_data_is_refused_naming_it(steps_run, tmp_path, found, wanted):
    presets = {"quick": pipeline.QUICK, "default": pipeline.DEFAULT, "study": pipeline.STUDY, "shift": pipeline.SHIFT}
    pipeline.run_demo(tmp_path, presets[found])
    done = (tmp_path / "steps_done.txt").read_text()
    steps_run.clear()
    with pytest.raises(UserError) as error:
        pipeline.run_demo(tmp_path, presets[wanted])
    assert str(error.value) == (
        f"Folder {tmp_path} holds the {found} demo, whose phantoms or encoder differ from the {wanted} demo's; "
        "run it in another folder (-o)."
    )
    assert steps_run == [] and (tmp_path / "steps_done.txt").read_text() == done


def test_a_damaged_preset_record_is_one_sentence(steps_run, tmp_path):
    (tmp_path / pipeline.PRESET_FILE).write_text("quick\nstudy\n")
    with pytest.raises(UserError, match=r"preset.txt names no demo preset \(quick, default, study, shift\); "):
        pipeline.run_demo(tmp_path, pipeline.DEFAULT)
    assert steps_run == []


def test_the_study_continues_in_a_default_demos_folder(steps_run, tmp_path):
    pipeline.run_demo(tmp_path, pipeline.DEFAULT)
    steps_run.clear()
    pipeline.run_demo(tmp_path, pipeline.STUDY)
    assert steps_run == ["pretrain_cnn", "study", "styles"]
    pipeline.run_demo(tmp_path, pipeline.DEFAULT)  # and back: the folder is the default demo's still


def test_rerun_skips_finished_steps_and_a_failed_step_names_its_log(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(pipeline, "generate_dataset", lambda *a, **k: ran.append("generate"))
    monkeypatch.setattr(pipeline, "run_command", lambda name, cmd, env, logs: ran.append(name))
    pipeline.run_demo(tmp_path, pipeline.QUICK)
    assert ran == ["generate", "preprocess", "pretrain", "benchmark"]
    ran.clear()
    pipeline.run_demo(tmp_path, pipeline.QUICK)
    assert ran == []

    (tmp_path / "steps_done.txt").write_text("generate\npreprocess\n")
    monkeypatch.undo()  # the real run_command now, on a command that exits with 3
    monkeypatch.setattr(pipeline, "run_logged", lambda *a, **k: 3)
    with pytest.raises(StepFailed, match=r"step 'pretrain' failed \(exit 3\); see .*pretrain.log"):
        pipeline.run_demo(tmp_path, pipeline.QUICK)
    assert (tmp_path / "steps_done.txt").read_text().split() == ["generate", "preprocess"]


def test_sigterm_stops_the_demo_and_its_step_as_ctrl_c_does(tmp_path, monkeypatch, capsys):
    """SIGTERM becomes KeyboardInterrupt while the steps run, so run_logged stops the step's process group
    instead of the demo dying and leaving its benchmark and trainings running."""

    def terminated_while_running(out, size, device):
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler), "SIGTERM would end the demo at once and orphan the step it runs"
        handler(signal.SIGTERM, None)

    monkeypatch.setattr("nnunetv2_vismae.demo.cli.run_demo", terminated_while_running)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["-o", str(tmp_path / "demo")]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_planning_runs_without_the_users_in_process_switch(tmp_path, monkeypatch):
    """nnU-Net's planner takes nnUNet_n_proc_DA as its torch thread count: 0 (in-process augmentation,
    as the demo's training steps use) would stop it."""
    envs = {}
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setattr(pipeline, "generate_dataset", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "run_command", lambda name, cmd, env, logs: envs.update({name: env}))
    pipeline.run_demo(tmp_path, pipeline.QUICK)
    assert "nnUNet_n_proc_DA" not in envs["preprocess"]
    assert envs["pretrain"]["nnUNet_n_proc_DA"] == envs["benchmark"]["nnUNet_n_proc_DA"] == "0"


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, monkeypatch, capsys):
    """The quick demo's steps, arms and report, shortened where nothing is learned anyway (fewer unlabeled
    phantoms, pretraining steps and iterations), in this process; then its console script, which resumes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    for name in set(os.environ) - set(env):
        monkeypatch.delenv(name)
    quick = replace(pipeline.QUICK, num_unlabeled=16, pretrain_steps=2, pretrain_batch=2, iters=2)
    monkeypatch.setattr("nnunetv2_vismae.demo.cli.QUICK", quick)
    assert main(["--quick", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    bench = tmp_path / "benchmark"
    rows = list(csv.DictReader((bench / "results.csv").open()))
    expected = {(arm, str(p)) for arm in quick.arms for p in quick.labels} | {("nnunet", "100")}
    assert {(r["arm"], r["labels"]) for r in rows} == expected
    assert all(0.0 <= float(r["mean_dice"]) <= 1.0 for r in rows)
    assert {"dice_liver", "dice_kidney", "dice_spleen"} <= set(rows[0])
    assert "## Dice per arm and label fraction" in printed and f"Report: {bench / 'report.md'}" in printed
    assert printed.startswith("This quick demo is a smoke test")
    report = (bench / "report.md").read_text().splitlines()  # untrained runs: the report says so first
    assert report[2].startswith("**No verdict: vanilla nnU-Net at 100% labels has not learned every class")
    assert (bench / "cases.csv").read_text().count("\n") == 1 + sum(int(r["cases"]) for r in rows) > 1 + len(rows)
    assert (bench / "label_efficiency.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "pretrain" / "encoder.safetensors").is_file()
    logs = (tmp_path / "nnUNet_results").glob("*/VisMAETrainer_labels*/fold_0/training_log_*.txt")
    assert all("encoder tensors (100.0%)" in log.read_text() for log in logs)

    again = run(["nnUNetv2_vismae_demo", "--quick", "-o", str(tmp_path)], env, timeout=300)
    assert "Demo finished in 0.0 min." in again.stdout
