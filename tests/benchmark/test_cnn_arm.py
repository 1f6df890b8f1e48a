"""The cnn-mae arm: nnU-Net's own network fine-tuned from a cnn checkpoint, beside the other arms."""

from pathlib import Path

from nnunetv2_vismae.benchmark import cli
from nnunetv2_vismae.benchmark.arms import default_arms
from nnunetv2_vismae.checkpoint import save_encoder_checkpoint

from ..conftest import TINY_ENCODER


def swin_checkpoint(path: Path) -> Path:
    from nnunetv2_vismae.architectures import SwinEncoder

    encoder = SwinEncoder(in_channels=1, **TINY_ENCODER)
    save_encoder_checkpoint(
        path,
        encoder.state_dict(),
        {"family": "swin", "encoder_config": encoder.config.to_json(), "normalization": {"scheme": "zscore"}},
    )
    return path


def cnn_checkpoint(path: Path) -> Path:
    from ..pretrain.test_cnn_family import residual_architecture
    from ..training.test_cnn_trainer import saved_cnn_encoder

    saved_cnn_encoder(path, residual_architecture())
    return path


def test_by_default_every_arm_whose_checkpoint_is_given_runs_with_its_twin(fake_nnunet, tmp_path, capsys):
    swin, cnn = swin_checkpoint(tmp_path / "swin.safetensors"), cnn_checkpoint(tmp_path / "cnn.safetensors")
    assert (
        cli.main(
            [
                "-d",
                "990",
                "--labels",
                "10",
                "100",
                "-f",
                "0",
                "-device",
                "cpu",
                "--subset-seeds",
                "0",
                "2",
                "--pretrained",
                str(swin),
                "--pretrained-cnn",
                str(cnn),
                "--dry-run",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        f"nnUNetv2_vismae_plan -d 990 -o nnUNetVisMAEPlans --pretrained {swin.resolve()}",
        f"nnUNetv2_vismae_plan -d 990 -o nnUNetMAEPlans --pretrained {cnn.resolve()}",
    ]
    trainers = [line.split(" -tr ")[1].split()[0] for line in lines[2:]]
    for plans, base in (
        ("nnUNetPlans", "nnUNetTrainer"),
        ("nnUNetVisMAEPlans", "VisMAETrainer"),
        ("nnUNetVisMAEPlans", "VisMAETrainerScratch"),
        ("nnUNetMAEPlans", "nnUNetTrainerMAE"),
        ("nnUNetMAEPlans", "nnUNetTrainerMAEScratch"),
    ):
        assert f"nnUNetv2_train 990 2d 0 -p {plans} -tr {base}_labels10_seed2 -device cpu" in lines
        assert {f"{base}_labels10", f"{base}_labels10_seed2", f"{base}_labels100"} <= set(trainers)
    assert len(trainers) == 15  # 5 arms x (10% with 2 seeds + 100% once: every seed draws all cases)


def test_the_cnn_twin_needs_the_checkpoint_its_plans_are_planned_from(fake_nnunet, capsys):
    assert cli.main(["-d", "990", "--arms", "cnn-scratch", "-device", "cpu", "--dry-run"]) == 2
    assert (
        "The cnn-scratch arm trains the network of nnUNetMAEPlans, which is planned from a cnn checkpoint; "
        "pass --pretrained FILE with one once."
    ) in capsys.readouterr().err
    (fake_nnunet["preprocessed"] / "Dataset990_Synthetic" / "nnUNetMAEPlans.json").write_text("{}")
    assert (
        cli.main(["-d", "990", "--arms", "cnn-scratch", "--labels", "10", "-f", "0", "-device", "cpu", "--dry-run"])
        == 0
    )
    assert capsys.readouterr().out.splitlines() == [
        "nnUNetv2_train 990 2d 0 -p nnUNetMAEPlans -tr nnUNetTrainerMAEScratch_labels10 -device cpu"
    ]


def test_cnn_mae_needs_its_checkpoint_and_is_left_out_by_default_without_it(fake_nnunet, capsys):
    assert "cnn-mae" not in default_arms(set()) and {"cnn-mae", "cnn-scratch"} <= set(default_arms({"cnn"}))
    assert cli.main(["-d", "990", "--arms", "cnn-mae", "-device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "The cnn-mae arm fine-tunes a pretrained cnn encoder; pass --pretrained FILE with a cnn checkpoint" in err


def test_a_swin_checkpoint_given_as_the_cnn_one_is_refused(fake_nnunet, tmp_path, capsys):
    swin = swin_checkpoint(tmp_path / "swin.safetensors")
    assert (
        cli.main(
            [
                "-d",
                "990",
                "--arms",
                "cnn-mae",
                "--labels",
                "10",
                "-f",
                "0",
                "-device",
                "cpu",
                "--pretrained-cnn",
                str(swin),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "The cnn-mae arm fine-tunes a pretrained cnn encoder; pass --pretrained FILE with a cnn checkpoint "
        f"(given: {swin.resolve()}, a swin encoder) (or leave the arm out with --arms)."
    )


def test_one_pretrained_flag_takes_the_checkpoints_of_every_family_reading_each_ones_family(
    fake_nnunet, tmp_path, capsys
):
    swin, cnn = swin_checkpoint(tmp_path / "swin.safetensors"), cnn_checkpoint(tmp_path / "cnn.safetensors")
    argv = ["-d", "990", "--labels", "10", "-f", "0", "-device", "cpu", "--dry-run"]
    assert cli.main(argv + ["--pretrained", str(cnn), str(swin)]) == 0
    plans = [line for line in capsys.readouterr().out.splitlines() if line.startswith("nnUNetv2_vismae_plan")]
    assert sorted(plans) == [
        f"nnUNetv2_vismae_plan -d 990 -o nnUNetMAEPlans --pretrained {cnn.resolve()}",
        f"nnUNetv2_vismae_plan -d 990 -o nnUNetVisMAEPlans --pretrained {swin.resolve()}",
    ]


def test_two_checkpoints_of_one_family_are_one_sentence(fake_nnunet, tmp_path, capsys):
    first, second = cnn_checkpoint(tmp_path / "a.safetensors"), cnn_checkpoint(tmp_path / "b.safetensors")
    argv = ["-d", "990", "-device", "cpu", "--dry-run", "--pretrained", str(first), "--pretrained-cnn", str(second)]
    assert cli.main(argv) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"--pretrained {first.resolve()} and {second.resolve()} both hold a cnn encoder; "
            "give one checkpoint per encoder family."
        )
    )
