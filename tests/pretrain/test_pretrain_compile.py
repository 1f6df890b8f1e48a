"""``--compile``: both MAE models trace into one graph, and a compiled run writes the same encoder checkpoint."""

from __future__ import annotations

import os

import pytest
import torch

from pretrain.masking import window_mask
from tests.pretrain.helpers import TINY, parse
from tests.pretrain.test_cnn_family import PLAIN, mae_for
from tests.pretrain.test_pretrain_model import CONFIG, smooth_batch


def _graphs_and_breaks(model: torch.nn.Module, imgs: torch.Tensor, mask: torch.Tensor) -> tuple[int, int]:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model.train())(imgs, mask)
    return explanation.graph_count, explanation.graph_break_count


def test_swin_mae_is_one_graph():
    from pretrain.families.swin import SwinMAE

    mask = window_mask(2, (8, 8), 2, 0.75, generator=torch.Generator().manual_seed(0))
    assert _graphs_and_breaks(SwinMAE(CONFIG), smooth_batch(2), mask) == (1, 0)


@pytest.mark.parametrize("visible_norm", [False, True], ids=["norm", "visible-norm"])
def test_cnn_mae_is_one_graph(visible_norm):
    mask = window_mask(2, (8, 8), 2, 0.5, generator=torch.Generator().manual_seed(0))  # cells of total stride 4
    assert _graphs_and_breaks(mae_for(PLAIN, visible_norm), smooth_batch(2), mask) == (1, 0)


@pytest.mark.slow  # traces forward and backward
def test_compiled_run_writes_the_encoder_checkpoint_of_the_plain_model(png_folder, tmp_path, monkeypatch):
    import functools

    from nnunetv2_vismae.architectures.swin_unet import SwinUNet
    from nnunetv2_vismae.checkpoint import load_encoder_into, read_encoder_checkpoint
    from pretrain.runtime import setup_runtime
    from pretrain.train import Pretrainer

    # dynamo and AOTAutograd as --compile runs them, without inductor's code generation (minutes on 2 cores)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    out = tmp_path / "run"
    argv = [*TINY, "-i", png_folder, "-o", str(out), "--steps", "2", "--precision", "fp32", "--compile"]
    trainer = Pretrainer(parse(argv), setup_runtime("cpu")).setup()
    assert isinstance(trainer.forward_model, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.train() == 0 and trainer.step == 2
    ckpt = read_encoder_checkpoint(os.path.join(out, "encoder.safetensors"))
    assert set(ckpt.tensors) == set(trainer.model.encoder.state_dict())  # no _orig_mod. prefix
    state = torch.load(out / "state.pt", weights_only=True)
    assert not [k for k in state["model"] if "_orig_mod" in k]
    encoder = {k: v for k, v in ckpt.metadata["encoder_config"].items() if k != "in_channels"}
    assert load_encoder_into(SwinUNet(1, 2, encoder=encoder), ckpt, log=lambda *a, **k: None).fraction_loaded == 1.0
