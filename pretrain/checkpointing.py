"""The files in ``-o`` that carry a pretraining run across restarts, and the checks on resuming one.

``state.pt`` is read by every rank (all must see the same one) and written by rank 0 only;
``encoder.safetensors`` is written atomically and verified by reading it back. A saved state is
resumed only by a run of the same model settings and, unless ``--accept-changed-data``, the same data.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from nnunetv2_vismae.io.run_files import ENCODER_FILE, STATE_FILE
from pretrain.data.fingerprint import corpus_change
from pretrain.errors import PretrainUserError
from pretrain.runtime import Runtime
from pretrain.state import load_state, save_state


class RunCheckpoints:
    """``state.pt`` and ``encoder.safetensors`` of the output folder ``out``."""

    def __init__(self, out: str, runtime: Runtime):
        self.out, self.runtime = out, runtime
        self.state_path = os.path.join(out, STATE_FILE)
        self.encoder_path = os.path.join(out, ENCODER_FILE)

    def agreed_state(self) -> dict | None:
        """The saved state (None: a new run) once every rank has read the same one; otherwise every rank
        stops with one sentence (an -o that is not one shared folder), none continues alone."""
        state, error = None, None
        if os.path.isfile(self.state_path):
            try:
                state = load_state(self.state_path)
            except PretrainUserError as e:
                error = e
        self.runtime.stop_together(error)
        seen = None if state is None else [state["step"], state["data_position"], state.get("last_loss")]
        views = self.runtime.gather(seen)
        if any(v != views[0] for v in views):
            described = ", ".join(
                f"rank {r}: " + ("none" if v is None else f"step {v[0]}") for r, v in enumerate(views)
            )
            raise PretrainUserError(
                f"The ranks see different {STATE_FILE} files in {self.out} ({described}); -o must be one "
                "folder that every rank (every node) shares."
            )
        return state

    def write_state(self, state: dict) -> None:
        """Rank 0: the state, atomically."""
        save_state(self.state_path, state)

    def write_encoder(self, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
        """Rank 0: the encoder checkpoint, atomically."""
        from nnunetv2_vismae.checkpoint import save_encoder_checkpoint

        # a full disk is a CheckpointError, which the command reports as one sentence
        save_encoder_checkpoint(self.encoder_path, tensors, metadata)

    def holds_encoder(self, tensors: dict[str, torch.Tensor], step: int) -> bool:
        """Whether the encoder checkpoint exists and holds ``tensors`` as the encoder of ``step``."""
        from nnunetv2_vismae.checkpoint import CheckpointError, read_encoder_checkpoint, tensors_content_hash

        try:
            checkpoint = read_encoder_checkpoint(self.encoder_path)
        except CheckpointError:
            return False
        return checkpoint.metadata.get("steps") == step and checkpoint.content_hash == tensors_content_hash(tensors)

    def ensure_encoder(self, tensors: dict[str, torch.Tensor], metadata: dict) -> bool:
        """Make the encoder checkpoint ``tensors`` with ``metadata`` (of step ``metadata["steps"]``), verified by
        reading it back; whether it had to be written."""
        step = metadata["steps"]
        if self.holds_encoder(tensors, step):
            return False
        self.write_encoder(tensors, metadata)
        if not self.holds_encoder(tensors, step):
            raise PretrainUserError(
                f"{self.encoder_path} does not read back as the encoder of step {step} after writing it; "
                f"check the file system of {self.out}."
            )
        return True


def stop_unless_finite(model: nn.Module, runtime: Runtime, step: int) -> None:
    """Every rank: stop, before anything is written, if the weights of any rank are not finite."""
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    (non_finite_ranks,) = runtime.all_reduce_sum((~finite).double().reshape(1))
    if non_finite_ranks:
        raise PretrainUserError(
            f"The weights are no longer finite at step {step}; nothing was written, "
            "the last saved state is intact; lower the learning rate or use --precision fp32."
        )


def check_resumable(state: dict, path: str, run: dict, accept_changed_data: bool, is_main: bool) -> None:
    """Stop the resume of ``state`` (read from ``path``) by a run of other model settings, or over other data
    unless ``accept_changed_data``; note a changed batch. ``run``: this run's ``settings``, ``corpus`` and
    ``world_batch``, as its states save them."""
    check_same_settings(state.get("settings") or {}, run["settings"], path)
    check_same_corpus(state, run["corpus"], path, accept_changed_data, is_main)
    if state["world_batch"] != run["world_batch"]:
        print(
            f"Note: batch size/accumulation/world size changed since {path}; the data stream continues "
            "from its position but is not the one of the original run."
        )


def check_same_settings(saved: dict, settings: dict, path: str) -> None:
    saved, settings = _with_canonical_encoder_config(saved), _with_canonical_encoder_config(settings)
    if saved != settings:
        changed = {k: saved.get(k) for k in sorted(set(saved) | set(settings)) if saved.get(k) != settings.get(k)}
        raise PretrainUserError(
            f"{path} was written with different model settings ({changed}); "
            "rerun with the original flags or use a new output folder."
        )


def check_same_corpus(state: dict, corpus: list[dict], path: str, accept_changed_data: bool, is_main: bool) -> None:
    """Stop a resume over other data than the state's (one sentence) unless ``accept_changed_data``.
    A state of a version that did not record its data is not checked."""
    change = corpus_change(state["corpus"], corpus) if "corpus" in state else None
    if change is None:
        return
    what = f"data changed since {path} was saved ({change})"
    if not accept_changed_data:
        raise PretrainUserError(
            f"The {what}; rerun with the data of then, use a new -o, or add --accept-changed-data to go on "
            "with the data of now."
        )
    if is_main:
        print(f"Note: the {what}; going on with the data of now (--accept-changed-data).")


def _with_canonical_encoder_config(settings: dict) -> dict:
    """Settings with their encoder config in today's canonical form, so that a state saved before an
    entry was added to the config (the shift rule, the final norm) compares by the entry's default,
    which means what that run computed. A config its family refuses stays as it is."""
    from nnunetv2_vismae.checkpoint import CheckpointError
    from nnunetv2_vismae.checkpoint.families import ConfigProblems, get_family

    try:
        config = get_family(settings.get("family")).validated_config(settings["encoder_config"])
    except (CheckpointError, ConfigProblems, KeyError):
        return settings
    return {**settings, "encoder_config": config}
