"""Masking and the Swin MAE model: block masks, mask token, loss on hidden patches, learning, bf16."""

from __future__ import annotations

import torch

from nnunetv2_vismae.architectures.swin_encoder import SwinEncoderConfig
from pretrain.families.swin import SwinMAE
from pretrain.masking import window_mask
from tests.pretrain.helpers import training_losses

CONFIG = SwinEncoderConfig(
    in_channels=1, patch_size=4, embed_dim=24, depths=(1, 1), num_heads=(3, 6), window_size=4, drop_path_rate=0.0
)


def smooth_batch(b=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    phase = torch.rand(b, 1, 1, generator=g) * 6
    freq = 0.2 + torch.rand(b, 1, 1, generator=g) * 0.3
    return (torch.sin(xx * freq + phase) + torch.cos(yy * freq - phase)).unsqueeze(1)


def test_window_mask_hides_exact_ratio_in_blocks():
    g = torch.Generator().manual_seed(0)
    mask = window_mask(8, (16, 16), block=4, ratio=0.75, generator=g)
    assert mask.shape == (8, 16, 16) and mask.dtype == torch.bool
    assert (mask.flatten(1).sum(1) == 0.75 * 256).all()  # exactly the ratio, every sample
    blocks = mask.view(8, 4, 4, 4, 4)  # B, bh, r, bw, r
    assert (blocks.all(dim=(2, 4)) | ~blocks.any(dim=(2, 4))).all()  # each 4x4 block all or nothing
    assert len({tuple(m.flatten().tolist()) for m in mask}) == 8  # a different mask per sample
    again = window_mask(8, (16, 16), 4, 0.75, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    odd = window_mask(3, (8, 12), block=2, ratio=0.5)  # 4 x 6 = 24 blocks, 12 hidden
    assert (odd.flatten(1).sum(1) == 12 * 4).all()


def test_hidden_pixels_do_not_reach_the_encoder_and_loss_ignores_visible_patches():
    torch.manual_seed(0)
    model = SwinMAE(CONFIG).eval()
    imgs = smooth_batch(2)
    mask = window_mask(2, (8, 8), 2, 0.75, generator=torch.Generator().manual_seed(1))
    pixel_mask = mask.repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
    scrambled = torch.where(pixel_mask, torch.randn_like(imgs) * 10, imgs)
    with torch.no_grad():
        a, b = model.forward_encoder(imgs, mask), model.forward_encoder(scrambled, mask)
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))  # mask token replaced them
        loss, pred = model(imgs, mask)
        visible = ~mask.flatten(1)
        pred2 = pred.clone()
        pred2[visible] += 100.0
        assert torch.allclose(model.forward_loss(imgs, pred2, mask), loss)
        pred3 = pred.clone()
        pred3[~visible] += 1.0
        assert model.forward_loss(imgs, pred3, mask) > loss
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model.unpatchify(model.patchify(x), (8, 8)), x)
    assert model.patchify(x).shape == (2, 64, 16)


def test_loss_goes_down_on_a_fixed_batch():
    """Hidden pixels are predictable from visible context (a per-image offset): ~30 steps must learn it."""
    torch.manual_seed(0)
    model = SwinMAE(CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    offsets = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(5)) * 4 - 2
    imgs = smooth_batch(4) * 0.3 + offsets
    losses, _ = training_losses(model, imgs, opt, steps=30, mask_ratio=0.75)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_bf16_and_fp32_losses_agree():
    torch.manual_seed(0)
    for decoder in ("swin", "light"):
        model = SwinMAE(CONFIG, decoder=decoder).eval()
        imgs = smooth_batch(4, seed=2)
        mask = window_mask(4, (8, 8), 2, 0.75, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            fp32, _ = model(imgs, mask)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16, pred = model(imgs, mask)
        assert pred.dtype == torch.bfloat16 and bf16.dtype == torch.float32  # autocast really on, loss in fp32
        assert abs(bf16.item() - fp32.item()) < 0.03 * fp32.item(), (decoder, bf16.item(), fp32.item())


class _CalledOps(torch.overrides.TorchFunctionMode):
    """The names of the torch functions and tensor methods called inside it."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def cuda_autocast_lower_precision_ops() -> set[str]:
    """The ops CUDA's autocast runs in fp16/bf16, read from torch's own autocast test lists (CPU's lists
    differ). The file is parsed, not imported: importing it needs torch's test-only dependencies."""
    import ast
    import importlib.util

    source = importlib.util.find_spec("torch.testing._internal.autocast_test_lists").origin
    with open(source) as f:
        cuda_lists = next(n for n in ast.walk(ast.parse(f.read())) if getattr(n, "name", "") == "AutocastTestLists")
    lowered = ("torch_fp16", "nn_fp16", "linalg_fp16", "methods_fp16")
    return {
        entry.elts[0].value
        for node in ast.walk(cuda_lists)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "attr", "") in lowered
        for entry in node.value.elts
    }


def test_loss_target_stays_fp32_under_autocast_on_cuda_too():
    """The target path calls no op that CUDA's autocast would round to bf16, so it is fp32 there as on CPU."""
    lowered = cuda_autocast_lower_precision_ops()
    assert {"einsum", "matmul", "linear"} <= lowered  # what the old patchify used is caught
    imgs = smooth_batch(2) + torch.rand(2, 1, 32, 32) * 1e-3  # pixels that bf16 cannot hold exactly
    for norm_pix_loss in (False, True):
        model = SwinMAE(CONFIG, norm_pix_loss=norm_pix_loss)
        with torch.autocast("cpu", dtype=torch.bfloat16), _CalledOps() as called:
            target = model.loss_target(imgs)
        assert not called.names & lowered, called.names & lowered
        assert target.dtype == torch.float32
        if not norm_pix_loss:
            assert torch.equal(target, model.patchify(imgs))
    # patch l = row * 8 + column of the 8 x 8 grid holds that 4 x 4 block, pixels row by row
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model.patchify(x)[:, 8 * 2 + 5], x[:, 0, 8:12, 20:24].flatten(1))
