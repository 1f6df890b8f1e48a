"""Which commands the benchmark runs: finished runs skipped, interrupted ones resumed, planning first."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from nnunetv2_vismae.benchmark import cli, executors
from nnunetv2_vismae.benchmark import label_efficiency as le
from nnunetv2_vismae.io.nnunet import ext_trainer_folder

from .conftest import fold_folder, write_summary

TRAINER = "nnUNetTrainer_labels100_1epochs_5iters"


@pytest.fixture
def recorder(monkeypatch, fake_nnunet):
    """Stands in for the subprocess runner; 'trains' by writing the summary nnU-Net would write."""
    calls = []

    def fake_run(cmd, env, log):
        calls.append({"cmd": list(cmd), "env": env, "log": log})
        log.write_text("fake\n")
        if cmd[0] == "nnUNetv2_train":
            trainer, plans = cmd[cmd.index("-tr") + 1], cmd[cmd.index("-p") + 1]
            write_summary(fold_folder(fake_nnunet["dataset_results"], trainer, plans, cmd[3]), 0.9, 0.8)
        return 0

    monkeypatch.setattr(executors, "run_logged", fake_run)
    return calls


def plant_states(results):
    write_summary(fold_folder(results, TRAINER, "nnUNetPlans", 0), 0.9, 0.8)
    (fold_folder(results, TRAINER, "nnUNetPlans", 1) / "checkpoint_final.pth").write_bytes(b"")
    (fold_folder(results, TRAINER, "nnUNetPlans", 2) / "checkpoint_latest.pth").write_bytes(b"")


ARGV = [
    "-d",
    "990",
    "--arms",
    "nnunet",
    "--labels",
    "100",
    "-f",
    "0",
    "1",
    "2",
    "3",
    "--epochs",
    "1",
    "--iters",
    "5",
    "-device",
    "cpu",
]


def test_finished_runs_are_skipped_and_interrupted_ones_resumed(fake_nnunet, recorder):
    plant_states(fake_nnunet["dataset_results"])
    assert cli.main(ARGV) == 0
    base = ["nnUNetv2_train", "990", "2d"]
    rest = ["-p", "nnUNetPlans", "-tr", TRAINER, "-device", "cpu"]
    assert [c["cmd"] for c in recorder] == [
        base + ["1"] + rest + ["--val"],
        base + ["2"] + rest + ["--c"],
        base + ["3"] + rest,
    ]
    out = fake_nnunet["dataset_results"] / "vismae_benchmark"
    assert recorder[0]["log"] == out / "logs" / f"{TRAINER}__nnUNetPlans__2d__fold_1.log"
    assert ext_trainer_folder() in recorder[0]["env"]["nnUNet_extTrainer"].split(":")
    assert (out / "results.csv").read_text().count("\nnnunet,100,") == 4
    report = (out / "report.md").read_text()
    assert "nnUNetv2_train 990 2d 2 -p nnUNetPlans -tr nnUNetTrainer_labels100_1epochs_5iters -device cpu --c" in report
    assert "nnUNetv2_vismae_benchmark -d 990 --arms nnunet" in report
    assert report.splitlines()[2].startswith("No pretrained arm ran, so there is no verdict about pretraining")

    recorder.clear()
    assert cli.main(ARGV) == 0
    assert recorder == []  # everything is finished now


def test_dry_run_prints_the_pending_commands_and_runs_nothing(fake_nnunet, recorder, capsys):
    plant_states(fake_nnunet["dataset_results"])
    assert cli.main(ARGV + ["--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].endswith("--val") and lines[1].endswith("--c")
    assert " 2d 0 " not in "\n".join(lines)
    assert recorder == [] and not (fake_nnunet["dataset_results"] / "vismae_benchmark").exists()


def test_planning_runs_first_with_the_checkpoint(fake_nnunet, capsys):
    pretrained = fake_nnunet["pretrained"]
    assert (
        cli.main(
            [
                "-d",
                "990",
                "--arms",
                "vismae",
                "scratch",
                "--labels",
                "10",
                "-f",
                "0",
                "-device",
                "cpu",
                "--pretrained",
                str(pretrained),
                "--dry-run",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"nnUNetv2_vismae_plan -d 990 -o nnUNetVisMAEPlans --pretrained {pretrained.resolve()}"
    assert lines[1:] == [
        f"nnUNetv2_train 990 2d 0 -p nnUNetVisMAEPlans -tr {t}_labels10 -device cpu"
        for t in ("VisMAETrainer", "VisMAETrainerScratch")
    ]


def test_scratch_only_plans_without_checkpoint_unless_the_plans_exist(fake_nnunet, capsys):
    argv = ["-d", "990", "--arms", "scratch", "--labels", "10", "-f", "0", "-device", "cpu", "--dry-run"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0] == "nnUNetv2_vismae_plan -d 990 -o nnUNetVisMAEPlans"
    (fake_nnunet["preprocessed"] / "Dataset990_Synthetic" / "nnUNetVisMAEPlans.json").write_text("{}")
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("nnUNetv2_train")


def test_a_failed_run_names_itself_and_its_log(fake_nnunet, monkeypatch, capsys):
    monkeypatch.setattr(executors, "run_logged", lambda cmd, env, log: 3)
    assert cli.main(ARGV) == 1
    err = capsys.readouterr().err
    log = fake_nnunet["dataset_results"] / "vismae_benchmark" / "logs" / f"{TRAINER}__nnUNetPlans__2d__fold_0.log"
    assert "Run nnunet 100% fold 0 failed (exit 3)" in err and str(log) in err


@pytest.mark.parametrize(
    "change, argv, message",
    [
        ("no_env", ["-d", "990", "--arms", "nnunet"], "nnUNet_preprocessed is not set"),
        (None, ["-d", "123", "--arms", "nnunet"], "no dataset folder for dataset 123"),
        (None, ["-d", "990", "--arms", "nnunet", "--labels", "0", "50"], "between 1 and 100, got 0"),
        (None, ["-d", "990", "--arms", "nnunet", "--labels", "101"], "between 1 and 100, got 101"),
        (None, ["-d", "990", "--arms", "nnunet", "vismae"], "pass --pretrained FILE"),
        (
            None,
            ["-d", "990", "--arms", "vismae", "--pretrained", "/nonexistent/encoder.safetensors"],
            "/nonexistent/encoder.safetensors does not exist",
        ),
        (None, ["-d", "990", "--arms", "nnunet", "--epochs", "0"], "--epochs must be at least 1"),
        ("no_plans", ["-d", "990", "--arms", "nnunet", "-f", "0", "--labels", "10"], "nnUNetPlans.json does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_sentence(fake_nnunet, monkeypatch, capsys, change, argv, message):
    if change == "no_env":
        monkeypatch.delenv("nnUNet_preprocessed")
    if change == "no_plans":
        (fake_nnunet["preprocessed"] / "Dataset990_Synthetic" / "nnUNetPlans.json").unlink()
    assert cli.main(argv + ["-device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_with_test_every_run_predicts_and_scores_the_raw_test_set(fake_nnunet, monkeypatch, recorder):
    raw = fake_nnunet["raw"] / "Dataset990_Synthetic"
    monkeypatch.setenv("nnUNet_raw", str(fake_nnunet["raw"]))
    argv = ARGV[: ARGV.index("-f") + 1] + ["0", "1"] + ARGV[ARGV.index("--epochs") :] + ["--test"]
    assert cli.main(argv) == 2  # no test set yet: one sentence before anything runs
    assert recorder == []
    for folder in ("imagesTs", "labelsTs"):
        (raw / folder).mkdir(parents=True)
        (raw / folder / "case.nii.gz").write_bytes(b"")
    write_summary(fold_folder(fake_nnunet["dataset_results"], TRAINER, "nnUNetPlans", 0), 0.9, 0.8)  # trained

    def fake_evaluate(cmd, env, log):
        if cmd[0] == "nnUNetv2_evaluate_folder":  # both folds' models score the same two test cases
            fold = 0.1 * len([c for c in recorder if c["cmd"][0] == cmd[0]])
            scores = {"t1": (0.5 + fold, 0.5), "t2": (0.7, 0.7)}
            write_summary(Path(cmd[cmd.index("-o") + 1]).parent.parent, 0, 0, scores, scored="test")
        return recorded(cmd, env, log)

    recorded = executors.run_logged
    monkeypatch.setattr(executors, "run_logged", fake_evaluate)
    assert cli.main(argv) == 0
    commands = [c["cmd"][:2] + [c["cmd"][c["cmd"].index("-f") + 1] if "-f" in c["cmd"] else ""] for c in recorder]
    assert commands == [
        ["nnUNetv2_predict", "-i", "0"],
        ["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), ""],
        ["nnUNetv2_train", "990", ""],
        ["nnUNetv2_predict", "-i", "1"],
        ["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), ""],
    ]
    predict = recorder[0]["cmd"]
    assert predict[predict.index("-i") + 1] == str(raw / "imagesTs")
    assert predict[predict.index("-chk") + 1] == "checkpoint_final.pth"
    report = (fake_nnunet["dataset_results"] / "vismae_benchmark" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| nnU-Net | 100% |")).split(" | ")
    assert row[2:4] == ["2", "2"] and row[5].startswith("0.625 [")  # 2 test cases, disc averaged over the folds
    assert "- Scored on: the test set (imagesTs / labelsTs of" in report
    recorder.clear()
    assert cli.main(argv) == 0 and recorder == []  # trained and scored: nothing runs again


def test_vanilla_nnunet_always_runs_at_100_percent_the_verdicts_reference(fake_nnunet, capsys):
    assert (
        cli.main(
            ["-d", "990", "--arms", "nnunet", "scratch", "--labels", "10", "-f", "0", "-device", "cpu", "--dry-run"]
        )
        == 0
    )
    trainers = [line.split(" -tr ")[1].split()[0] for line in capsys.readouterr().out.splitlines() if " -tr " in line]
    assert trainers == ["nnUNetTrainer_labels10", "nnUNetTrainer_labels100", "VisMAETrainerScratch_labels10"]


def test_fold_00_is_fold_0_and_a_non_ascii_fold_is_one_sentence(fake_nnunet, recorder, capsys):
    write_summary(fold_folder(fake_nnunet["dataset_results"], TRAINER, "nnUNetPlans", 0), 0.9, 0.8)
    argv = ARGV[: ARGV.index("-f")] + ARGV[ARGV.index("--epochs") :]
    assert cli.main(argv + ["-f", "00", "0"]) == 0
    assert recorder == []  # nnU-Net's fold_0 is finished: nothing retrains it
    assert "fold_00" not in (fake_nnunet["dataset_results"] / "vismae_benchmark" / "results.csv").read_text()
    capsys.readouterr()
    assert cli.main(argv + ["-f", "²"]) == 2
    err = capsys.readouterr().err
    assert "Fold '²' is neither a non-negative integer nor 'all'." in err and len(err.strip().splitlines()) == 1


def test_a_truncated_summary_is_validated_again_not_taken_as_finished(fake_nnunet, recorder):
    folder = fold_folder(fake_nnunet["dataset_results"], TRAINER, "nnUNetPlans", 0)
    summary = write_summary(folder, 0.9, 0.8)
    summary.write_text(summary.read_text()[:40])  # the disk filled up while nnU-Net wrote it
    (folder / "checkpoint_final.pth").write_bytes(b"")
    argv = ARGV[: ARGV.index("-f") + 1] + ["0"] + ARGV[ARGV.index("--epochs") :]
    assert cli.main(argv) == 0
    assert [c["cmd"][-1] for c in recorder] == ["--val"]
    assert (fake_nnunet["dataset_results"] / "vismae_benchmark" / "results.csv").read_text().count("\nnnunet,") == 1


def planned_from(checkpoint: Path) -> dict:
    """The 2d configuration of plans that nnUNetv2_vismae_plan planned from ``checkpoint``."""
    from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
    from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY, checkpoint_reference

    reference = checkpoint_reference(checkpoint, read_encoder_checkpoint(checkpoint))
    return {"configurations": {"2d": {"decoder": "swin", PRETRAINED_KEY: reference}}}


@pytest.fixture
def encoder_b(fake_nnunet, tmp_path) -> Path:
    """A second swin encoder, with other weights than fake_nnunet's (another content hash)."""
    import torch

    from nnunetv2_vismae.architectures import SwinEncoder
    from nnunetv2_vismae.checkpoint import save_encoder_checkpoint
    from tests.conftest import TINY_ENCODER

    torch.manual_seed(1)
    encoder = SwinEncoder(**TINY_ENCODER)
    path = tmp_path / "encoder_b.safetensors"
    metadata = {"family": "swin", "encoder_config": encoder.config.to_json(), "normalization": {"scheme": "zscore"}}
    save_encoder_checkpoint(path, encoder.state_dict(), metadata)
    return path


