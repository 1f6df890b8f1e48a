"""Every stage that depends on the encoder family looks it up in its own registry, keyed by the same
family names (docs/architecture.md): the registries must agree."""

from nnunetv2_vismae.benchmark.arms import ARMS
from nnunetv2_vismae.checkpoint.families import FAMILIES as CHECKPOINT_FAMILIES
from nnunetv2_vismae.classification.model import CLASSIFIERS
from nnunetv2_vismae.planning.families import FAMILY_WITHOUT_CHECKPOINT, PLANNING
from pretrain.families import FAMILIES as PRETRAINING_FAMILIES


def test_every_stage_knows_the_families_of_the_checkpoint_format():
    families = set(CHECKPOINT_FAMILIES)
    assert set(PRETRAINING_FAMILIES) == families
    assert set(PLANNING) == families
    assert {arm.family for arm in ARMS.values() if arm.family} == families
    assert set(CLASSIFIERS) <= families
    assert all(family.name == name for name, family in PRETRAINING_FAMILIES.items())
    assert all(family.name == name for name, family in CHECKPOINT_FAMILIES.items())


def test_each_family_has_a_pretrained_arm_with_the_planned_trainer_and_a_twin_of_its_family():
    for family, planning in PLANNING.items():
        (arm,) = [a for a in ARMS.values() if a.family == family and a.needs_pretrained and not (a.ablation or a.probe)]
        assert arm.trainer == planning.trainer and arm.plans == planning.plans
        twin = ARMS[arm.twin]
        assert twin.family == family and not twin.needs_pretrained


def test_plans_without_a_checkpoint_are_those_of_a_family_that_needs_none():
    assert not PLANNING[FAMILY_WITHOUT_CHECKPOINT].needs_checkpoint
