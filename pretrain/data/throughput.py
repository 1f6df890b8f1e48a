"""Loader throughput, raw files against a pack: ``python -m pretrain.data.throughput [-o DIR] [--json OUT]``.

On a corpus generated on the spot (``--volumes`` NIfTI volumes of ``--slices`` x ``--size`` x
``--size`` int16 voxels, gzipped as scanners' exports usually are, and ``--small-files`` 2D PNGs):

- slices/s per worker: ``PatchDataset.sample`` (what one data-loader worker does per sample: draw
  a file and a slice, load it, crop a ``--size`` patch) over (a) the raw volumes (``FileSource``:
  each draw that misses its cache of 4 volumes decodes and normalizes a whole volume) and (b) the
  pack of the same volumes (``PackSource``: one chunk decompressed per slice), in this process;
- packing: files/s of ``pack_corpus`` for the small files and for the volumes with each ``-np``.

The manifest of (a) is built before timing (a run builds it once). Wall and CPU time of this
process are both reported: other processes on the machine slow the wall time, less the CPU time.
Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from nnunetv2_vismae.flags import OneSentenceParser, console_script, positive_int
from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.io.normalization import Normalization
from pretrain.data.files import FileSource, discover_files
from pretrain.data.mixture import PatchDataset
from pretrain.data.pack import PackSource, write_pack

PROG = "python -m pretrain.data.throughput"


def write_volumes(folder: str, count: int, slices: int, size: int) -> list[str]:
    """``count`` smooth phantoms with noise, int16, as .nii.gz."""
    import SimpleITK as sitk

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:slices, :size, :size].astype(np.float32)
    for i in range(count):
        body = 400 * np.sin(xx / (9 + i % 5)) * np.cos(yy / 11) + 200 * np.cos(zz / 7) - 100 * (i % 3)
        volume = (body + rng.normal(0, 30, body.shape)).astype(np.int16)
        sitk.WriteImage(sitk.GetImageFromArray(volume), os.path.join(folder, f"vol{i:04d}.nii.gz"), True)
    return discover_files([folder])


def write_small_files(folder: str, count: int, size: int = 64) -> list[str]:
    """``count`` small gray PNGs, the many-small-files corpus that packing must scale on."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(os.path.join(folder, f"{i:06d}.png"))
    return discover_files([folder])


def timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``function()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def slices_per_second(source, patch_size: int, samples: int) -> dict:
    """One worker's samples (slices) per second, after one warm-up sample."""
    dataset = PatchDataset([source], patch_size, seed=0)
    dataset.sample(0)
    wall, cpu = timed(lambda: [dataset.sample(k) for k in range(1, samples + 1)])
    return {"samples": samples, "slices_per_s": samples / wall, "slices_per_cpu_s": samples / max(cpu, 1e-9)}


def packing_rate(files: list[str], pack: str, processes: int) -> dict:
    """Files/s of packing ``files`` into the new folder ``pack`` with ``processes`` workers
    (worker start-up included, as a user sees it)."""
    shutil.rmtree(pack, ignore_errors=True)  # a pack continued would skip what is packed
    wall, _ = timed(lambda: write_pack(pack, files, "0", Normalization(), processes, PROG))
    return {"processes": processes, "files": len(files), "seconds": wall, "files_per_s": len(files) / wall}


def measure(work: str, args: argparse.Namespace) -> dict:
    volumes = write_volumes(os.path.join(work, "volumes"), args.volumes, args.slices, args.size)
    small = write_small_files(os.path.join(work, "small"), args.small_files) if args.small_files else []
    packing = {"small_files": [], "volumes": []}
    for processes in args.np:
        if small:
            packing["small_files"].append(packing_rate(small, os.path.join(work, f"small_np{processes}"), processes))
        packing["volumes"].append(packing_rate(volumes, os.path.join(work, f"volumes_np{processes}"), processes))
    raw = FileSource("volumes", volumes, cache_dir=work)
    pack = PackSource(os.path.join(work, f"volumes_np{args.np[0]}"))
    loading = {
        "raw_nifti": slices_per_second(raw, args.size, args.samples),
        "pack": slices_per_second(pack, args.size, args.samples),
    }
    return {
        "corpus": {"volumes": args.volumes, "shape": [args.slices, args.size, args.size], "dtype": "int16"},
        "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "loading_per_worker": loading,
        "pack_vs_raw": loading["pack"]["slices_per_s"] / loading["raw_nifti"]["slices_per_s"],
        "packing": packing,
    }


def report(result: dict) -> str:
    loading, lines = result["loading_per_worker"], []
    lines.append(
        f"{result['cpus']} CPUs, load average at start {', '.join(f'{v:.1f}' for v in result['load_average_at_start'])}"
    )
    for name, label in (("raw_nifti", "raw NIfTI volumes"), ("pack", "pack")):
        r = loading[name]
        lines.append(
            f"slices/s per worker, {label}: {r['slices_per_s']:.1f} ({r['slices_per_cpu_s']:.1f} per CPU second)"
        )
    lines.append(f"pack / raw: {result['pack_vs_raw']:.1f}x")
    for corpus, rates in result["packing"].items():
        for r in rates:
            what = f"{r['files']} {corpus.replace('_', ' ')} with -np {r['processes']}"
            lines.append(f"packing {what}: {r['files_per_s']:.1f} files/s ({r['seconds']:.1f} s)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneSentenceParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--volumes", type=positive_int, default=24, help="NIfTI volumes generated (default 24).")
    p.add_argument("--slices", type=positive_int, default=64, help="slices per volume (default 64).")
    p.add_argument(
        "--size", type=positive_int, default=224, help="slice width and height, and patch size (default 224)."
    )
    p.add_argument("--samples", type=positive_int, default=300, help="samples timed per loader (default 300).")
    p.add_argument(
        "--small-files", type=int, default=2000, help="small PNGs generated to time packing (default 2000; 0: none)."
    )
    p.add_argument(
        "-np", type=positive_int, nargs="+", default=[1, 2], help="packing worker counts timed (default 1 2)."
    )
    p.add_argument(
        "-o", metavar="DIR", help="where the corpus and packs are written (default: a temporary folder, removed)."
    )
    p.add_argument("--json", metavar="OUT", help="also write the measurements to this JSON file.")
    return p


@console_script(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pack_throughput_") as scratch:
        work = args.o or scratch
        os.makedirs(work, exist_ok=True)
        result = measure(work, args)
    if args.json:
        write_json_atomic(args.json, result)
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
