"""The demo's ``--3d`` presets: what their steps run, their folders, and the 3D smoke demo end to end."""

import csv
import os
import shlex
from pathlib import Path

import pytest
import SimpleITK as sitk

from nnunetv2_vismae.benchmark.arms import ARMS
from nnunetv2_vismae.demo import pipeline
from nnunetv2_vismae.demo.cli import main
from nnunetv2_vismae.errors import UserError
from nnunetv2_vismae.io.nnunet import CONFIGURATION_3D
from nnunetv2_vismae.phantoms.volumes import generate_volumes
from tests.conftest import run


def dry_run(capsys, *flags) -> dict:
    """Step name -> its printed command as a list (in-process steps: their function's name)."""
    assert main([*flags, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {name: shlex.split(rest) for name, rest in (line.split(": ", 1) for line in lines)}


def flag(command: list, name: str, n: int = 1) -> list:
    return command[command.index(name) + 1 : command.index(name) + 1 + n]


def test_the_3d_smoke_demo_pretrains_nnunets_3d_encoder_and_benchmarks_it_on_3d_fullres(capsys, tmp_path):
    plan = dry_run(capsys, "--3d", "-o", str(tmp_path))
    assert list(plan) == ["generate", "preprocess", "pretrain_cnn", "benchmark"]
    assert plan["generate"] == ["(in-process)", "generate_volumes"]
    dataset = ["-d", str(pipeline.VOLUMES_ID), "-c", CONFIGURATION_3D]
    assert plan["preprocess"][:5] == ["nnUNetv2_plan_and_preprocess", *dataset]
    pretrain, bench = plan["pretrain_cnn"], plan["benchmark"]
    plans = ["--plans-of", str(pipeline.VOLUMES_ID), "-c", CONFIGURATION_3D]
    assert pretrain[:7] == ["nnUNetv2_vismae_pretrain", "--encoder", ARMS["cnn-mae"].family, *plans]
    unlabeled = tmp_path / "nnUNet_raw" / pipeline.VOLUMES_DATASET / "imagesUnlabeled"  # never a scored case
    assert flag(pretrain, "-i") == [str(unlabeled)] and flag(pretrain, "--preprocess-like") == plans[1:2]
    assert flag(pretrain, "-o") == [str(tmp_path / "pretrain_cnn")] and "-d" not in pretrain
    assert bench[:5] == ["nnUNetv2_vismae_benchmark", *dataset]
    assert bench[bench.index("--arms") + 1 : bench.index("--pretrained")] == ["nnunet", "cnn-mae", "cnn-scratch"]
    assert flag(bench, "--pretrained", 2) == [str(tmp_path / "pretrain_cnn" / "encoder.safetensors"), "--epochs"]
    assert flag(bench, "-o") == [str(tmp_path / "benchmark")] and "--test" not in bench
    quick = pipeline.QUICK_3D  # minutes on a 2-core CPU: tiny volumes, a few iterations, four runs
    assert quick.slices * quick.image_size**2 <= 24 * 48 * 48 and quick.epochs * quick.iters <= 10


def test_the_3d_study_scores_every_arm_and_twin_at_three_fractions_on_held_out_volumes(capsys):
    plan = dry_run(capsys, "--3d", "--study", "-device", "cuda", "-o", "out")
    assert list(plan) == ["generate", "preprocess", "pretrain_cnn", "study", "styles"]
    study = plan["study"]
    arms = study[study.index("--arms") + 1 : study.index("--pretrained")]
    assert {ARMS[a].twin for a in arms if ARMS[a].twin} <= set(arms) and "cnn-mae" in arms
    assert len(study[study.index("--labels") + 1 : study.index("--arms")]) == 3
    assert "--test" in study and "--executor" not in study  # one GPU: one training at a time
    assert flag(plan["pretrain_cnn"], "-device") == ["cuda"] and flag(plan["pretrain_cnn"], "--workers") == ["4"]
    assert pipeline.STUDY_3D.num_test >= 50 and pipeline.STUDY_3D.epochs * pipeline.STUDY_3D.iters == 2400


def test_the_gpu_study_leaves_nnunet_its_augmentation_workers(tmp_path, monkeypatch):
    envs = {}
    monkeypatch.setenv("nnUNet_n_proc_DA", "12")
    monkeypatch.setattr(pipeline, "generate_volumes", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "report_styles", lambda *a: None)
    monkeypatch.setattr(pipeline, "run_command", lambda name, cmd, env, logs: envs.update({name: env}))
    pipeline.run_demo(tmp_path / "study", pipeline.STUDY_3D, "cuda")
    assert envs["study"]["nnUNet_n_proc_DA"] == envs["pretrain_cnn"]["nnUNet_n_proc_DA"] == "12"
    assert "nnUNet_n_proc_DA" not in envs["preprocess"]
    pipeline.run_demo(tmp_path / "smoke", pipeline.QUICK_3D)
    assert envs["benchmark"]["nnUNet_n_proc_DA"] == "0"  # a CPU's few cores: augmentation in-process


def test_the_generate_step_writes_anisotropic_volumes_of_the_presets_shape(tmp_path):
    generate = dict(pipeline.steps(pipeline.QUICK_3D, tmp_path, "cpu"))["generate"]
    assert generate.func is generate_volumes
    folder = generate()
    assert folder == tmp_path / "nnUNet_raw" / pipeline.VOLUMES_DATASET
    images = sorted((folder / "imagesTr").iterdir())
    assert len(images) == pipeline.QUICK_3D.num_train
    image = sitk.ReadImage(str(images[0]))
    assert image.GetSize() == (32, 32, 16) and image.GetSpacing() == (1.0, 1.0, 3.0)


@pytest.fixture
def steps_run(monkeypatch) -> list:
    """The demo's steps, recorded instead of run."""
    ran = []
    for generator in ("generate_dataset", "generate_volumes"):
        monkeypatch.setattr(pipeline, generator, lambda *a, **k: ran.append("generate"))
    monkeypatch.setattr(pipeline, "run_command", lambda name, cmd, env, logs: ran.append(name))
    monkeypatch.setattr(pipeline, "report_styles", lambda *a: ran.append("styles"))
    return ran


def test_3d_demos_run_in_their_own_default_folders_and_refuse_each_others(steps_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--3d"]) == 0 and main(["--3d", "--study"]) == 0 and main(["--quick"]) == 0
    volumes = ["generate", "preprocess", "pretrain_cnn"]
    slices = ["generate", "preprocess", "pretrain", "benchmark"]
    assert steps_run == volumes + ["benchmark"] + volumes + ["study", "styles"] + slices
    folders = ("vismae_demo_3d", "vismae_demo_3d_study", "vismae_demo_quick")
    assert all((tmp_path / folder / "steps_done.txt").is_file() for folder in folders)
    for folder, size, found in [(folders[0], pipeline.QUICK, "3d"), (folders[1], pipeline.QUICK_3D, "3d_study")]:
        with pytest.raises(UserError, match=f"holds the {found} demo, whose phantoms or encoder differ from the"):
            pipeline.run_demo(tmp_path / folder, size)


def test_a_damaged_preset_record_names_the_3d_presets_too(steps_run, tmp_path):
    (tmp_path / pipeline.PRESET_FILE).write_text("3D\n")
    with pytest.raises(UserError, match=r"names no demo preset \(.*\); nor a --3d one \(3d, 3d_study\); run "):
        pipeline.run_demo(tmp_path, pipeline.QUICK_3D)
    assert steps_run == []


def test_shift_has_no_3d_preset_in_one_sentence(capsys):
    assert main(["--3d", "--shift", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == (
        "nnUNetv2_vismae_demo: error: --shift has no 3D preset (the phantom volumes are labeled in every style); "
        "run --3d or --3d --study."
    )


def test_the_3d_smoke_demo_says_first_that_it_draws_no_verdict(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("nnunetv2_vismae.demo.cli.run_demo", lambda out, size, device: Path(out) / size.name)
    assert main(["--3d", "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("No verdict: this quick 3D demo is a smoke test")


@pytest.mark.slow
def test_quick_3d_demo_end_to_end(tmp_path):
    """The whole 3D pipeline through the console scripts (its time is measured in docs/demo.md, not asserted)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    result = run(["nnUNetv2_vismae_demo", "--3d", "-o", str(tmp_path)], env, timeout=900)
    assert result.stdout.startswith("No verdict: this quick 3D demo is a smoke test")
    bench = tmp_path / "benchmark"
    rows = list(csv.DictReader((bench / "results.csv").open()))
    quick = pipeline.QUICK_3D
    assert {(r["arm"], r["labels"]) for r in rows} == {(a, str(p)) for a in quick.arms for p in quick.labels} | {
        ("nnunet", "100")
    }
    assert (bench / "report.md").read_text().splitlines()[2].startswith("**No verdict:")
    plans = (tmp_path / "nnUNet_preprocessed" / pipeline.VOLUMES_DATASET / "nnUNetPlans.json").read_text()
    assert '"3d_fullres"' in plans
