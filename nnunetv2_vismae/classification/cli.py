"""``nnUNetv2_vismae_classify train | predict | benchmark | example``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from nnunetv2_vismae.classification.augment import FLIPS
from nnunetv2_vismae.classification.errors import ClassificationError
from nnunetv2_vismae.classification.model import SMALL_ENCODER
from nnunetv2_vismae.classification.train import MODES, TrainSettings
from nnunetv2_vismae.flags import OneSentenceParser, console_script, non_negative_float, positive_float, positive_int
from nnunetv2_vismae.io.folders import check_output_folder

PROG = "nnUNetv2_vismae_classify"


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by train and benchmark."""
    p.add_argument(
        "-i",
        required=True,
        help="training images: a CSV with image,label rows (paths relative to "
        "the CSV) or a folder with one subfolder of images per class",
    )
    p.add_argument("--val", help="validation images (CSV or folder); default: a stratified split of -i")
    p.add_argument("--val-fraction", type=float, default=0.2, help="without --val (default 0.2)")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="finetune",
        help="finetune: whole network, layer-wise lr decay; linear: frozen encoder (default finetune)",
    )
    p.add_argument("--epochs", type=positive_int, default=50, help="default 50 (VIS-MAE)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default 5e-4 finetune, 5e-3 linear)")
    p.add_argument(
        "--layer-decay",
        type=float,
        default=0.75,
        help="finetune with --pretrained: encoder lr factor per block below the head (default 0.75)",
    )
    p.add_argument("--weight-decay", type=non_negative_float, default=0.05)
    p.add_argument(
        "--size", type=positive_int, default=224, help="input size in pixels, a multiple of 32 (default 224)"
    )
    p.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=0, help="volumes: slice across this axis")
    p.add_argument("--slice-index", type=int, help="volumes: slice number (default: the middle one)")
    p.add_argument(
        "--flip",
        choices=tuple(FLIPS),
        default="none",
        help="random flips allowed in augmentation (default none: laterality matters in anatomy)",
    )
    p.add_argument("--seed", type=int, default=0, help="split, label subsets, initialisation, augmentation")
    p.add_argument("-device", default="cpu", choices=("cpu", "cuda"))
    enc = p.add_argument_group(
        "encoder without --pretrained (a small Swin by default; "
        "with --pretrained the checkpoint's configuration is used)"
    )
    enc.add_argument("--embed-dim", type=positive_int, default=SMALL_ENCODER.embed_dim)
    enc.add_argument("--depths", type=positive_int, nargs="+", default=list(SMALL_ENCODER.depths))
    enc.add_argument("--heads", type=positive_int, nargs="+", default=list(SMALL_ENCODER.num_heads))
    enc.add_argument("--window", type=positive_int, default=SMALL_ENCODER.window_size)
    enc.add_argument("--patch-size", type=positive_int, default=SMALL_ENCODER.patch_size)


def encoder_flags(args) -> dict:
    try:
        config = type(SMALL_ENCODER)(
            embed_dim=args.embed_dim,
            depths=args.depths,
            num_heads=args.heads,
            window_size=args.window,
            patch_size=args.patch_size,
        )
    except ValueError as e:
        raise ClassificationError(str(e)) from None
    return config.to_json()


def settings_from(args, out: str, pretrained: str | None, labels: int) -> TrainSettings:
    return TrainSettings(
        train=args.i,
        out=out,
        val=args.val,
        val_fraction=args.val_fraction,
        pretrained=pretrained,
        labels=labels,
        mode=args.mode,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        layer_decay=args.layer_decay,
        size=args.size,
        slice_axis=args.slice_axis,
        slice_index=args.slice_index,
        flip=args.flip,
        seed=args.seed,
        device=args.device,
        encoder=encoder_flags(args),
    )


def run_train(args):
    from nnunetv2_vismae.classification.train import train

    metrics = train(settings_from(args, args.o, args.pretrained, args.labels))
    print(
        f"Best epoch {metrics['best_epoch']}: validation AUC {metrics['auc']:.4f}, accuracy "
        f"{metrics['accuracy']:.4f}. Model: {args.o}/model, report: {args.o}/report.md"
    )


