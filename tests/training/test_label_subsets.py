import pytest

from nnunetv2_vismae.training import variants
from nnunetv2_vismae.label_subsets import label_subset

CASES = [f"case_{i:03d}" for i in range(40)]


def test_subsets_are_deterministic_nested_and_never_empty():
    subsets = {p: label_subset(CASES, p, "Dataset800_X", 0) for p in (1, 10, 25, 50, 100)}
    assert subsets == {p: label_subset(list(reversed(CASES)), p, "Dataset800_X", 0) for p in subsets}
    assert [len(subsets[p]) for p in (1, 10, 25, 50, 100)] == [1, 4, 10, 20, 40]
    assert set(subsets[1]) <= set(subsets[10]) <= set(subsets[25]) <= set(subsets[50]) <= set(subsets[100])
    assert subsets[100] == sorted(CASES)
    assert label_subset(CASES[:3], 1, "Dataset800_X", 0) != [] and len(label_subset(CASES[:3], 50, "D", 0)) == 2


def test_subsets_depend_on_dataset_and_fold():
    a = label_subset(CASES, 25, "Dataset800_X", 0)
    assert a != label_subset(CASES, 25, "Dataset800_X", 1)
    assert a != label_subset(CASES, 25, "Dataset801_Y", 0)


@pytest.mark.parametrize("percent", [0, 101])
def test_percent_outside_1_to_100_is_refused(percent):
    with pytest.raises(ValueError, match="between 1 and 100"):
        label_subset(CASES, percent, "D", 0)
    with pytest.raises(SystemExit, match=f"between 1 and 100, got {percent}"):
        variants.parse_variant(f"nnUNetTrainer_labels{percent}")


def test_label_variants_combine_with_epochs_and_every_base():
    for base in ("VisMAETrainer", "VisMAETrainerScratch", "nnUNetTrainer"):
        cls, settings = variants.parse_variant(f"{base}_labels25_100epochs")
        assert cls.__name__ == base and settings == {"labels": 25, "epochs": 100}


class _FakeTrainer:
    """Just what the variant's do_split touches."""

    def __init__(self, output_folder):
        self.output_folder, self.fold, self.logged = str(output_folder), 0, []
        self.plans_manager = type("P", (), {"dataset_name": "Dataset800_X"})()

    def print_to_log_file(self, *args):
        self.logged.append(" ".join(map(str, args)))


def test_variant_split_subsets_training_cases_only_and_writes_them(tmp_path, monkeypatch):
    cls = variants.make_variant("nnUNetTrainer_labels10")
    monkeypatch.setattr(cls.__mro__[1], "do_split", lambda self: (CASES[:30], CASES[30:]))
    trainer = _FakeTrainer(tmp_path)
    train, val = cls.do_split(trainer)
    assert val == CASES[30:] and len(train) == 3 and set(train) <= set(CASES[:30])
    written = (tmp_path / "label_subset.json").read_text()
    assert all(case in written for case in train) and '"percent": 10' in written
