"""The pretraining loop: sources -> family MAE -> AdamW/cosine, accumulation, bf16, DDP -> checkpoints.

``Pretrainer(config).setup()`` locks the output folder and builds everything from a
``PretrainConfig`` (resuming from ``<output>/state.pt`` when present). ``train()`` repeats
``train_step`` (one optimizer step, guarded against non-finite losses and gradients) and the
after-step hooks (log and progress bar, previews, saving) until ``--steps`` optimizer steps, a
signal (SIGTERM/SIGINT: save, then stop) or, for tests, ``stop_after`` steps; then it checks that
``encoder.safetensors`` holds the encoder of the saved state and releases the folder. Only rank 0
writes files; what the files are and how a resume is checked lives in ``pretrain.checkpointing``.
``pretrain.speed`` times the same ``train_step``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from nnunetv2_vismae.device import fused_adamw, native_bf16
from nnunetv2_vismae.errors import UserError
from nnunetv2_vismae.io.lock import claim_output_folder
from nnunetv2_vismae.optim.parameter_groups import NO_WEIGHT_DECAY, weight_decay_groups
from nnunetv2_vismae.optim.schedules import warmup_cosine_schedule
from pretrain.checkpointing import RunCheckpoints, check_resumable, stop_unless_finite
from pretrain.collapse import RANK_IMAGES, stage_ranks
from pretrain.config import DEFAULT_PATCH_SIZE, PROG, PretrainConfig
from pretrain.data.files import FileSource
from pretrain.data.mixture import PatchDataset, SampleIndexSampler
from pretrain.data.nnunet import NnUNetSource
from pretrain.data.files import discover_files
from pretrain.data.fingerprint import corpus_fingerprint
from pretrain.data.pack_volumes import open_pack
from pretrain.data.preprocess_like import CACHE, PreprocessedLikeSource
from pretrain.data.unusable import UnusableFiles
from pretrain.errors import PretrainUserError
from pretrain.families import FAMILIES
from pretrain.monitor import Progress, plot_loss, save_preview
from pretrain.runtime import Runtime, setup_runtime

UNUSABLE_FILE = "unusable_files.json"
PREVIEW_SAMPLES = 4  # reconstructed for a preview, not the whole batch: the other ranks wait meanwhile
PREVIEWS = "previews"  # the one subfolder of -o a run writes
MASK_TOKENS = ("mask_token", "*mask_tokens.*")  # learned fillers of the holes, not weights to shrink


def scaled_lr(config: PretrainConfig, effective_batch: int) -> float:
    """``--lr`` if given, else ``--blr * effective_batch / 256`` (MAE's linear scaling rule)."""
    return config.lr if config.lr is not None else config.blr * effective_batch / 256


def build_sources(config: PretrainConfig, runtime: Runtime, spatial_dims: int = 2) -> list:
    """The sources of the run; of volumes where the encoder takes volumes (``spatial_dims`` 3)."""
    volumes = spatial_dims == 3
    if volumes and (config.folders or config.file_list) and not config.preprocess_like:
        raise PretrainUserError(
            "A 3D encoder reads -i and --file-list volumes as nnU-Net preprocesses a dataset's cases; "
            "add --preprocess-like DATASET (the dataset whose plans -p and configuration -c to follow)."
        )
    sources = [NnUNetSource(d, config.configuration, config.plans, volumes) for d in config.datasets]
    file_inputs = [(f, discover_files([f])) for f in config.folders]
    if config.file_list:
        file_inputs.append((config.file_list, discover_files(file_list=config.file_list)))
    for name, files in file_inputs:
        if config.preprocess_like:
            like = (config.preprocess_like, config.configuration, config.plans, config.output, runtime, volumes)
            sources.append(PreprocessedLikeSource(name, files, *like))
        else:
            sources.append(FileSource(name, files, config.axis, config.normalization, config.output, runtime))
    # a pack of volumes must be preprocessed with the plans the encoder is built from (a family that takes volumes
    # follows a dataset's plans)
    like = (getattr(config.family_options, "plans_dataset", None), config.plans, config.configuration)
    sources.extend(open_pack(pack, volumes, like) for pack in config.packs)
    if not sources:
        raise PretrainUserError(
            "No data given: use -d DATASET (nnU-Net preprocessed), -i FOLDER, --file-list TXT or --pack PACK."
        )
    for s in sources:
        if len(s) == 0:
            raise PretrainUserError(f"Source {s.name} contains no images.")
    channels = {s.num_channels for s in sources}
    if len(channels) > 1:
        raise PretrainUserError(
            "All sources must have the same number of channels; got "
            + ", ".join(f"{s.name}: {s.num_channels}" for s in sources)
            + "."
        )
    return sources


def run_patch_size(requested: tuple[int, ...] | None, spatial_dims: int, default: list[int] | None) -> int | list[int]:
    """The patch of a run from ``--patch-size``: one side of a square in 2D; in 3D one per axis Z Y X (one
    value: a cube). Unset: ``DEFAULT_PATCH_SIZE`` in 2D, the family's ``default`` (the plans') in 3D."""
    if requested is None:
        return DEFAULT_PATCH_SIZE if default is None else list(default)
    if spatial_dims == 2:
        if len(requested) != 1:
            raise PretrainUserError(f"--patch-size takes one side (a square) for 2D images, got {len(requested)}.")
        return requested[0]
    if len(requested) == 1:
        return [requested[0]] * spatial_dims
    if len(requested) != spatial_dims:
        raise PretrainUserError(
            f"--patch-size takes one side or one per axis Z Y X for volumes, got {len(requested)} values."
        )
    return list(requested)


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGINT/SIGTERM to the main process, which saves and then stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@dataclass
class StepOutcome:
    """What one ``train_step`` did, for the after-step hooks."""

    stepped: bool  # False: the NaN guard skipped it, the weights are untouched
    stop_requested: bool  # some rank received SIGINT/SIGTERM
    seconds: float
    imgs: torch.Tensor  # the last micro-batch, its mask and prediction (for previews)
    mask: torch.Tensor
    pred: torch.Tensor


class Pretrainer:
    def __init__(self, config: PretrainConfig | argparse.Namespace, runtime: Runtime | None = None):
        """From ``config``, or from the parsed flags of ``nnUNetv2_vismae_pretrain`` made into one."""
        self.config = config if isinstance(config, PretrainConfig) else PretrainConfig.from_args(config)
        self.runtime = runtime or setup_runtime(self.config.device)
        self.out = self.config.output
        self.stop_signal: int | None = None
        self.lock = None

    # ------------------------------------------------------------------------------------ setup
    def setup(self) -> "Pretrainer":
        """Lock the output folder (rank 0; every rank stops if it cannot) and build everything; a failure
        releases the folder again."""
        error = None
        if self.runtime.is_main:
            try:
                self.lock = claim_output_folder(self.out, PROG, (PREVIEWS, f"{CACHE}/*"))
            except UserError as e:
                error = e
        self.runtime.stop_together(error)  # also: no rank touches -o before rank 0 holds it
        try:
            return self._build()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Leave the output folder to the next run."""
        if self.lock is not None:
            self.lock.release()

    def _build(self) -> "Pretrainer":
        """Data, schedule, model and optimizer, the saved state if any, then what the steps run."""
        rt = self.runtime
        self.precision = rt.resolve_precision(self.config.precision)
        if rt.is_main and self.precision == "bf16" and not native_bf16(rt.device):
            print(
                "Note: this CPU has no native bf16 (AVX512-BF16/AMX); bf16 autocast is emulated and much slower "
                "here than --precision fp32."
            )
        self._build_data()
        self._build_schedule()
        self._build_model()
        self.rank_images: torch.Tensor | None = None  # the collapse diagnostic's fixed batch, drawn when first used
        self.step, self.data_position, self.last_loss = 0, 0, None
        self.bad_steps, self.skipped_steps = 0, 0  # non-finite losses: in a row, in total
        self.checkpoints = RunCheckpoints(self.out, rt)
        state = self.checkpoints.agreed_state()
        if state is not None:
            self._resume(state)
        self._build_steps()
        return self

    def _build_data(self) -> None:
        """The sources (their unusable files checked), the corpus' fingerprint, the patch stream, the family."""
        c, rt = self.config, self.runtime
        family = FAMILIES[c.family]
        spatial_dims, default_patch = family.image_geometry(c.family_options)
        self.sources = build_sources(c, rt, spatial_dims)
        self.unusable = UnusableFiles.from_sources(
            self.sources, c.max_unusable, announce=tqdm.write if rt.is_main else lambda _: None
        )
        if rt.is_main and self.unusable.entries:
            print(f"{self.unusable.describe()}; they are skipped.")
        self._check_unusable_files()
        self.corpus = corpus_fingerprint(self.sources)
        self.patch_size = run_patch_size(c.patch_size, spatial_dims, default_patch)
        self.dataset = PatchDataset(self.sources, self.patch_size, c.source_weights, c.seed, rt.rank, rt.world_size)
        in_channels = self.sources[0].num_channels
        self.family = family(c.family_options, in_channels)
        self.family.validate(self.patch_size)

    def _build_schedule(self) -> None:
        """Effective batch, total and warmup steps, and the learning rate."""
        c = self.config
        self.effective_batch = c.batch_size * c.accum * self.runtime.world_size
        corpus = sum(len(s) for s in self.sources)
        self.total_steps = c.steps if c.epochs is None else max(1, math.ceil(c.epochs * corpus / self.effective_batch))
        self.warmup = c.warmup_steps if c.warmup_steps is not None else max(1, self.total_steps // 80)
        self.lr = scaled_lr(c, self.effective_batch)

    def _build_model(self) -> None:
        """The family's MAE (the same initial weights on every rank), checked to be fine-tunable, its
        optimizer and schedule."""
        c, rt = self.config, self.runtime
        torch.manual_seed(c.seed)  # identical initial weights on every rank
        self.model = self.family.build_model().to(rt.device)
        with tempfile.TemporaryDirectory() as tmp:  # before the first step: the encoder must be usable
            self.family.check_fine_tunable(self.model, tmp, self.checkpoint_metadata(0, None))
        groups = weight_decay_groups(self.model, c.weight_decay, (*MASK_TOKENS, *NO_WEIGHT_DECAY))
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.95), fused=fused_adamw(rt.device))
        self.scheduler = warmup_cosine_schedule(self.optimizer, self.warmup, self.total_steps)

    def _build_steps(self) -> None:
        """What the steps run: the model, wrapped in DDP and compiled as asked, and the data loader from the
        run's data position."""
        c, rt = self.config, self.runtime
        self.ddp = (
            DistributedDataParallel(
                self.model,
                device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                broadcast_buffers=False,  # the buffers are constants (position indices, window masks)
                gradient_as_bucket_view=True,  # gradients live in the all-reduce buckets: no copy in and out
            )
            if rt.distributed
            else None
        )
        # what the steps call; self.model stays the plain module (state dict and encoder keys unchanged)
        self.forward_model = self.ddp or self.model
        if c.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.loader = DataLoader(
            self.dataset.reporting(),
            batch_size=c.batch_size,
            sampler=SampleIndexSampler(self.data_position),
            num_workers=c.workers,
            pin_memory=rt.device.type == "cuda",
            drop_last=True,
            worker_init_fn=_ignore_stop_signals,
        )

    def _resume(self, state: dict) -> None:
        """Continue from ``state``, which this run may resume (``check_resumable``); rank 0 makes the encoder
        checkpoint that of the state's step."""
        path = self.checkpoints.state_path
        check_resumable(state, path, self._identity(), self.config.accept_changed_data, self.runtime.is_main)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.data_position = int(state["step"]), int(state["data_position"])
        self.last_loss = state.get("last_loss")
        self.skipped_steps = int(state.get("skipped_steps", 0))
        if self.runtime.is_main:
            print(f"Resuming from {path} at step {self.step}.")
            if self.ensure_encoder():  # a run stopped between writing the state and the encoder
                print(
                    f"Wrote {self.checkpoints.encoder_path} again from {path}: it did not hold "
                    f"the encoder of step {self.step}."
                )

    def _identity(self) -> dict:
        """What a saved state must share with the run that resumes it (``check_resumable``)."""
        return {"settings": self.family.settings(), "corpus": self.corpus, "world_batch": self._world_batch()}

    def _world_batch(self) -> list[int]:
        """What the data stream of a run depends on: batch size, accumulation, world size."""
        return [self.config.batch_size, self.config.accum, self.runtime.world_size]

    # ------------------------------------------------------------------------------- checkpoint
    def checkpoint_metadata(self, steps: int, final_loss: float | None) -> dict:
        summaries = [s.summary() for s in self.sources]
        norms = [s["normalization"] for s in summaries]
        schemes = {n["scheme"] for n in norms}
        meta = {
            **self.family.checkpoint_metadata(),
            "normalization": {"scheme": schemes.pop() if len(schemes) == 1 else "mixed", "per_source": norms},
            "data_sources": {
                "sources": summaries,
                "unusable_files": dict(self.unusable.counts()),
                "weights": [float(w) for w in self.dataset.probabilities],
                "patch_size": self.patch_size,
            },
            "steps": steps,
            "final_loss": final_loss,
            "training": {
                "effective_batch": self.effective_batch,
                "lr": self.lr,
                "warmup_steps": self.warmup,
                "total_steps": self.total_steps,
                "weight_decay": self.config.weight_decay,
                "precision": self.precision,
                "world_size": self.runtime.world_size,
            },
        }
        nnunet = [s for s in summaries if s["type"] == "nnunet_preprocessed"]
        if nnunet:
            meta["source_plans"] = [{k: s[k] for k in ("name", "plans", "configuration", "spacing")} for s in nnunet]
            meta["spacing"] = nnunet[0]["spacing"]
        return meta

    def ensure_encoder(self) -> bool:
        """Make the encoder checkpoint the encoder of this step, verified by reading it back; whether it had
        to be written."""
        return self.checkpoints.ensure_encoder(*self._encoder_checkpoint())

    def _encoder_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The tensors and metadata of the encoder checkpoint of this step."""
        return self.family.encoder_tensors(self.model), self.checkpoint_metadata(self.step, self.last_loss)

    def save(self) -> None:
        """Every rank: stop if the weights of any rank are not finite; rank 0: ``state.pt`` (atomic),
        ``encoder.safetensors``, ``loss.png``. The other ranks go on to the next step meanwhile."""
        stop_unless_finite(self.model, self.runtime, self.step)
        if not self.runtime.is_main:
            return
        self.checkpoints.write_state(self._state())
        self.checkpoints.write_encoder(*self._encoder_checkpoint())
        plot_loss(os.path.join(self.out, "log.csv"), os.path.join(self.out, "loss.png"))
        if self.unusable.entries:
            self.unusable.write(os.path.join(self.out, UNUSABLE_FILE))

    def _state(self) -> dict:
        """The full training state that ``state.pt`` keeps."""
        return {
            "settings": self.family.settings(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "data_position": self.data_position,
            "last_loss": self.last_loss,
            "skipped_steps": self.skipped_steps,
            "seed": self.config.seed,
            "world_batch": self._world_batch(),
            "corpus": self.corpus,
        }

    def _check_unusable_files(self, other_rank_stops: bool = False) -> None:
        """Stop the run (PretrainUserError) when too many files are unusable, after listing them
        all in ``unusable_files.json`` (rank 0)."""
        if other_rank_stops and not self.unusable.exceeded():
            raise PretrainUserError("Another rank found too many unusable files; see its messages.")
        self.unusable.check(os.path.join(self.out, UNUSABLE_FILE) if self.runtime.is_main else None)

    # ------------------------------------------------------------------------------------- step
    def train_step(self, batches: Iterator, generator: torch.Generator) -> StepOutcome:
        """One optimizer step: ``--accum`` micro-batches from ``batches`` forward and backward (DDP
        synchronizes the gradients on the last); the loss, the gradient norm and the stop and bad-data
        votes summed over ranks in one collective and read by the host once (the step's only wait for
        the device), then the optimizer step unless the NaN guard skips it."""
        c, rt = self.config, self.runtime
        start = time.perf_counter()
        torch.manual_seed(self._step_seed())  # stochastic depth
        generator.manual_seed(self._step_seed())  # masks
        loss_sum = torch.zeros((), device=rt.device)
        for micro in range(c.accum):
            imgs, mask, micro_loss, pred = self._forward_backward(next(batches), generator, sync=micro == c.accum - 1)
            loss_sum += micro_loss
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))  # no clipping: the norm
        scalars = torch.stack(
            [  # new_full: the host's votes reach the device as kernel arguments, not as a copy that waits
                loss_sum / c.accum,
                grad_norm.float(),
                loss_sum.new_full((), float(self.stop_signal is not None)),
                loss_sum.new_full((), float(self.unusable.exceeded())),
            ]
        )
        total_loss, total_norm, stop_votes, bad_data = rt.all_reduce_sum(scalars.double())
        if bad_data:
            self._check_unusable_files(other_rank_stops=True)
        self.data_position += c.accum * c.batch_size
        loss = total_loss / rt.world_size
        stepped = self._optimizer_step(loss, total_norm / rt.world_size)  # DDP: the same norm on every rank
        if stepped:
            self.step += 1
            self.last_loss = loss
        return StepOutcome(stepped, stop_votes > 0, time.perf_counter() - start, imgs, mask, pred)

    def _forward_backward(self, batch: tuple[torch.Tensor, list[str]], generator: torch.Generator, sync: bool):
        """One micro-batch: (images, mask, loss, prediction); gradients accumulate, and DDP
        synchronizes them only when ``sync``."""
        imgs, reports = batch
        self.unusable.add_reports(reports)
        imgs = imgs.to(self.runtime.device, non_blocking=True)
        mask = self.family.make_mask(imgs, generator)
        with self.ddp.no_sync() if self.ddp is not None and not sync else contextlib.nullcontext():
            with self.runtime.autocast(self.precision):
                loss, pred = self.forward_model(imgs, mask)
            (loss / self.config.accum).backward()
        return imgs, mask, loss.detach().float(), pred

    def _optimizer_step(self, loss: float, grad_norm: float) -> bool:
        """The NaN guard: step if the loss and the gradients are finite; else skip the step (weights and
        optimizer untouched), and stop after ``--max-bad-steps`` in a row. Returns whether it stepped."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.bad_steps = 0
            return True
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_steps += 1
        what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
        if self.runtime.is_main:
            tqdm.write(
                f"Step {self.step + 1}: {what}; skipped this optimizer step ({self.bad_steps} in a row, "
                f"stopping at --max-bad-steps {self.config.max_bad_steps})."
            )
        if self.bad_steps >= self.config.max_bad_steps:
            raise PretrainUserError(
                f"{self.bad_steps} steps in a row had a non-finite loss or gradient (last: {what} "
                f"at step {self.step + 1}); stopped, and the last saved state is intact; lower "
                "the learning rate or use --precision fp32."
            )
        return False

    def _step_seed(self) -> int:
        return (self.config.seed * 1_000_003 + self.runtime.rank * 7_919 + self.step) % (2**63)

    # ------------------------------------------------------------------------------------- loop
    def train(self, stop_after: int | None = None) -> int:
        """Run to the end (0), or until a signal (128 + signal) or ``stop_after`` steps (0); then
        verify the encoder checkpoint, report, and release the output folder."""
        try:
            self._train(stop_after)
            if self.runtime.is_main:
                self.ensure_encoder()
                self._report()
        finally:
            self.release()
        return 128 + self.stop_signal if self.stop_signal is not None else 0

    def _train(self, stop_after: int | None) -> None:
        channels = self.family.stage_channels(self.model)
        progress = Progress(self.out, self.step, self.total_steps, self.effective_batch, self.runtime.is_main, channels)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        (self.ddp or self.model).train()
        batches = iter(self.loader)
        generator = torch.Generator(device=self.runtime.device)
        progress.start_clock()  # after the loader's workers started
        try:
            while self.step < self.total_steps:
                if self._after_step(self.train_step(batches, generator), progress, stop_after):
                    break
        finally:
            progress.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            del batches

    def _after_step(self, outcome: StepOutcome, progress: Progress, stop_after: int | None) -> bool:
        """The hooks after each step: a finished step is logged and previewed; the state is saved when
        due, and on stopping even after a skipped step (the steps before it may be unsaved). Returns
        whether to stop: a signal on any rank, or ``stop_after`` steps done."""
        stopping = outcome.stop_requested or (stop_after is not None and self.step >= stop_after)
        if outcome.stepped:
            ranks = self.feature_ranks() if self._save_due() else None
            progress.update(self.step, self.last_loss, self.optimizer.param_groups[0]["lr"], outcome.seconds, ranks)
            self._preview(outcome)
        if stopping or (outcome.stepped and self._save_due()):
            self.save()
        return stopping

    def feature_ranks(self) -> list[float] | None:
        """Rank 0: the effective rank of each encoder stage's features on the fixed batch (``pretrain.collapse``);
        None on the other ranks."""
        if not self.runtime.is_main:
            return None
        if self.rank_images is None:
            self.rank_images = self.fixed_images()
        return stage_ranks(self.model.encoder, self.rank_images, self.runtime.autocast(self.precision))

    def fixed_images(self) -> torch.Tensor:
        """The first ``RANK_IMAGES`` unmasked patches of rank 0's stream, drawn by index from a dataset of
        their own: the loader's position, its dataset's memory of bad files and every random stream stay
        untouched."""
        c = self.config
        dataset = PatchDataset(self.sources, self.patch_size, c.source_weights, c.seed)
        return torch.stack([dataset[k] for k in range(RANK_IMAGES)]).to(self.runtime.device)

    def _save_due(self) -> bool:
        return self.step % self.config.save_every == 0 or self.step == self.total_steps

    def _preview(self, outcome: StepOutcome) -> None:
        """Rank 0, every ``--preview-every`` steps: previews/step_N.png of the step's last micro-batch."""
        every = self.config.preview_every
        if self.runtime.is_main and every and self.step % every == 0:
            imgs, mask, pred = (t[:PREVIEW_SAMPLES] for t in (outcome.imgs, outcome.mask, outcome.pred.detach()))
            recon, pixel_mask = self.model.reconstruct(imgs, mask, pred)
            save_preview(
                os.path.join(self.out, PREVIEWS, f"step_{self.step:07d}.png"),
                imgs,
                recon,
                pixel_mask,
                PREVIEW_SAMPLES,
            )

    def _on_signal(self, signum, frame):
        if self.stop_signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.stop_signal = signum
        if self.runtime.is_main:
            tqdm.write(f"Received signal {signum}: saving the state after this step, then stopping.")

    def _report(self) -> None:
        where = self.checkpoints.encoder_path
        if self.unusable.entries:
            print(f"{self.unusable.describe()}; skipped (listed in {os.path.join(self.out, UNUSABLE_FILE)}).")
        if self.stop_signal is not None:
            print(f"Stopped at step {self.step}; state saved, rerun the same command to resume. Encoder: {where}")
        else:
            print(f"Step {self.step}/{self.total_steps}, loss {self.last_loss}. Encoder checkpoint: {where}")