def run_predict(args):
    from nnunetv2_vismae.classification.predict import predict

    predict(args.m, args.i, args.o, args.device, args.batch_size)


def run_example(args):
    from nnunetv2_vismae.phantoms.classification_task import write_style_task

    try:
        written = write_style_task(
            args.o, args.num_train, args.num_test, args.size, args.seed, args.format, args.layout
        )
    except ValueError as e:  # e.g. a size the phantom generator refuses
        raise ClassificationError(f"{e}.") from None
    print(f"Phantom style task (classes ct, mr_t1, mr_t2, us): training {written['train']}, test {written['test']}")


def run_benchmark(args):
    """One TrainSettings for all runs; a bad checkpoint stops here, before any run."""
    from nnunetv2_vismae.classification.benchmark import benchmark
    from nnunetv2_vismae.classification.model import read_pretrained

    base = settings_from(args, args.o, args.pretrained, 100)
    read_pretrained(args.pretrained)
    out = Path(args.o)
    benchmark(base, args.arms, args.labels, args.seeds, out, args.test, args.command_line)
    print(f"Report: {out / 'report.md'}\nPlot:   {out / 'label_efficiency.png'}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneSentenceParser(prog=PROG, description="Classification fine-tuning of the (pretrained) Swin encoder.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier; the best epoch on validation is saved as OUT/model")
    add_training_flags(t)
    t.add_argument("-o", required=True, help="output folder (rerun the same command to resume)")
    t.add_argument("--pretrained", help="encoder checkpoint (encoder.safetensors); default: from scratch")
    t.add_argument(
        "--labels",
        type=int,
        default=100,
        help="percent of every class's training images to use (nested, seeded subsets; default 100)",
    )
    t.set_defaults(func=run_train)

    p = sub.add_parser("predict", help="probabilities and predicted class for a CSV or folder of images")
    p.add_argument("-m", required=True, help="the model folder a training run wrote (OUT/model)")
    p.add_argument(
        "-i", required=True, help="CSV with an image column (label optional) or a folder (class subfolders or images)"
    )
    p.add_argument("-o", required=True, help="output folder for predictions.csv (and metrics when labels are known)")
    p.add_argument("-device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.set_defaults(func=run_predict)

    b = sub.add_parser("benchmark", help="label efficiency: pretrained vs from scratch at several label fractions")
    add_training_flags(b)
    b.add_argument("-o", required=True, help="output folder (runs/, results.csv, report.md, label_efficiency.png)")
    b.add_argument("--pretrained", required=True, help="encoder checkpoint of the pretrained arm")
    b.add_argument("--labels", type=int, nargs="+", default=[10, 25, 50, 100], help="label percentages")
    b.add_argument("--arms", nargs="+", choices=("pretrained", "scratch"), default=["pretrained", "scratch"])
    b.add_argument("--seeds", type=int, nargs="+", default=[0], help="repeat every run with these training seeds")
    b.add_argument("--test", help="also score every run's model on this labeled CSV or folder")
    b.set_defaults(func=run_benchmark)

    e = sub.add_parser("example", help="write the embedded phantom style task (CT, MR T1, MR T2, US)")
    e.add_argument("-o", required=True, help="output folder")
    e.add_argument("--num-train", type=int, default=160)
    e.add_argument("--num-test", type=int, default=80)
    e.add_argument("--size", type=int, default=64, help="image size in pixels (at least 32)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--format", choices=("nii", "png"), default="nii")
    e.add_argument(
        "--layout",
        choices=("csv", "folders"),
        default="csv",
        help="csv: train.csv/test.csv + images/; folders: train/<class>/, test/<class>/",
    )
    e.set_defaults(func=run_example)
    return parser


@console_script(PROG, resumes=True)
def main(argv=None):
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join([PROG, *(sys.argv[1:] if argv is None else argv)])
    check_output_folder(args.o)  # before any image is read
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
