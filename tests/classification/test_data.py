"""Inputs: CSV and class folders, clear errors for bad rows, stratified split, nested subsets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnunetv2_vismae.classification.cli import main
from nnunetv2_vismae.classification.data import (
    check_known_labels,
    load_samples,
    stratified_label_subset,
    stratified_split,
)
from nnunetv2_vismae.classification.errors import ClassificationError


def write_png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / "img" / name)
    return tmp_path


def test_csv_paths_are_relative_to_the_csv(images):
    (images / "labels.csv").write_text("image,label\nimg/b.png,yes\n\nimg/a.png,no\n")
    samples = load_samples(str(images / "labels.csv"))
    assert [(Path(s.path).name, s.label) for s in samples] == [("a.png", "no"), ("b.png", "yes")]
    assert all(Path(s.path).is_absolute() for s in samples)


def test_class_folders_give_labels_and_predict_folders_may_have_none(tmp_path):
    write_png(tmp_path / "train" / "benign" / "x.png")
    write_png(tmp_path / "train" / "malignant" / "sub" / "y.png")
    (tmp_path / "train" / "benign" / "notes.txt").write_text("ignored")
    samples = load_samples(str(tmp_path / "train"))
    assert [(Path(s.path).name, s.label) for s in samples] == [("x.png", "benign"), ("y.png", "malignant")]
    write_png(tmp_path / "new" / "z.png")
    assert [s.label for s in load_samples(str(tmp_path / "new"), require_labels=False)] == [None]
    with pytest.raises(ClassificationError, match="no class subfolders"):
        load_samples(str(tmp_path / "new"))


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "image,label\nimg/a.png,no\nimg/missing.png,yes\n",
            r"labels.csv line 3: image file .*missing.png does not exist",
        ),
        ("image,label\nimg/a.png,no\nimg/b.png,\n", r"labels.csv line 3: the label column is empty"),
        ("image,label\nimg/a.txt,no\n", r"labels.csv line 2: a.txt is not a supported image file"),
        ("", r"labels.csv is empty"),
        ("image,label\n", r"labels.csv has a header but no image rows"),
        ("img/a.png,no\n", r"labels.csv line 1: header 'img/a.png,no' lacks the columns image and label"),
    ],
)
def test_bad_rows_name_the_row(images, content, message):
    (images / "labels.csv").write_text(content)
    with pytest.raises(ClassificationError, match=message):
        load_samples(str(images / "labels.csv"))


def test_unknown_label_names_the_row(images):
    (images / "val.csv").write_text("image,label\nimg/a.png,no\nimg/c.png,maybe\n")
    with pytest.raises(ClassificationError, match=r"val.csv line 3: label 'maybe' is not one of the classes no, yes"):
        check_known_labels(load_samples(str(images / "val.csv")), ["no", "yes"])


def test_cli_reports_a_bad_row_in_one_sentence_without_traceback(images, capsys):
    (images / "labels.csv").write_text("image,label\nimg/a.png,no\nimg/gone.png,yes\n")
    assert main(["train", "-i", str(images / "labels.csv"), "-o", str(images / "out")]) == 2
    err = capsys.readouterr().err
    assert "labels.csv line 3: image file" in err and "gone.png does not exist" in err
    assert "Traceback" not in err and not (images / "out").exists()


def samples_of(counts: dict, tmp_path: Path):
    lines = ["image,label"]
    for label, n in counts.items():
        for i in range(n):
            write_png(tmp_path / label / f"{i:03d}.png")
            lines.append(f"{label}/{i:03d}.png,{label}")
    (tmp_path / "all.csv").write_text("\n".join(lines))
    return load_samples(str(tmp_path / "all.csv"))


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    samples = samples_of({"a": 30, "b": 10}, tmp_path)
    train, val = stratified_split(samples, 0.2, seed=3)
    assert Counter(s.label for s in val) == {"a": 6, "b": 2}
    assert not {s.path for s in train} & {s.path for s in val} and len(train) + len(val) == 40
    assert stratified_split(samples, 0.2, seed=3) == (train, val)
    assert stratified_split(samples, 0.2, seed=4)[1] != val


def test_label_subsets_are_nested_stratified_and_seeded(tmp_path):
    samples = samples_of({"a": 30, "b": 10}, tmp_path)
    subsets = {p: stratified_label_subset(samples, p, seed=0) for p in (10, 25, 50, 100)}
    assert [Counter(s.label for s in subsets[p]) for p in (10, 50, 100)] == [
        {"a": 3, "b": 1},
        {"a": 15, "b": 5},
        {"a": 30, "b": 10},
    ]
    paths = {p: {s.path for s in subset} for p, subset in subsets.items()}
    assert paths[10] <= paths[25] <= paths[50] <= paths[100]
    assert stratified_label_subset(samples, 25, seed=0) == subsets[25]
    assert {s.path for s in stratified_label_subset(samples, 25, seed=1)} != paths[25]
    with pytest.raises(ClassificationError, match="between 1 and 100"):
        stratified_label_subset(samples, 0, seed=0)