VISMAE_ARGV = ["-d", "990", "--arms", "vismae", "--labels", "10", "-f", "0", "-device", "cpu"]


def test_the_users_plans_of_another_encoder_are_never_overwritten(fake_nnunet, encoder_b, capsys):
    plans = fake_nnunet["preprocessed"] / "Dataset990_Synthetic" / "nnUNetVisMAEPlans.json"
    plans.write_text(json.dumps(planned_from(fake_nnunet["pretrained"])))  # the user's, with --decoder swin
    before = plans.read_bytes()
    for extra in (["--dry-run"], []):
        assert cli.main(VISMAE_ARGV + ["--pretrained", str(encoder_b), *extra]) == 2
        err = capsys.readouterr().err
        assert f"{plans} was planned from {fake_nnunet['pretrained'].resolve()}" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert plans.read_bytes() == before
    # planned from the given encoder: used as they are, not planned again
    assert cli.main(VISMAE_ARGV + ["--pretrained", str(fake_nnunet["pretrained"]), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("nnUNetv2_train 990 2d 0 -p nnUNetVisMAEPlans")


def test_plans_of_the_same_tensors_with_other_metadata_are_another_checkpoints(fake_nnunet, tmp_path, capsys):
    """The tensors alone do not make the checkpoint: the trainer checks the metadata hash too, so the
    benchmark must not take plans of a re-described checkpoint for the given one's."""
    from safetensors.torch import load_file

    from nnunetv2_vismae.checkpoint import read_encoder_checkpoint, save_encoder_checkpoint

    original = read_encoder_checkpoint(fake_nnunet["pretrained"])
    redescribed = tmp_path / "same_tensors.safetensors"
    metadata = {**original.metadata, "normalization": {"scheme": "ct", "ct_clip": [-100, 100]}}
    save_encoder_checkpoint(redescribed, load_file(fake_nnunet["pretrained"]), metadata)
    assert read_encoder_checkpoint(redescribed).content_hash == original.content_hash
    plans = fake_nnunet["preprocessed"] / "Dataset990_Synthetic" / "nnUNetVisMAEPlans.json"
    plans.write_text(json.dumps(planned_from(redescribed)))
    assert cli.main(VISMAE_ARGV + ["--pretrained", str(fake_nnunet["pretrained"]), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{plans} was planned from {redescribed.resolve()}" in err and "metadata hash" in err


def test_runs_trained_from_another_encoder_are_not_reported_as_this_ones(fake_nnunet, encoder_b, capsys):
    folder = fold_folder(fake_nnunet["dataset_results"], "VisMAETrainer_labels10", "nnUNetVisMAEPlans", 0)
    write_summary(folder, 0.9, 0.8)
    (folder.parent / "plans.json").write_text(json.dumps(planned_from(fake_nnunet["pretrained"])))  # nnU-Net's copy
    for extra in (["--collect"], []):
        assert cli.main(VISMAE_ARGV + ["--pretrained", str(encoder_b), *extra]) == 2
        err = capsys.readouterr().err
        assert (
            f"The runs in {folder.parent} were trained with plans planned from {fake_nnunet['pretrained'].resolve()}"
            in err
        )
        assert len(err.strip().splitlines()) == 1
    assert not (fake_nnunet["dataset_results"] / "vismae_benchmark" / "report.md").exists()


def test_slurm_without_sbatch_is_refused_before_anything_is_planned(fake_nnunet, recorder, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    argv = VISMAE_ARGV + ["--pretrained", str(fake_nnunet["pretrained"]), "--executor", "slurm"]
    assert cli.main(argv) == 2
    assert recorder == []


def test_the_inline_benchmark_trains_a_run_only_under_its_lock(fake_nnunet, recorder, monkeypatch):
    from nnunetv2_vismae.io.lock import flocked

    argv = ARGV[: ARGV.index("-f") + 1] + ["0"] + ARGV[ARGV.index("--epochs") :]
    settings = le.make_settings(le.Request("990", "2d", ("0",), (100,), "cpu", ("nnunet",), epochs=1, iters=5))
    (run,) = le.all_runs(settings)
    seen = []
    recording = executors.run_logged

    def training(cmd, env, log):  # a second benchmark cannot take the run while this one trains it
        with flocked(executors.run_lock(settings, run), wait=False) as held:
            seen.append(held)
        return recording(cmd, env, log)

    monkeypatch.setattr(executors, "run_logged", training)
    assert cli.main(argv) == 0
    assert seen == [False]


def test_a_run_another_benchmark_trains_is_waited_for_not_trained_twice(fake_nnunet, recorder, capsys):
    from nnunetv2_vismae.io.lock import flocked

    argv = ARGV[: ARGV.index("-f") + 1] + ["0"] + ARGV[ARGV.index("--epochs") :]
    settings = le.make_settings(le.Request("990", "2d", ("0",), (100,), "cpu", ("nnunet",), epochs=1, iters=5))
    (run,) = le.all_runs(settings)
    held, done = threading.Event(), threading.Event()

    def other_benchmark():
        with flocked(executors.run_lock(settings, run), create=True):
            held.set()
            time.sleep(0.5)
            write_summary(run.folder(settings.results_dir), 0.9, 0.8)  # it trained the run meanwhile
        done.set()

    threading.Thread(target=other_benchmark).start()
    held.wait(5)
    assert cli.main(argv) == 0
    assert done.is_set() and recorder == []  # found finished once the other let go
    assert "another benchmark is training it; waiting for it to end" in capsys.readouterr().err


def test_sigterm_stops_the_benchmark_as_ctrl_c_does(fake_nnunet, monkeypatch, capsys):
    def unexpected(signum, frame):
        raise AssertionError("SIGTERM reached the default handling: the benchmark would die, its command run on")

    previous = signal.signal(signal.SIGTERM, unexpected)
    try:
        monkeypatch.setattr(executors, "run_logged", lambda cmd, env, log: os.kill(os.getpid(), signal.SIGTERM))
        assert cli.main(ARGV) == 130
        assert signal.getsignal(signal.SIGTERM) is unexpected  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "interrupted; run the same command again to resume." in capsys.readouterr().err
