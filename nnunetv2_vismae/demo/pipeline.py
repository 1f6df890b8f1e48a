"""``nnUNetv2_vismae_demo``: the whole pipeline on the embedded phantom dataset, as a user runs it.

generate phantoms -> nnUNetv2_plan_and_preprocess -> nnUNetv2_vismae_pretrain (unlabeled pool)
-> nnUNetv2_vismae_benchmark (vanilla nnU-Net, and each pretrained arm with its scratch twin, at
several label fractions) -> report.md and label_efficiency.png (-> styles.md, Dice by appearance style). The
``--3d`` presets run the same steps on phantom volumes with nnU-Net's 3d_fullres configuration and every arm:
nnU-Net's own network and the 3D Swin (Swin3dUNet), each pretrained and from scratch; both encoders pretrain on the
unlabeled pool of volumes, each volume preprocessed as nnU-Net preprocessed the training cases. The
phantoms and styles.md are made in this process, every other step by a console command in a child process; the
steps' logs are in the output folder, and rerunning resumes (finished steps are skipped).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from tqdm import tqdm

from nnunetv2_vismae.benchmark import arms as benchmark_arms
from nnunetv2_vismae.benchmark import style_report
from nnunetv2_vismae.errors import StepFailed, UserError
from nnunetv2_vismae.io.atomic import write_bytes_atomic
from nnunetv2_vismae.io.nnunet import (
    CONFIGURATION_2D,
    CONFIGURATION_3D,
    command_environment,
    make_folders,
    run_logged,
)
from nnunetv2_vismae.io.run_files import ENCODER_FILE
from nnunetv2_vismae.phantoms.generator import STYLES, UNLABELED_FOLDER, generate_dataset
from nnunetv2_vismae.phantoms.volumes import VOLUME_STYLES, generate_volumes

DATASET_ID = 800
DATASET = f"Dataset{DATASET_ID}_VisMAEPhantoms"
VOLUMES_ID = 810  # the --3d presets' dataset: its own id, so that nnU-Net's folders never mix the two
VOLUMES_DATASET = f"Dataset{VOLUMES_ID}_VisMAEPhantoms3D"


ARMS = ("nnunet", "cnn-mae", "cnn-scratch", "vismae", "scratch")
SWIN_ARMS = ("nnunet", "vismae", "scratch")  # the best pretrained arm and its twin; the CNN's pretraining adds time


@dataclass(frozen=True)
class DemoSize:
    """How much data and compute one demo run spends."""

    name: str  # the benchmark step and its output folder OUT/<name>
    num_train: int
    num_unlabeled: int
    num_test: int  # held-out phantoms (imagesTs / labelsTs), never trained or pretrained on
    test: bool  # score every run on them (benchmark --test) instead of on fold 0's validation cases
    image_size: int  # phantoms are image_size x image_size pixels; nnU-Net plans that patch
    encoder: tuple[str, ...]  # nnUNetv2_vismae_pretrain flags for the Swin encoder (the 3D Swin for volumes)
    pretrain_steps: int  # per encoder family
    pretrain_batch: int
    labels: tuple[int, ...]
    arms: tuple[str, ...]
    epochs: int
    iters: int
    parallel: int = 1  # trainings at once (benchmark --executor local --max-parallel), each on its share of the cores
    labeled_styles: tuple[str, ...] = STYLES  # styles of the labeled cases; test set and pool have all of them
    preset: str = "default"  # the command line's name for it
    slices: int = 0  # 0: 2D phantoms; else volumes of slices x image_size x image_size voxels, nnU-Net's 3d_fullres
    # a GPU consumes 3D batches faster than one process augments them: the GPU study leaves nnU-Net its augmentation
    # workers and the pretraining its loader workers
    augment_in_process: bool = True
    pretrain_workers: int = 1


# what the steps before the benchmark (phantoms, preprocessing, encoders) are made from: presets that agree on these
# share a folder, and the steps one of them finished there are the other's
SHARED_SETTINGS = (
    "num_train",
    "num_unlabeled",
    "num_test",
    "image_size",
    "encoder",
    "pretrain_steps",
    "pretrain_batch",
    "labeled_styles",
    "slices",
)
PRESET_FILE = "preset.txt"  # in the output folder: the preset whose phantoms and encoders it holds


SWIN_ENCODER = ("--embed-dim", "48", "--depths", "2", "2", "2", "2", "--heads", "2", "4", "8", "16", "--window", "4")
QUICK = DemoSize(
    "benchmark",
    num_train=20,
    num_unlabeled=200,
    num_test=0,
    test=False,
    image_size=64,
    encoder=("--embed-dim", "24", "--depths", "1", "1", "1", "1", "--heads", "1", "2", "3", "6", "--window", "4"),
    pretrain_steps=30,
    pretrain_batch=8,
    labels=(25,),  # every arm at 25%, nnU-Net also at 100% (the benchmark's reference): four runs
    arms=SWIN_ARMS,
    epochs=1,
    iters=10,
    parallel=2,  # two at once: a run this short mostly waits for processes to start (four at once: slower)
    preset="quick",
)
# 800 iterations: vanilla nnU-Net at 100% labels learns every organ on fold 0's validation cases, though not yet
# the spleen on the study's 200 test cases (docs/results/study-800.md).
DEFAULT = DemoSize(
    "benchmark",
    num_train=60,
    num_unlabeled=600,
    num_test=200,
    test=False,
    image_size=64,
    encoder=SWIN_ENCODER,
    pretrain_steps=300,
    pretrain_batch=16,
    labels=(10,),
    arms=SWIN_ARMS,
    epochs=16,
    iters=50,
)
# The study: every arm and twin at three fractions, scored on the test set, at 2,400 iterations, where vanilla
# nnU-Net has learned every organ of the test set and 25% of the labels is clearly short of 100%
# (docs/results/budget.md). Two trainings side by side on one thread each do 1.1x (two nnU-Net runs) to 1.4x
# (nnU-Net beside a Swin run) the work of one on two threads (2-core AMD EPYC).
STUDY = replace(DEFAULT, name="study", test=True, labels=(5, 10, 25), arms=ARMS, epochs=48, parallel=2, preset="study")
# Appearance shift, where the literature expects pretraining to pay most: labels only in CT and MR T1, unlabeled
# pool and test set in all four styles; every arm at 10% and nnU-Net at 100%, at the study's budget.
SHIFT = replace(STUDY, name="shift", labels=(10,), labeled_styles=("ct", "mr_t1"), preset="shift")
PRESETS = {size.preset: size for size in (QUICK, DEFAULT, STUDY, SHIFT)}

# --3d: a smoke test of the 3D pipeline on a CPU (nnU-Net's 3D step takes 1 to 2 s at 16x32x32 voxels on 2 cores,
# so no preset that learns the organs fits a CPU), and a study sized for one GPU
QUICK_3D = DemoSize(
    "benchmark",
    num_train=10,
    num_unlabeled=10,  # the encoder pretrains on these only, preprocessed like the dataset: never on a scored case
    num_test=0,
    test=False,
    image_size=32,
    slices=16,
    # a tiny 3D Swin; patches of 1x2x2 voxels (3x2x2 mm on the 3 mm slices) make its total stride 16x32x32,
    # nnU-Net's whole 16x32x32 patch, which planning keeps for Swin3dUNet
    encoder=tuple("--embed-dim 24 --depths 1 1 1 1 --heads 1 2 3 6 --window 4 --encoder-patch 1 2 2".split()),
    pretrain_steps=20,
    pretrain_batch=2,
    labels=(50,),  # every arm at 50% of fold 0's 8 training cases, nnU-Net also at 100%: six runs
    arms=ARMS,
    epochs=1,
    iters=5,
    parallel=2,
    labeled_styles=VOLUME_STYLES,
    preset="3d",
)
# The 3D study on one GPU, one training at a time: every arm and twin at three fractions of 48 training cases,
# scored on 60 held-out volumes; 40x96x96 voxels of 3x1x1 mm. Its 3D Swin is SwinUNETR's size (feature 48, depths
# 2 2 2 2, heads 3 6 12 24) on patches of 1x2x2 voxels; nnU-Net's 40x96x96 patch becomes 32x96x96 for the Swin
# (a multiple of its 16x32x32 stride), whose stage grids 32x48x48 ... 4x6x6 windows of 4x6x6 patches (12 mm on every
# axis) tile exactly, where SwinUNETR's 7 would be padded on every stage (ours pads a window, never shrinks it)
STUDY_3D = replace(
    QUICK_3D,
    name="study",
    num_train=60,
    num_unlabeled=200,
    num_test=60,
    test=True,
    image_size=96,
    slices=40,
    encoder=tuple("--embed-dim 48 --depths 2 2 2 2 --heads 3 6 12 24 --window 4 6 6 --encoder-patch 1 2 2".split()),
    pretrain_steps=2000,
    pretrain_batch=4,
    labels=(5, 10, 25),
    epochs=48,
    iters=50,
    parallel=1,
    augment_in_process=False,
    pretrain_workers=4,
    preset="3d_study",
)
VOLUME_PRESETS = {size.preset: size for size in (QUICK_3D, STUDY_3D)}


def in_volumes(size: DemoSize) -> DemoSize:
    """The ``--3d`` preset of a 2D preset: the smoke test for the default and ``--quick``, the GPU study for
    ``--study``; ``--shift`` has none (the volumes are labeled in every style)."""
    if size is SHIFT:
        raise UserError(
            "--shift has no 3D preset (the phantom volumes are labeled in every style); run --3d or --3d --study."
        )
    return STUDY_3D if size is STUDY else QUICK_3D


def shares_data(a: DemoSize, b: DemoSize) -> bool:
    return all(getattr(a, key) == getattr(b, key) for key in SHARED_SETTINGS)


def default_folder(size: DemoSize) -> str:
    """./vismae_demo for the default demo and the presets that share its data, else ./vismae_demo_<preset>."""
    return "vismae_demo" if shares_data(size, DEFAULT) else f"vismae_demo_{size.preset}"


def nnunet_environment(out: Path) -> dict:
    """Every step's environment: nnU-Net's folders under ``out``, our trainers found, one export process,
    no torch.compile."""
    # nnUNetv2_predict without worker processes (nnUNet_npp/nps 0): 100 phantoms on a 2-core CPU in 30 s instead of 55
    return command_environment(
        **make_folders(out), nnUNet_def_n_proc="1", nnUNet_compile="f", nnUNet_npp="0", nnUNet_nps="0"
    )


def step_environment(name: str, env: dict, in_process: bool = True) -> dict:
    """Training steps augment in-process (nnUNet_n_proc_DA=0: worker processes only compete for a
    CPU's few cores) unless not ``in_process``; planning runs without the variable, a user's own included,
    because nnU-Net's planner takes it as its torch thread count and fails at 0."""
    if name == "preprocess":
        return {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}
    return dict(env, nnUNet_n_proc_DA="0") if in_process else env


def run_command(name: str, cmd: list[str], env: dict, logs: Path) -> None:
    """Run one console script of this environment, its output in ``logs/<name>.log``."""
    log = logs / f"{name}.log"
    code = run_logged(cmd, env, log, mode="w")
    if code != 0:
        raise StepFailed(f"step '{name}' failed (exit {code}); see {log}")


def report_styles(report_dir: Path, phantoms_json: Path, log: Path) -> None:
    """The styles step in this process: ``report_dir/styles.md``, and its log as the equivalent command writes it
    (that command first, for a user to rerun it, then the path of the report)."""
    # this interpreter: an environment without a venv may have no "python" beside it or on PATH
    command = [sys.executable, "-m", style_report.__name__, str(report_dir), str(phantoms_json)]
    log.write_text(f"$ {shlex.join(command)}\n")
    written = style_report.write_style_report(report_dir, phantoms_json)
    with open(log, "a") as handle:
        handle.write(f"{written}\n")


def training_flags(size: DemoSize, device: str) -> list[str]:
    """The flags every pretraining step of the demo shares: its length, batch, learning rate, loader, device."""
    return [
        "--steps",
        str(size.pretrain_steps),
        "--batch-size",
        str(size.pretrain_batch),
        "--lr",
        "1e-3",
        "--workers",
        str(size.pretrain_workers),
        "-device",
        device,
    ]


def benchmark_command(size: DemoSize, out: Path, device: str, dataset: list[str], pretrained: list[Path]) -> list[str]:
    """``nnUNetv2_vismae_benchmark`` on ``dataset`` (its -d and, in 3D, -c flags) with the pretrained encoders."""
    command = [
        "nnUNetv2_vismae_benchmark",
        *dataset,
        "-f",
        "0",
        "--labels",
        *map(str, size.labels),
        "--arms",
        *size.arms,
        "--pretrained",
        *map(str, pretrained),
        "--epochs",
        str(size.epochs),
        "--iters",
        str(size.iters),
        "-device",
        device,
        "-o",
        str(out / size.name),
    ] + (["--test"] if size.test else [])
    if size.parallel > 1:
        command += ["--executor", "local", "--max-parallel", str(size.parallel)]
    return command


def styles_step(size: DemoSize, out: Path, raw: Path) -> tuple[str, object]:
    return "styles", partial(report_styles, out / size.name, raw / "phantoms.json", out / "logs" / "styles.log")


def steps(size: DemoSize, out: Path, device: str) -> list[tuple[str, object]]:
    """(name, action) pairs; an action is a command list or an in-process call (a partial), skipped when done."""
    if size.slices:
        return volume_steps(size, out, device)
    raw = out / "nnUNet_raw" / DATASET
    pretrain_dir, pretrain_cnn_dir = out / "pretrain", out / "pretrain_cnn"
    pretraining = [
        "-i",
        str(raw / UNLABELED_FOLDER),
        "--patch-size",
        str(size.image_size),
        *training_flags(size, device),
    ]  # only the unlabeled pool: never a case that is scored
    pretrained = [pretrain_dir / ENCODER_FILE]
    plan = [
        (
            "generate",
            partial(
                generate_dataset,
                out / "nnUNet_raw",
                DATASET_ID,
                num_train=size.num_train,
                num_test=size.num_test,
                num_unlabeled=size.num_unlabeled,
                size=size.image_size,
                labeled_styles=size.labeled_styles,
            ),
        ),
        # one process each for nnU-Net's fingerprint and preprocessing: its default of 8 spawned fingerprint
        # workers took 51 s instead of 29 s on a 2-core CPU for 8 small images (their imports, not the work)
        (
            "preprocess",
            ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", CONFIGURATION_2D, "-np", "1", "-npfp", "1"],
        ),
        ("pretrain", ["nnUNetv2_vismae_pretrain", "-o", str(pretrain_dir), *size.encoder, *pretraining]),
    ]
    cnn = benchmark_arms.ARMS["cnn-mae"]  # pretrained from the cnn family's own checkpoint
    if cnn.name in size.arms:
        plan.append(
            (
                "pretrain_cnn",
                [
                    "nnUNetv2_vismae_pretrain",
                    "--encoder",
                    cnn.family_for(2),
                    "--plans-of",
                    str(DATASET_ID),
                    "-o",
                    str(pretrain_cnn_dir),
                    "--mask-ratio",
                    "0.6",
                    *pretraining,
                ],
            )
        )
        pretrained.append(pretrain_cnn_dir / ENCODER_FILE)
    plan.append((size.name, benchmark_command(size, out, device, ["-d", str(DATASET_ID)], pretrained)))
    if size.test:
        plan.append(styles_step(size, out, raw))
    return plan


def volume_steps(size: DemoSize, out: Path, device: str) -> list[tuple[str, object]]:
    """The ``--3d`` presets' steps: volumes, nnU-Net's 3d_fullres, nnU-Net's own encoder and the 3D Swin pretrained
    on the unlabeled pool preprocessed as nnU-Net preprocessed the dataset (never on a case that is scored)."""
    raw = out / "nnUNet_raw" / VOLUMES_DATASET
    dataset = ["-d", str(VOLUMES_ID), "-c", CONFIGURATION_3D]
    cnn, swin = benchmark_arms.ARMS["cnn-mae"], benchmark_arms.ARMS["vismae"]
    # each step's folder, family and own flags; the Swin's comes last, so an older folder gains it without the cnn
    # step's running again (run_demo reruns the steps after one that ran)
    encoders = {
        "pretrain_cnn": (cnn.family_for(3), ["--mask-ratio", "0.6"]),
        "pretrain": (swin.family_for(3), list(size.encoder)),
    }
    generate = partial(
        generate_volumes,
        out / "nnUNet_raw",
        VOLUMES_ID,
        num_train=size.num_train,
        num_test=size.num_test,
        num_unlabeled=size.num_unlabeled,
        shape=(size.slices, size.image_size, size.image_size),
    )
    unlabeled = ["-i", str(raw / UNLABELED_FOLDER), "--preprocess-like", str(VOLUMES_ID)]
    plan = [
        ("generate", generate),
        ("preprocess", ["nnUNetv2_plan_and_preprocess", *dataset, "-np", "1", "-npfp", "1"]),
    ]
    for name, (family, flags) in encoders.items():
        pretrain = ["nnUNetv2_vismae_pretrain", "--encoder", family, "--plans-of", *dataset[1:], *unlabeled]
        plan.append((name, [*pretrain, "-o", str(out / name), *flags, *training_flags(size, device)]))
    pretrained = [out / name / ENCODER_FILE for name in encoders]
    plan.append((size.name, benchmark_command(size, out, device, dataset, pretrained)))
    return plan + ([styles_step(size, out, raw)] if size.test else [])


def check_same_phantoms(out: Path, size: DemoSize) -> None:
    """A folder's steps are reused only for the phantoms they were made from (the study reuses the default
    demo's; the shift preset labels other styles)."""
    meta = out / "nnUNet_raw" / DATASET / "phantoms.json"
    if not meta.is_file():
        return
    try:
        labeled = tuple(json.loads(meta.read_text()).get("labeled_styles", STYLES))
    except (ValueError, AttributeError):
        raise UserError(f"{meta} is not the demo's phantom description; run the demo in another folder (-o).") from None
    if labeled != size.labeled_styles:
        raise UserError(
            f"{out} holds phantoms labeled in the styles {', '.join(labeled)}, not {', '.join(size.labeled_styles)}; "
            "run this preset in another folder (-o)."
        )


def claim_for_preset(out: Path, size: DemoSize) -> None:
    """Record ``size``'s preset in a new folder; refuse a folder whose steps another preset's data made."""
    record = out / PRESET_FILE
    if not record.is_file():
        check_same_phantoms(out, size)  # a folder from before the record
        out.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(record, f"{size.preset}\n".encode())
        return
    found = record.read_text(errors="replace").strip()
    known = {**PRESETS, **VOLUME_PRESETS}
    if found not in known:
        raise UserError(
            f"{record} names no demo preset ({', '.join(PRESETS)}); nor a --3d one ({', '.join(VOLUME_PRESETS)}); "
            "run the demo in another folder (-o)."
        )
    if not shares_data(known[found], size):
        raise UserError(
            f"Folder {out} holds the {found} demo, whose phantoms or encoder differ from the {size.preset} demo's; "
            "run it in another folder (-o)."
        )


def run_demo(out: Path, size: DemoSize, device: str = "cpu") -> Path:
    out = out.resolve()
    claim_for_preset(out, size)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = nnunet_environment(out)
    done = out / "steps_done.txt"
    finished = set(done.read_text().split()) if done.exists() else set()
    plan = steps(size, out, device)
    start = time.time()
    # once a step runs, the steps after it run again, as they may read what it made (in a folder from before a
    # preset gained a step, the benchmark then trains the new arms, its finished runs skipped)
    rerun = False
    with tqdm(plan, desc="demo", unit="step") as bar:
        for name, action in bar:
            bar.set_postfix_str(name)
            if name in finished and not rerun:
                continue
            rerun = True
            if callable(action):
                action()
            else:
                run_command(name, action, step_environment(name, env, size.augment_in_process), logs)
            with open(done, "a") as handle:
                handle.write(name + "\n")
    print(f"Demo finished in {(time.time() - start) / 60:.1f} min.")
    return out / size.name
