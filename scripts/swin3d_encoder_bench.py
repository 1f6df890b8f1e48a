"""Our 3D Swin encoder against MONAI's SwinTransformer(spatial_dims=3), side by side in one process.

For docs/results/swin3d-encoder.md: a training step's forward + backward (wall and CPU seconds, best of
``--repeats`` calls made in turn), the peak memory it adds (sampled RSS) and the activations it keeps
for backward (bytes of the tensors autograd saves), on SwinUNETR's encoder (feature size 48, window 7,
patch 2), with the same weights; and, per patch size, the stages where MONAI shrinks its windows.

    PYTHONPATH=.:/work/monai_pkg python scripts/swin3d_encoder_bench.py --sizes 32x64x64:2 64x128x128:1
"""

from __future__ import annotations

import argparse
import os
import warnings

import torch
from monai.networks.nets.swin_unetr import SwinTransformer, get_window_size

from nnunetv2_vismae.architectures.swin3d_encoder import (
    MERGE_OFFSETS,
    Swin3dEncoder,
    Swin3dEncoderConfig,
    Swin3dStage,
    monai_to_ours,
)
from nnunetv2_vismae.device import StepTiming
from nnunetv2_vismae.speed.timing import PeakMemory, interleaved_seconds

warnings.filterwarnings("ignore", category=FutureWarning)


def monai_encoder(config: Swin3dEncoderConfig) -> SwinTransformer:
    return SwinTransformer(
        in_chans=config.in_channels,
        embed_dim=config.embed_dim,
        window_size=config.window_size,
        patch_size=config.patch_size,
        depths=config.depths,
        num_heads=config.num_heads,
        spatial_dims=3,
    )


def shrinking_stages(config: Swin3dEncoderConfig, size: tuple[int, ...]) -> list[str]:
    """The stages (1-based) where MONAI runs a window other than ``window_size``, with the window it runs."""
    found = []
    tokens = [s // p for s, p in zip(size, config.patch_size)]
    for stage in range(len(config.depths)):
        window = get_window_size(tokens, config.window_size)
        if tuple(window) != config.window_size:
            found.append(f"{stage + 1}: {'x'.join(map(str, tokens))} tokens, window {'x'.join(map(str, window))}")
        tokens = [-(-t // 2) for t in tokens]
    return found


def step(model: torch.nn.Module, x: torch.Tensor):
    def run():
        outs = model(x)
        sum(f.float().square().mean() for f in (outs if isinstance(outs, list) else [outs])).backward()

    return run


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for backward during ``fn``'s forward."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def first_stages(config: Swin3dEncoderConfig, theirs: SwinTransformer, size, batch: int) -> dict:
    """Stage 1 alone (blocks and merging), where neither shrinks: the same function in both, so the ratio
    is the implementation's, without the padding our encoder adds where MONAI shrinks."""
    ours = Swin3dStage(
        config.embed_dim,
        config.depths[0],
        config.num_heads[0],
        config.window_size,
        config.mlp_ratio,
        [0.0] * config.depths[0],
        MERGE_OFFSETS[config.merge_offsets],
    )
    layer = theirs.layers1[0]
    ours.load_state_dict({k: v for k, v in layer.state_dict().items() if "relative_position_index" not in k})
    tokens = [s // p for s, p in zip(size, config.patch_size)]
    x = torch.randn(batch, config.embed_dim, *tokens)
    return {"monai": step(layer, x), "ours": step(ours, x.permute(0, 2, 3, 4, 1).contiguous())}


def measure(fns: dict, repeats: int) -> dict:
    for fn in fns.values():  # warm-up
        fn()
    times = interleaved_seconds(fns, torch.device("cpu"), StepTiming(warmup=0, repeats=repeats, statistic="best"))
    peaks, saved = {}, {}
    for name, fn in fns.items():
        with PeakMemory(torch.device("cpu")) as peak:
            fn()
        peaks[name] = peak.peak_mb
        saved[name] = saved_bytes(fn) / 2**20
    for name in fns:
        wall, cpu = times[name]
        print(
            f"  {name:5s} wall {wall:7.2f} s  cpu {cpu:7.2f} s  peak {peaks[name]:7.0f} MB  saved {saved[name]:7.0f} MB"
        )
    ratio = {k: times["ours"][i] / times["monai"][i] for i, k in enumerate(("wall", "cpu"))}
    print(
        f"  ours / monai: wall {ratio['wall']:.2f}, cpu {ratio['cpu']:.2f}, "
        f"peak {peaks['ours'] / peaks['monai']:.2f}, saved {saved['ours'] / saved['monai']:.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["32x64x64:2", "64x128x128:1"], help="DxHxW:batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = Swin3dEncoderConfig()
    theirs = monai_encoder(config)
    ours = Swin3dEncoder(config)
    ours.load_state_dict(monai_to_ours(theirs.state_dict()))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    print(f"config {config.to_json()}")
    for spec in args.sizes:
        size_text, batch = spec.split(":")
        size = tuple(int(s) for s in size_text.split("x"))
        x = torch.randn(int(batch), config.in_channels, *size)
        print(
            f"\n{size_text} batch {batch}; MONAI shrinks windows in stages: {shrinking_stages(config, size) or 'none'}"
        )
        measure({"monai": step(theirs, x), "ours": step(ours, x)}, args.repeats)
        print(f"{size_text} batch {batch}, stage 1 alone (no shrinking in either)")
        measure(first_stages(config, theirs, size, int(batch)), args.repeats)
    print(f"load at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
