"""The demo's ``--3d`` presets: what their steps run, their folders, and the 3D smoke demo end to end."""

import csv
import json
import os
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import SimpleITK as sitk

from nnunetv2_vismae.benchmark.arms import ARMS
from nnunetv2_vismae.demo import pipeline
from nnunetv2_vismae.demo.cli import main
from nnunetv2_vismae.errors import UserError
from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from nnunetv2_vismae.io.nnunet import CONFIGURATION_3D
from nnunetv2_vismae.phantoms.volumes import generate_volumes
from nnunetv2_vismae.planning.cli import main as plan_main
from nnunetv2_vismae.planning.vismae_plans import compatible_patch_size
from pretrain.cli import build_parser
from pretrain.families.swin3d import Swin3dOptions, encoder_config
from tests.conftest import nnunet_env, run, set_nnunet_folders


def dry_run(capsys, *flags) -> dict:
    """Step name -> its printed command as a list (in-process steps: their function's name)."""
    assert main([*flags, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {name: shlex.split(rest) for name, rest in (line.split(": ", 1) for line in lines)}


FIVE_ARMS = ("nnunet", "cnn-mae", "cnn-scratch", "vismae", "scratch")


def flag(command: list, name: str, n: int = 1) -> list:
    return command[command.index(name) + 1 : command.index(name) + 1 + n]


def test_the_3d_smoke_demo_pretrains_nnunets_3d_encoder_and_benchmarks_it_on_3d_fullres(capsys, tmp_path):
    plan = dry_run(capsys, "--3d", "-o", str(tmp_path))
    assert list(plan) == ["generate", "preprocess", "pretrain_cnn", "pretrain", "benchmark"]
    assert plan["generate"] == ["(in-process)", "generate_volumes"]
    dataset = ["-d", str(pipeline.VOLUMES_ID), "-c", CONFIGURATION_3D]
    assert plan["preprocess"][:5] == ["nnUNetv2_plan_and_preprocess", *dataset]
    pretrain, bench = plan["pretrain_cnn"], plan["benchmark"]
    plans = ["--plans-of", str(pipeline.VOLUMES_ID), "-c", CONFIGURATION_3D]
    assert pretrain[:7] == ["nnUNetv2_vismae_pretrain", "--encoder", ARMS["cnn-mae"].family_for(3), *plans]
    unlabeled = tmp_path / "nnUNet_raw" / pipeline.VOLUMES_DATASET / "imagesUnlabeled"  # never a scored case
    assert flag(pretrain, "-i") == [str(unlabeled)] and flag(pretrain, "--preprocess-like") == plans[1:2]
    assert flag(pretrain, "-o") == [str(tmp_path / "pretrain_cnn")] and "-d" not in pretrain
    assert bench[:5] == ["nnUNetv2_vismae_benchmark", *dataset]
    assert bench[bench.index("--arms") + 1 : bench.index("--pretrained")] == [*FIVE_ARMS]
    encoders = [str(tmp_path / folder / "encoder.safetensors") for folder in ("pretrain_cnn", "pretrain")]
    assert flag(bench, "--pretrained", 3) == [*encoders, "--epochs"]
    assert flag(bench, "-o") == [str(tmp_path / "benchmark")] and "--test" not in bench
    quick = pipeline.QUICK_3D  # minutes on a 2-core CPU: tiny volumes, a few iterations, six runs
    assert quick.slices * quick.image_size**2 <= 24 * 48 * 48 and quick.epochs * quick.iters <= 10


@pytest.mark.parametrize(("preset", "swin_patch"), [(["--3d"], [16, 32, 32]), (["--3d", "--study"], [32, 96, 96])])
def test_the_3d_presets_run_all_five_arms_with_a_3d_swin_pretrained_on_the_unlabeled_pool_only(
    capsys, tmp_path, preset, swin_patch
):
    plan = dry_run(capsys, *preset, "-o", str(tmp_path))
    *_, bench = (command for command in plan.values() if command[0] == "nnUNetv2_vismae_benchmark")
    assert bench[bench.index("--arms") + 1 : bench.index("--pretrained")] == [*FIVE_ARMS]
    encoders = [str(tmp_path / folder / "encoder.safetensors") for folder in ("pretrain_cnn", "pretrain")]
    assert flag(bench, "--pretrained", 3) == [*encoders, "--epochs"]
    swin = plan["pretrain"]
    assert swin[:3] == ["nnUNetv2_vismae_pretrain", "--encoder", ARMS["vismae"].family_for(3)]
    unlabeled = tmp_path / "nnUNet_raw" / pipeline.VOLUMES_DATASET / "imagesUnlabeled"
    assert flag(swin, "-i") == [str(unlabeled)] and flag(swin, "--preprocess-like") == [str(pipeline.VOLUMES_ID)]
    assert swin.count("-i") == 1 and not {"-d", "--pack", "--file-list"} & set(swin)  # never a scored case
    # nnU-Net plans the whole phantom volume as its patch; the Swin's patch is that rounded to the encoder's stride
    size = pipeline.STUDY_3D if "--study" in preset else pipeline.QUICK_3D
    stride = encoder_config(Swin3dOptions.from_args(build_parser().parse_args(swin[1:])), 1).total_stride
    volume = [size.slices, size.image_size, size.image_size]
    assert compatible_patch_size(volume, stride) == swin_patch  # the quick one: the whole volume, none padded


def test_the_3d_study_scores_every_arm_and_twin_at_three_fractions_on_held_out_volumes(capsys):
    plan = dry_run(capsys, "--3d", "--study", "-device", "cuda", "-o", "out")
    assert list(plan) == ["generate", "preprocess", "pretrain_cnn", "pretrain", "study", "styles"]
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
    assert envs["pretrain"]["nnUNet_n_proc_DA"] == "12"
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
    volumes = ["generate", "preprocess", "pretrain_cnn", "pretrain"]
    slices = ["generate", "preprocess", "pretrain", "benchmark"]
    assert steps_run == volumes + ["benchmark"] + volumes + ["study", "styles"] + slices
    folders = ("vismae_demo_3d", "vismae_demo_3d_study", "vismae_demo_quick")
    assert all((tmp_path / folder / "steps_done.txt").is_file() for folder in folders)
    for folder, size, found in [(folders[0], pipeline.QUICK, "3d"), (folders[1], pipeline.QUICK_3D, "3d_study")]:
        with pytest.raises(UserError, match=f"holds the {found} demo, whose phantoms or encoder differ from the"):
            pipeline.run_demo(tmp_path / folder, size)


def test_a_3d_folder_from_before_the_swin_arms_pretrains_the_3d_swin_then_benchmarks_again(steps_run, tmp_path):
    (tmp_path / pipeline.PRESET_FILE).write_text("3d\n")
    (tmp_path / "steps_done.txt").write_text("generate\npreprocess\npretrain_cnn\nbenchmark\n")
    pipeline.run_demo(tmp_path, pipeline.QUICK_3D)
    assert steps_run == ["pretrain", "benchmark"]  # the benchmark skips its finished runs and trains the new arms
    pipeline.run_demo(tmp_path, pipeline.QUICK_3D)
    assert steps_run == ["pretrain", "benchmark"]


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
def test_the_3d_pipeline_end_to_end_the_demo_then_stock_prediction_and_an_nnssl_checkpoint(
    tmp_path, monkeypatch, capsys
):
    """The whole 3D pipeline through the console scripts, on one preprocessed dataset (each 3D end-to-end run
    costs most of a minute on 2 cores): the quick 3D demo, shortened (its time is measured in docs/demo.md),
    nnU-Net's stock prediction and evaluation with the model it fine-tuned, then a checkpoint converted from
    nnssl planned with its own network (--checkpoint-network) and fine-tuned by the stock nnUNetv2_train, then the
    demo's swin3d checkpoint as its benchmark planned and fine-tuned it by VisMAETrainer, its model predicting
    stock."""
    for name in [k for k in os.environ if k.startswith("nnUNet_")]:
        monkeypatch.delenv(name)
    quick = smaller_smoke_preset(monkeypatch)
    assert main(["--3d", "-o", str(tmp_path)]) == 0  # in this process: its console script runs in the 2D demo's test
    assert capsys.readouterr().out.startswith("No verdict: this quick 3D demo is a smoke test")
    bench = tmp_path / "benchmark"
    rows = list(csv.DictReader((bench / "results.csv").open()))
    assert {(r["arm"], r["labels"]) for r in rows} == {(a, str(p)) for a in quick.arms for p in quick.labels} | {
        ("nnunet", "100")
    }
    assert (bench / "report.md").read_text().splitlines()[2].startswith("**No verdict:")
    plans = (tmp_path / "nnUNet_preprocessed" / pipeline.VOLUMES_DATASET / "nnUNetPlans.json").read_text()
    assert '"3d_fullres"' in plans
    env = nnunet_env(tmp_path)  # the demo's own nnU-Net folders
    env["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process
    predict_and_evaluate_the_demos_fine_tuned_model(tmp_path, env)
    set_nnunet_folders(monkeypatch, env)  # for planning in this process
    fine_tune_an_nnssl_checkpoint_on_the_demos_data(tmp_path, env, capsys)
    check_the_demos_swin3d_run(tmp_path, env)


def smaller_smoke_preset(monkeypatch) -> pipeline.DemoSize:
    """The quick 3D demo with fewer pretraining steps, unlabeled volumes and iterations: the test checks the
    pipeline's plumbing, which no preset this short learns anything from (each 3D step costs 1 to 2 s)."""
    quick = replace(pipeline.QUICK_3D, num_unlabeled=4, pretrain_steps=2, iters=2)
    monkeypatch.setattr(pipeline, "QUICK_3D", quick)
    return quick


def predict_and_evaluate_the_demos_fine_tuned_model(out: Path, env: dict) -> None:
    (trainer,) = [r.name.split("__")[0] for r in (out / "nnUNet_results" / pipeline.VOLUMES_DATASET).iterdir()
                  if r.name.startswith("nnUNetTrainerMAE_")]  # fmt: skip
    predict_and_evaluate(out, env, "nnUNetMAEPlans", trainer, "test", cases=2)


def predict_and_evaluate(out: Path, env: dict, plans: str, trainer: str, name: str, cases: int) -> None:
    """Stock nnUNetv2_predict of the first ``cases`` training images with a fold-0 model, scored by
    nnUNetv2_evaluate_folder."""
    raw = out / "nnUNet_raw" / pipeline.VOLUMES_DATASET
    images, predictions = out / f"{name}_images", out / f"{name}_predictions"
    images.mkdir()
    for case in sorted((raw / "imagesTr").iterdir())[:cases]:
        (images / case.name).write_bytes(case.read_bytes())
    dataset = ["-d", str(pipeline.VOLUMES_ID), "-c", CONFIGURATION_3D, "-p", plans, "-tr", trainer]
    predict = ["nnUNetv2_predict", "-i", str(images), "-o", str(predictions), *dataset, "-f", "0"]
    # worker processes for the swin3d model's prediction only: nnU-Net's own path with them stays covered
    workers = "1" if plans == "nnUNetVisMAEPlans" else "0"
    run([*predict, "-device", "cpu", "--disable_tta", "-npp", workers, "-nps", workers], env)
    assert len(list(predictions.glob("*.nii.gz"))) == cases
    model = out / "nnUNet_results" / pipeline.VOLUMES_DATASET / f"{trainer}__{plans}__{CONFIGURATION_3D}"
    files = ["-djfile", str(model / "dataset.json"), "-pfile", str(model / "plans.json"), "-np", "1", "--chill"]
    run(["nnUNetv2_evaluate_folder", str(raw / "labelsTr"), str(predictions), *files], env)
    summary = json.loads((predictions / "summary.json").read_text())
    assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0


def fine_tune_an_nnssl_checkpoint_on_the_demos_data(out: Path, env: dict, capsys) -> None:
    from tests.checkpoint.test_convert_nnssl import CITATIONS, nnssl_network, save_like_nnssl, serialized_plan

    source, checkpoint = out / "checkpoint_final.pth", out / "resenc.safetensors"
    save_like_nnssl(source, nnssl_network(), serialized_plan(), CITATIONS)
    run(["nnUNetv2_vismae_convert", "--from", "nnssl", str(source), str(checkpoint)], env)
    plan = ["-d", str(pipeline.VOLUMES_ID), "-c", CONFIGURATION_3D, "-o", "OpenMindPlans"]
    plan += ["--pretrained", str(checkpoint)]
    # in this process (its console script runs in tests/e2e); its refusals without the flag, or for a 2D
    # configuration, are tested in tests/planning
    assert plan_main([*plan, "--checkpoint-network"]) == 0
    assert "Planned the checkpoint's ResidualEncoderUNet on nnUNetPlans_3d_fullres" in capsys.readouterr().out

    trainer = "nnUNetTrainerMAE_1epochs_2iters"
    train = ["nnUNetv2_train", str(pipeline.VOLUMES_ID), CONFIGURATION_3D, "0", "-p", "OpenMindPlans", "-tr", trainer]
    run([*train, "-device", "cpu"], env)
    fold = out / "nnUNet_results" / pipeline.VOLUMES_DATASET / f"{trainer}__OpenMindPlans__{CONFIGURATION_3D}"
    log = next((fold / "fold_0").glob("training_log_*.txt")).read_text()
    assert f"Loaded cnn encoder checkpoint {checkpoint}" in log and "(100.0%)" in log and "0 missing" in log
    assert CITATIONS[0]["apa_citations"][0] in log  # the citations nnssl's file carries
    plans = json.loads((fold / "plans.json").read_text())["configurations"][CONFIGURATION_3D]
    assert plans["architecture"] == read_encoder_checkpoint(checkpoint).encoder_config["architecture"]
    assert "Dice" in (fold / "fold_0" / "validation" / "summary.json").read_text()


def check_the_demos_swin3d_run(out: Path, env: dict) -> None:
    """The demo's vismae run: its swin3d checkpoint, pretrained on the unlabeled volumes, planned on 3d_fullres by
    nnUNetv2_vismae_plan and fine-tuned by the stock nnUNetv2_train with VisMAETrainer (both logged by the
    benchmark), its model predicting stock."""
    checkpoint = out / "pretrain" / "encoder.safetensors"
    planned = (out / "benchmark" / "logs" / "plan_nnUNetVisMAEPlans.log").read_text()
    assert f"nnUNetv2_train {pipeline.VOLUMES_ID} {CONFIGURATION_3D} FOLD -p nnUNetVisMAEPlans -tr VisMAETrainer" in (
        planned
    )
    results = out / "nnUNet_results" / pipeline.VOLUMES_DATASET
    (trainer,) = [r.name.split("__")[0] for r in results.iterdir() if r.name.startswith("VisMAETrainer_")]
    fold = results / f"{trainer}__nnUNetVisMAEPlans__{CONFIGURATION_3D}"
    log = next((fold / "fold_0").glob("training_log_*.txt")).read_text()
    assert f"Loaded swin3d encoder checkpoint {checkpoint}" in log and "(100.0%)" in log and "0 missing" in log
    architecture = json.loads((fold / "plans.json").read_text())["configurations"][CONFIGURATION_3D]["architecture"]
    assert architecture["network_class_name"] == "nnunetv2_vismae.architectures.Swin3dUNet"
    assert "Dice" in (fold / "fold_0" / "validation" / "summary.json").read_text()
    predict_and_evaluate(out, env, "nnUNetVisMAEPlans", trainer, "swin3d", cases=1)
