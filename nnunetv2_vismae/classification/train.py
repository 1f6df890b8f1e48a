"""``nnUNetv2_vismae_classify train``: fine-tune (or linearly probe) the encoder on labeled images.

Output folder::

    model/                     the best epoch (by validation AUC): model.safetensors + model.json
    state.pt                   full training state after the last finished epoch (resume)
    split.json                 training (after --labels) and validation images
    history.csv                per epoch: lr, training loss, validation loss, AUC, accuracy
    validation_predictions.csv the best model's probabilities on the validation images
    metrics.json report.md confusion_matrix.png training_curve.png

Every file is written atomically; rerunning the same command continues after the last finished
epoch, or just rewrites the outputs when the run is complete. A run locks its output folder
(``nnunetv2_vismae.io.lock``): a second run into the same folder is refused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from nnunetv2_vismae.architectures import SwinEncoderConfig
from nnunetv2_vismae.checkpoint.state import load_state, save_state
from nnunetv2_vismae.classification import report
from nnunetv2_vismae.classification.augment import Augmentation
from nnunetv2_vismae.classification.data import (
    Sample,
    check_known_labels,
    class_names,
    load_samples,
    stratified_label_subset,
    stratified_split,
)
from nnunetv2_vismae.classification.errors import ClassificationError
from nnunetv2_vismae.classification.inference import precision_context, predict_logits
from nnunetv2_vismae.classification.inputs import ZSCORE, InputSpec, load_inputs
from nnunetv2_vismae.classification.metrics import compute_metrics
from nnunetv2_vismae.classification.model import (
    SMALL_ENCODER,
    SwinClassifier,
    load_pretrained_encoder,
    read_pretrained,
    save_model_folder,
)
from nnunetv2_vismae.device import resolve_device
from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.io.lock import claim_output_folder
from nnunetv2_vismae.io.run_files import STATE_FILE
from nnunetv2_vismae.optim.parameter_groups import param_groups
from nnunetv2_vismae.optim.schedules import WarmupPolyLRScheduler

COMMAND = "nnUNetv2_vismae_classify train"
MODEL_DIR = "model"
MODES = ("finetune", "linear")
DEFAULT_LR = {"finetune": 5e-4, "linear": 5e-3}


@dataclass
class TrainSettings:
    """Everything a run depends on; a resumed run must have the same (device aside)."""

    train: str
    out: str
    val: str | None = None
    val_fraction: float = 0.2
    pretrained: str | None = None
    labels: int = 100
    mode: str = "finetune"
    epochs: int = 50
    batch_size: int = 32
    lr: float | None = None  # None: DEFAULT_LR[mode]
    weight_decay: float = 0.05
    layer_decay: float = 0.75  # finetune from --pretrained: encoder lr x this per block below the head
    warmup_fraction: float = 0.1
    size: int = 224
    slice_axis: int = 0
    slice_index: int | None = None
    flip: str = "none"
    seed: int = 0
    device: str = "cpu"
    encoder: dict = field(default_factory=SMALL_ENCODER.to_json)  # used without --pretrained
    normalization: dict = field(default_factory=lambda: dict(ZSCORE))  # without --pretrained

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    def resume_key(self) -> dict:
        d = asdict(self)
        d.pop("device")
        return d


@dataclass
class Data:
    classes: list[str]
    train: list[Sample]
    val: list[Sample]


def select_data(s: TrainSettings) -> Data:
    """Training images (the --labels subset) and validation images, labels checked."""
    samples = load_samples(s.train)
    if s.val:
        train, val = samples, load_samples(s.val)
    else:
        train, val = stratified_split(samples, s.val_fraction, s.seed)
    classes = class_names(samples)
    if len(classes) < 2:
        raise ClassificationError(f"{s.train} has only the class {classes[0]!r}; classification needs at least two.")
    check_known_labels(val, classes)
    if not val:
        raise ClassificationError("No validation images: give --val or a larger --val-fraction.")
    return Data(classes, stratified_label_subset(train, s.labels, s.seed), val)


def class_weights(train: list[Sample], classes: list[str]) -> torch.Tensor:
    """n / (k * n_c): every class weighs the same in the loss however many images it has."""
    counts = torch.tensor([sum(s.label == c for s in train) for c in classes], dtype=torch.float32)
    return counts.sum() / (len(classes) * counts.clamp(min=1))


def selection_score(metrics: dict, val_loss: float) -> tuple:
    """Best epoch: highest validation AUC, then accuracy, then lowest validation loss."""
    auc = metrics["auc"]
    return (-1.0 if math.isnan(auc) else auc, metrics["accuracy"], -val_loss)


class Run:
    """One training run: model, optimizer, data tensors and the state that makes it resumable."""

    def __init__(self, s: TrainSettings, log=print):
        self.s, self.log, self.out = s, log, Path(s.out)
        if s.mode not in MODES:
            raise ClassificationError(f"--mode must be one of {', '.join(MODES)}, got {s.mode!r}.")
        self.device = resolve_device(s.device)
        self.data = select_data(s)
        self.build_model()
        self.x_train = load_inputs(self.data.train, self.spec, "training images")
        self.x_val = load_inputs(self.data.val, self.spec, "validation images")
        self.y_train = torch.tensor([self.data.classes.index(x.label) for x in self.data.train])
        self.y_val = torch.tensor([self.data.classes.index(x.label) for x in self.data.val])
        self.loss = torch.nn.CrossEntropyLoss(weight=class_weights(self.data.train, self.data.classes).to(self.device))
        self.build_optimizer()
        self.generator = torch.Generator().manual_seed(s.seed)
        self.augment = Augmentation(flip=s.flip)
        self.epoch, self.history, self.best = 0, [], None

    def build_model(self):
        s = self.s
        torch.manual_seed(s.seed)
        if s.pretrained:
            checkpoint, config, norm = read_pretrained(s.pretrained)
        else:
            checkpoint, config, norm = None, SwinEncoderConfig.from_json(s.encoder), s.normalization
        if s.size % config.total_stride:
            raise ClassificationError(
                f"--size {s.size} is not a multiple of the encoder's total stride {config.total_stride}."
            )
        self.encoder_config = config
        self.spec = InputSpec(s.size, config.in_channels, norm, s.slice_axis, s.slice_index)
        self.model = SwinClassifier(config, len(self.data.classes))
        self.pretrained = load_pretrained_encoder(self.model, checkpoint, self.log) if checkpoint else None
        self.model.to(self.device)
        if s.mode == "linear":
            self.model.encoder.requires_grad_(False)

    def build_optimizer(self):
        s = self.s
        # layer decay keeps pretrained low-level features close to where pretraining left them; a
        # randomly initialised (or frozen) encoder has nothing to keep
        layer_decay = s.layer_decay if s.mode == "finetune" and self.pretrained else None
        groups = param_groups(self.model, s.weight_decay, layer_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=s.learning_rate, betas=(0.9, 0.999))
        self.steps_per_epoch = math.ceil(len(self.x_train) / s.batch_size)
        total = s.epochs * self.steps_per_epoch
        self.scheduler = WarmupPolyLRScheduler(self.optimizer, s.learning_rate, total, round(total * s.warmup_fraction))

    # ---------------------------------------------------------------------------- state
    def state(self) -> dict:
        return {
            "settings": self.s.resume_key(),
            "epoch": self.epoch,
            "history": self.history,
            "best": self.best,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
        }

    def save_state(self):
        save_state(self.out / STATE_FILE, self.state())

    def resume(self) -> bool:
        path = self.out / STATE_FILE
        if not path.is_file():
            return False
        state = load_state(path, "move it away to start again")
        if state["settings"] != self.s.resume_key():
            raise ClassificationError(
                f"{path} belongs to a run with other settings; use the original flags or another output folder."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.epoch, self.history, self.best = state["epoch"], state["history"], state["best"]
        return True

    # ---------------------------------------------------------------------------- loop
    def set_train_mode(self):
        self.model.train()
        if self.s.mode == "linear":
            self.model.encoder.eval()  # frozen features: no drop path

    def train_epoch(self, bar) -> float:
        self.set_train_mode()
        order = torch.randperm(len(self.x_train), generator=self.generator)
        total = 0.0
        for start in range(0, len(order), self.s.batch_size):
            idx = order[start : start + self.s.batch_size]
            x = self.augment(self.x_train[idx], self.generator).to(self.device)
            with precision_context(self.device):
                logits = self.model(x).float()
            loss = self.loss(logits, self.y_train[idx].to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * len(idx)
            bar.update(1)
        return total / len(order)

    def validate(self) -> tuple[torch.Tensor, float, dict]:
        logits = predict_logits(self.model, self.x_val, self.device, self.s.batch_size)
        val_loss = self.loss(logits.to(self.device), self.y_val.to(self.device)).item()
        return logits, val_loss, compute_metrics(self.y_val.numpy(), logits.softmax(1).numpy(), self.data.classes)

    def model_description(self, metrics: dict) -> dict:
        return {
            "classes": self.data.classes,
            "input": self.spec.to_json(),
            "encoder_config": self.encoder_config.to_json(),
            "mode": self.s.mode,
            "pretrained": self.pretrained,
            "labels_percent": self.s.labels,
            "best_epoch": self.epoch,
            "validation": {k: metrics[k] for k in ("auc", "accuracy", "balanced_accuracy", "f1_macro")},
        }

    def run_epoch(self, bar):
        lr = max(group["lr"] for group in self.optimizer.param_groups)  # the head's
        train_loss = self.train_epoch(bar)
        self.epoch += 1
        logits, val_loss, metrics = self.validate()
        self.history.append(
            {
                "epoch": self.epoch,
                "lr": lr,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_auc": metrics["auc"],
                "val_accuracy": metrics["accuracy"],
            }
        )
        score = selection_score(metrics, val_loss)
        if self.best is None or score > tuple(self.best["score"]):
            save_model_folder(self.out / MODEL_DIR, self.model, self.model_description(metrics))
            self.best = {"epoch": self.epoch, "score": list(score), "probabilities": logits.softmax(1)}
        self.save_state()
        bar.set_postfix(
            epoch=self.epoch, loss=f"{train_loss:.3f}", val_auc=f"{metrics['auc']:.3f}", best=self.best["epoch"]
        )

    def fit(self) -> dict:
        if self.resume():
            self.log(f"Resuming {self.out} after epoch {self.epoch} of {self.s.epochs}.")
        write_json_atomic(
            self.out / "split.json",
            {
                "classes": self.data.classes,
                "train": [x.path for x in self.data.train],
                "val": [x.path for x in self.data.val],
            },
        )
        remaining = max(0, self.s.epochs - self.epoch) * self.steps_per_epoch
        with tqdm(total=remaining, desc="Training", unit="step") as bar:
            while self.epoch < self.s.epochs:
                self.run_epoch(bar)
        return self.write_outputs()

    def write_outputs(self) -> dict:
        probabilities = self.best["probabilities"].numpy()
        metrics = compute_metrics(self.y_val.numpy(), probabilities, self.data.classes)
        metrics["best_epoch"] = self.best["epoch"]
        report.write_predictions_csv(
            self.out / "validation_predictions.csv", self.data.val, probabilities, self.data.classes
        )
        report.write_history_csv(self.out / "history.csv", self.history)
        report.write_training_curve(self.out / "training_curve.png", self.history, self.best["epoch"])
        settings = {
            **self.s.resume_key(),
            "num_train_images": len(self.data.train),
            "num_val_images": len(self.data.val),
            "pretrained_checkpoint": self.pretrained,
        }
        report.write_metrics(self.out, metrics, f"Validation of {self.out / MODEL_DIR}", settings)
        return metrics


def train(settings: TrainSettings, log=print) -> dict:
    """Train (or resume, or just report a finished run) and return the best epoch's validation metrics.
    The output folder is checked and locked before any image is read."""
    with claim_output_folder(settings.out, COMMAND, (MODEL_DIR,)):
        return Run(settings, log).fit()
