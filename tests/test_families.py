"""Every stage that depends on the encoder family looks it up in its own registry, keyed by the same
family names (docs/architecture.md): the registries must agree, and nothing else names a family."""

import ast
from pathlib import Path

from nnunetv2_vismae.benchmark.arms import ARMS
from nnunetv2_vismae.checkpoint.families import FAMILIES as CHECKPOINT_FAMILIES
from nnunetv2_vismae.classification.model import CLASSIFIERS
from nnunetv2_vismae.planning.families import FAMILY_WITHOUT_CHECKPOINT, PLANNING
from pretrain.families import FAMILIES as PRETRAINING_FAMILIES


def test_every_stage_knows_the_families_of_the_checkpoint_format():
    families = set(CHECKPOINT_FAMILIES)
    assert set(PRETRAINING_FAMILIES) == families
    assert set(PLANNING) == families
    assert {family for arm in ARMS.values() for family in arm.families} == families
    assert set(CLASSIFIERS) <= families
    assert all(family.name == name for name, family in PRETRAINING_FAMILIES.items())
    assert all(family.name == name for name, family in CHECKPOINT_FAMILIES.items())


def test_each_family_has_one_pretrained_arm_per_dimension_it_plans_with_the_planned_trainer_and_a_twin():
    for family, planning in PLANNING.items():
        for dims in planning.spatial_dims:
            (arm,) = [
                a
                for a in ARMS.values()
                if a.family_for(dims) == family and a.needs_pretrained and not (a.ablation or a.probe)
            ]
            assert arm.trainer == planning.trainer and arm.plans == planning.plans
            twin = ARMS[arm.twin]
            assert twin.family_for(dims) == family and not twin.needs_pretrained


def test_an_arms_families_plan_other_dimensions_and_share_its_plans_and_trainer():
    for arm in ARMS.values():
        dims = [d for family in arm.families for d in PLANNING[family].spatial_dims]
        assert len(dims) == len(set(dims)), arm.name
        assert len({(PLANNING[family].plans, PLANNING[family].trainer) for family in arm.families}) <= 1, arm.name


def test_plans_without_a_checkpoint_are_those_of_a_family_that_needs_none_and_plans_those_dimensions():
    for dims, family in FAMILY_WITHOUT_CHECKPOINT.items():
        assert not PLANNING[family].needs_checkpoint and dims in PLANNING[family].spatial_dims


REGISTRIES = {  # the files that may name a family (relative to the repository)
    "nnunetv2_vismae/checkpoint/families.py",
    "nnunetv2_vismae/planning/families.py",
    "nnunetv2_vismae/benchmark/arms.py",
    "nnunetv2_vismae/classification/model.py",
    "pretrain/families/swin.py",
    "pretrain/families/swin3d.py",
    "pretrain/families/cnn.py",
}


def family_names_outside_the_registries(root: Path) -> list[str]:
    """``file:line`` of every string constant that is a family name, outside the registries; a constant
    assigned to a ``*_DECODER`` name is a decoder's name, which happens to be a family's too."""
    found = []
    for path in sorted([*root.glob("nnunetv2_vismae/**/*.py"), *root.glob("pretrain/**/*.py")]):
        if path.relative_to(root).as_posix() in REGISTRIES:
            continue
        tree = ast.parse(path.read_text())
        decoders = {
            id(node)
            for statement in ast.walk(tree)
            if isinstance(statement, ast.Assign)
            and all(
                name.id.endswith("_DECODER") for name in ast.walk(statement.targets[0]) if isinstance(name, ast.Name)
            )
            for node in ast.walk(statement.value)
        }
        found += [
            f"{path.relative_to(root)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in CHECKPOINT_FAMILIES and id(node) not in decoders
        ]
    return found


def test_no_code_outside_the_registries_names_a_family():
    assert family_names_outside_the_registries(Path(__file__).resolve().parents[1]) == []
