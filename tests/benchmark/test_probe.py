"""The frozen-encoder probe arms: a pretrained frozen encoder against a random one, beside the verdict."""

import pytest

from nnunetv2_vismae.benchmark import cli
from nnunetv2_vismae.benchmark.arms import ARMS, default_arms, probe_arms
from nnunetv2_vismae.benchmark.report import PROBE_SECTION

from .test_cnn_arm import cnn_checkpoint, swin_checkpoint
from .test_report import benchmark, no_runs, plant  # noqa: F401 (no_runs is a fixture)

PROBES = {
    "vismae-frozen": ("VisMAETrainerFrozen", "nnUNetVisMAEPlans", "swin", "vismae-frozen-random"),
    "vismae-frozen-random": ("VisMAETrainerFrozenScratch", "nnUNetVisMAEPlans", "swin", None),
    "cnn-mae-frozen": ("nnUNetTrainerMAEFrozen", "nnUNetMAEPlans", "cnn", "cnn-frozen-random"),
    "cnn-frozen-random": ("nnUNetTrainerMAEFrozenScratch", "nnUNetMAEPlans", "cnn", None),
}


def test_the_probe_arms_train_the_frozen_trainers_on_the_derived_plans_of_their_family():
    assert {name for name, arm in ARMS.items() if arm.probe} == set(PROBES)
    for name, (trainer, plans, family, twin) in PROBES.items():
        arm = ARMS[name]
        assert (arm.trainer, arm.plans, arm.family_for(2), arm.twin, arm.derived_plans) == (
            trainer,
            plans,
            family,
            twin,
            True,
        )
        assert arm.needs_pretrained == (twin is not None)
    assert not set(PROBES) & set(default_arms({"swin", "cnn"}))


@pytest.mark.parametrize(
    "families, expected",
    [
        ({"swin"}, ["vismae-frozen", "vismae-frozen-random"]),
        ({"cnn"}, ["cnn-mae-frozen", "cnn-frozen-random"]),
        ({"swin", "cnn"}, list(PROBES)),
        (set(), []),
    ],
)
def test_probe_arms_are_those_of_the_given_families(families, expected):
    assert probe_arms(families) == expected


def dry_run_trainers(argv, capsys) -> list[str]:
    assert cli.main(["-d", "990", "--labels", "10", "-f", "0", "-device", "cpu", "--dry-run", *argv]) == 0
    return [line.split(" -tr ")[1].split()[0] for line in capsys.readouterr().out.splitlines() if " -tr " in line]


def test_probe_adds_exactly_the_probe_arms_of_the_given_families_to_the_dry_run(fake_nnunet, tmp_path, capsys):
    swin = swin_checkpoint(tmp_path / "swin.safetensors")
    cnn = cnn_checkpoint(tmp_path / "cnn.safetensors")
    without = dry_run_trainers(["--pretrained", str(swin)], capsys)
    with_probe = dry_run_trainers(["--pretrained", str(swin), "--probe"], capsys)
    assert set(with_probe) - set(without) == {"VisMAETrainerFrozen_labels10", "VisMAETrainerFrozenScratch_labels10"}
    both = dry_run_trainers(["--pretrained", str(swin), "--pretrained-cnn", str(cnn), "--probe"], capsys)
    assert {t for t in both if "Frozen" in t} == {f"{PROBES[a][0]}_labels10" for a in PROBES}
    named = dry_run_trainers(["--pretrained-cnn", str(cnn), "--arms", "cnn-mae-frozen", "cnn-frozen-random"], capsys)
    assert named == ["nnUNetTrainerMAEFrozen_labels10", "nnUNetTrainerMAEFrozenScratch_labels10"]


def test_probe_without_a_checkpoint_is_one_sentence(fake_nnunet, capsys):
    assert cli.main(["-d", "990", "-device", "cpu", "--probe", "--dry-run"]) == 2
    assert "--probe compares a pretrained frozen encoder with a random one and needs its checkpoint" in (
        capsys.readouterr().err
    )


def test_the_report_shows_the_probe_apart_from_the_verdict(fake_nnunet, no_runs):  # noqa: F811
    results = fake_nnunet["dataset_results"]
    plant(results, "nnunet", 25, shift=-0.15, noise=0.01)
    plant(results, "nnunet", 100)
    plant(results, "vismae", 25, shift=-0.05, noise=0.01)
    plant(results, "scratch", 25, shift=-0.05, noise=0.01)
    plant(results, "vismae-frozen", 25, shift=-0.30, noise=0.005)
    plant(results, "vismae-frozen-random", 25, shift=-0.26, noise=0.005)  # random features 0.04 better
    arms = ("nnunet", "vismae", "scratch", "vismae-frozen", "vismae-frozen-random")
    report = benchmark(fake_nnunet, [25, 100], arms=arms, extra=["--probe"])
    verdict = report[: report.index("- Dataset:")]
    assert "**VisMAE**" in verdict and "frozen" not in verdict  # the verdict's pretrained arms: vismae only
    comparisons = report[report.index("## Paired comparisons") : report.index(PROBE_SECTION)]
    assert "frozen" not in comparisons
    section = report[report.index(PROBE_SECTION) : report.index("## Commands")]
    row = next(line for line in section.splitlines() if line.startswith("| swin | 25% |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "12" and cells[7] == "0/12"
    assert float(cells[5].split()[0]) == pytest.approx(-0.04, abs=0.005)  # the planted difference, with its CI
    assert float(cells[6]) < 0.01  # Wilcoxon p
    assert cells[8] == "the pretrained features are worse than random ones for this decoder"
    out = fake_nnunet["results"] / "bench"
    png = (out / "probe.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_a_probe_without_difference_reads_so_and_without_the_probe_there_is_no_section(fake_nnunet, no_runs):  # noqa: F811
    results = fake_nnunet["dataset_results"]
    plant(results, "nnunet", 100)
    plant(results, "vismae-frozen", 100, shift=-0.2, noise=0.01)
    plant(results, "vismae-frozen-random", 100, shift=-0.2, noise=0.01, seed=0)
    report = benchmark(fake_nnunet, [100], arms=("nnunet", "vismae-frozen", "vismae-frozen-random"))
    assert "no measurable difference between pretrained and random features (the CI includes 0)" in report
    plain = benchmark(fake_nnunet, [100], arms=("nnunet",))
    assert PROBE_SECTION not in plain and "No pretrained arm ran" in plain


def test_a_probe_alone_draws_only_its_own_figure(fake_nnunet, no_runs):  # noqa: F811
    """label_efficiency.png would be an empty plot (the probe arms have their own figure)."""
    benchmark(fake_nnunet, [10], arms=("vismae-frozen", "vismae-frozen-random"))
    out = fake_nnunet["results"] / "bench"
    assert (out / "probe.png").read_bytes().startswith(b"\x89PNG")
    assert not (out / "label_efficiency.png").exists()
