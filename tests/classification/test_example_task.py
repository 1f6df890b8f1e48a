"""The embedded style task: deterministic, balanced, and readable by training in both layouts."""

from __future__ import annotations

from collections import Counter

import numpy as np

from nnunetv2_vismae.classification.cli import main
from nnunetv2_vismae.classification.data import load_samples
from nnunetv2_vismae.io.images import read_image


def test_example_is_deterministic_balanced_and_stable_under_more_cases(tmp_path, capsys):
    assert main(["example", "-o", str(tmp_path / "a"), "--num-train", "8", "--num-test", "4", "--size", "32"]) == 0
    assert main(["example", "-o", str(tmp_path / "b"), "--num-train", "12", "--num-test", "4", "--size", "32"]) == 0
    a = load_samples(str(tmp_path / "a" / "train.csv"))
    assert Counter(s.label for s in a) == {"ct": 2, "mr_t1": 2, "mr_t2": 2, "us": 2}
    for sa in a:  # the first 8 cases are the same images when 12 are written
        twin = tmp_path / "b" / "images" / sa.path.rsplit("/", 1)[1]
        assert np.array_equal(read_image(sa.path), read_image(str(twin)))
    assert (
        main(
            [
                "example",
                "-o",
                str(tmp_path / "c"),
                "--num-train",
                "4",
                "--num-test",
                "0",
                "--size",
                "32",
                "--format",
                "png",
                "--layout",
                "folders",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    folders = load_samples(str(tmp_path / "c" / "train"))
    assert sorted(s.label for s in folders) == ["ct", "mr_t1", "mr_t2", "us"]
    assert all(s.path.endswith(".png") for s in folders)
