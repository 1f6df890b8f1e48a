"""Reading a foreign weights file (VIS-MAE / Swin-MAE pretraining files, timm state dicts, MONAI SwinUNETR
weights) into a state dict without executing pickled code: ``.safetensors``, or ``torch.save`` files loaded
with ``torch.load(weights_only=True)``. What the tensors mean is ``foreign_layouts.py``'s job (2D Swin) or
``monai_swin.py``'s (MONAI's 3D Swin).
"""

from __future__ import annotations

import argparse
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch

from .errors import CheckpointError

NNSSL_PLAN_KEY = "nnssl_adaptation_plan"  # what tells an nnssl checkpoint (MIC-DKFZ/nnssl's save_checkpoint)


@dataclass
class ForeignFile:
    """What was read from a foreign weights file."""

    state_dict: dict[str, torch.Tensor]
    container: str  # "safetensors", "torch.save" (+ the wrapper key, if any)
    extras: dict = field(default_factory=dict)  # JSON-able facts from beside the weights (epoch, args)


def _json_scalar(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_scalar(v) for v in value)
    return False


def _unsupported_global(message: str) -> Optional[str]:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def torch_load_safely(path: Path):
    """``torch.load(weights_only=True)`` allowing only ``argparse.Namespace`` beside tensors and
    plain containers (what VIS-MAE's pretraining files hold in their ``args`` entry)."""
    try:
        # a file object, not the name: torch.load hands *.safetensors names to safetensors
        with torch.serialization.safe_globals([argparse.Namespace]), open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        name = _unsupported_global(str(e))
        what = f"the object {name}" if name else "objects"
        raise CheckpointError(
            f"{path} is refused: it holds {what} beyond tensors, plain containers and "
            "argparse.Namespace, and unpickling it could run arbitrary code (loaded with "
            "torch.load(weights_only=True)); re-save its state dict with tensors only, e.g. as "
            ".safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise CheckpointError(f"{path} could not be read as a torch.save file ({reason}).") from None


def _is_tensor_dict(value) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def read_foreign_file(path) -> ForeignFile:
    """State dict of a ``.safetensors`` file or a ``torch.save`` file (a state dict, or a dict
    holding it under ``model`` or ``state_dict``), read without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Input weights {path} do not exist or are not a file.")
    from .format import looks_like_pickle

    with open(path, "rb") as f:
        head = f.read(8)
    if not looks_like_pickle(head):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, ValueError, OSError, RuntimeError) as e:
            reason = " ".join(str(e).split())[:200]
            raise CheckpointError(
                f"{path} is neither a torch.save file nor a readable safetensors file ({reason})."
            ) from None
        if "format" in metadata and "content_hash" in metadata:
            raise CheckpointError(
                f"{path} is already an nnunetv2_vismae encoder checkpoint; "
                "use it directly (nnUNetv2_vismae_inspect shows it)."
            )
        return ForeignFile(tensors, "safetensors")

    foreign = _state_dict_in(torch_load_safely(path), path)
    refuse_repeated_values(foreign.state_dict, path)
    return foreign


def refuse_repeated_values(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """CheckpointError when the tensors claim more values than the file has bytes: torch.save stores
    a view's storage once, so an expanded view (``torch.ones(1).expand(3_000_000_000)``) makes a
    small file claim gigabytes, which converting would copy. Read from the shapes alone."""
    values, size = sum(t.numel() for t in state.values()), path.stat().st_size
    if values > size:
        raise CheckpointError(
            f"{path} is refused: its {len(state)} tensors claim {values:,} values, more than its {size:,} "
            "bytes can store (views that repeat stored values); expected at most one value per byte."
        )


def _state_dict_in(loaded, path: Path) -> ForeignFile:
    """The state dict of what ``torch.load`` returned: the dict itself, or under 'model' / 'state_dict'."""
    if _is_tensor_dict(loaded):
        return ForeignFile(dict(loaded), "torch.save")
    if isinstance(loaded, Mapping):
        for key in ("model", "state_dict"):
            if _is_tensor_dict(loaded.get(key)):
                extras = {}
                if _json_scalar(loaded.get("epoch")):
                    extras["epoch"] = loaded.get("epoch")
                args = loaded.get("args")
                if isinstance(args, argparse.Namespace):
                    extras["args"] = {k: v for k, v in vars(args).items() if _json_scalar(v)}
                return ForeignFile(dict(loaded[key]), f"torch.save ['{key}']", extras)
        keys = ", ".join(repr(k) for k in list(loaded)[:8])
        hint = "; it is an nnssl checkpoint, convert it with --from nnssl" if NNSSL_PLAN_KEY in loaded else ""
        raise CheckpointError(
            f"{path} holds a dict without a state dict of tensors at its top "
            f"level or under 'model' / 'state_dict' (its keys: {keys}){hint}."
        )
    raise CheckpointError(
        f"{path} holds a {type(loaded).__name__}, expected a state dict "
        "(a dict of tensors) or a dict holding one under 'model'."
    )
