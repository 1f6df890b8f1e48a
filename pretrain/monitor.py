"""Run monitoring on rank 0: per-step ``log.csv`` and progress bar, the ``loss.png`` curve, reconstruction previews."""

from __future__ import annotations

import csv
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from nnunetv2_vismae.io.atomic import atomic_path, writing
from pretrain.collapse import rank_columns, rank_line

LOG_FIELDS = ("step", "loss", "lr", "img_per_s", "elapsed_s")


class CsvLog:
    """Appends one row per optimizer step; on resume, drops rows after the resumed step. Columns after
    ``LOG_FIELDS`` (``extra``) may be empty in a row."""

    def __init__(self, path: str, resume_step: int, extra: tuple[str, ...] = ()):
        self.path = path
        rows = self.read(path) if os.path.isfile(path) else []
        complete = [r for r in rows if all(r.get(k) for k in LOG_FIELDS)]  # a kill -9 can cut the last line
        rows = [r for r in complete if r["step"].isdigit() and int(r["step"]) <= resume_step]
        fields = (*LOG_FIELDS, *extra)
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:  # a kill here keeps the old log
            writer = csv.DictWriter(f, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fields)

    @staticmethod
    def read(path: str) -> list[dict]:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    def write(self, **row) -> None:
        with writing(self.path):  # a full disk: WriteError naming the log
            self._writer.writerow(row)
            self._file.flush()

    def close(self) -> None:
        with writing(self.path):
            self._file.close()


class Progress:
    """The report of each optimizer step: a ``log.csv`` row and the progress bar (loss, lr, images/s
    smoothed), on rank 0 only; with the effective feature rank of each of the encoder's stages
    (``stage_channels``) in columns rank_s1... and a line, at the steps it is measured."""

    def __init__(
        self,
        out: str,
        step: int,
        total_steps: int,
        effective_batch: int,
        is_main: bool,
        stage_channels: list[int] = (),
    ):
        self.effective_batch, self.stage_channels = effective_batch, list(stage_channels)
        self.rank_columns = rank_columns(len(self.stage_channels))
        self.log = CsvLog(os.path.join(out, "log.csv"), step, tuple(self.rank_columns)) if is_main else None
        self.bar = tqdm(
            total=total_steps,
            initial=step,
            disable=not is_main,
            unit="step",
            dynamic_ncols=True,
            desc="MAE pretraining",
        )
        self.start_time, self.img_rate = time.time(), None

    def start_clock(self) -> None:
        """Count ``elapsed_s`` from now."""
        self.start_time = time.time()

    def update(self, step: int, loss: float, lr: float, seconds: float, ranks: list[float] | None = None) -> None:
        """Log the step; ``ranks``: the stages' effective feature ranks, where they were measured."""
        if self.log is None:
            return
        rate = self.effective_batch / seconds
        self.img_rate = rate if self.img_rate is None else 0.9 * self.img_rate + 0.1 * rate
        measured = dict(zip(self.rank_columns, (f"{r:.3f}" for r in ranks))) if ranks is not None else {}
        self.log.write(
            step=step,
            loss=f"{loss:.6f}",
            lr=f"{lr:.3e}",
            img_per_s=f"{rate:.2f}",
            elapsed_s=f"{time.time() - self.start_time:.1f}",
            **measured,
        )
        if ranks is not None:
            tqdm.write(rank_line(step, ranks, self.stage_channels))
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{self.img_rate:.1f}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.log is not None:
            self.log.close()


def plot_loss(log_path: str, png_path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = CsvLog.read(log_path)
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss")
    if len(loss) >= 20:
        k = max(len(loss) // 50, 5)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"mean of {k} steps")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("masked-patch MSE")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def middle_slice(t: torch.Tensor) -> torch.Tensor:
    """B x C x Z x Y x X -> the middle Z slice, B x C x Y x X; 2D batches as they are."""
    return t[:, :, t.shape[2] // 2] if t.ndim == 5 else t


def save_preview(path: str, imgs: torch.Tensor, recon: torch.Tensor, pixel_mask: torch.Tensor, n: int = 4) -> None:
    """PNG grid: rows original | masked | reconstruction, one column per sample (first channel; of volumes,
    the middle slice)."""
    from PIL import Image

    imgs, recon, pixel_mask = middle_slice(imgs), middle_slice(recon), middle_slice(pixel_mask)
    imgs, recon = imgs[:n, 0].float().cpu().numpy(), recon[:n, 0].float().cpu().numpy()
    hidden = pixel_mask[:n, 0].cpu().numpy()
    columns = []
    for img, rec, hid in zip(imgs, recon, hidden):
        lo, hi = np.percentile(img, (0.5, 99.5))
        scale = lambda a: np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)  # noqa: E731
        masked = np.where(hid, 0.5, scale(img))
        columns.append(np.concatenate([scale(img), masked, scale(rec)], axis=0))
    gap = np.ones((columns[0].shape[0], 2))
    grid = np.concatenate([c for col in columns for c in (col, gap)][:-1], axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray((grid * 255).astype(np.uint8)).save(tmp)
