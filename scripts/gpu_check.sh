#!/usr/bin/env bash
# The CUDA paths of nnunetv2_vismae end to end on one GPU, in under 8 minutes on an H200, printing the key
# numbers; logs and speed.md stay in the work folder.
#
#   bash scripts/gpu_check.sh [WORK_FOLDER]        (from the repository root; default /tmp/vismae_gpu_check)
#
# 1. pretraining: 300 bf16 steps at batch 256 (224 px) with 12 loader workers, GPU utilisation sampled;
# 2. the DDP code path at world size 1 under torchrun (DDP forced on), --accum 2, then a resume 30 -> 40;
# 3. nnUNetv2_vismae_speed -device cuda -c 2d 3d_fullres (2D and 3D rows) with nnU-Net's default compile setting
#    (nnUNet_compile unset);
# 4. a short nnUNetv2_train -tr VisMAETrainer -device cuda with nnU-Net's default torch.compile, counting
#    graph breaks and recompiles.
# Each step has a time cap and reports FAILED with its log instead of stopping the rest. Pretraining runs
# eagerly, its default (--compile stays off until a GPU has measured it faster: rerun step 1 with --compile).
#
# Needs one CUDA GPU and python3 with torch and this project installed with its dependencies
# (`python3 -m pip install -e .` where PyPI can be reached). A machine without PyPI that has torch, timm and
# safetensors (the project's GPU machine: torch 2.11, Python 3.12) gets the rest as wheels carried along in
# wheels/, downloaded where PyPI can be reached (add --platform manylinux_2_N_x86_64 where pip finds none):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d wheels $(sed -n 's/^# WHEEL //p' scripts/gpu_check.sh)
# and installed there, in the repository root (no dependency resolution: the list below is complete for it):
#   python3 -m pip install --no-index --no-deps wheels/*.whl
#   python3 -m pip install --no-index --no-deps --no-build-isolation -e .
# WHEEL nnunetv2==2.8.1
# WHEEL dynamic-network-architectures==0.4.4
# WHEEL timm==1.0.22
# WHEEL batchgenerators==0.25.5
# WHEEL batchgeneratorsv2==0.3.6
# WHEEL acvl-utils==0.2.6
# WHEEL connected-components-3d==4.1.1
# WHEEL simpleitk==2.5.7
# WHEEL nibabel==5.4.2
# WHEEL pydicom==3.0.2
# WHEEL imagecodecs==2026.3.6
# WHEEL yacs==0.1.8
# WHEEL graphviz==0.21
# WHEEL blosc2==4.14.1
# WHEEL ndindex==1.10.1
# WHEEL numexpr==2.14.2
# WHEEL pydantic==2.14.4
# WHEEL pydantic-core==2.50.5
# WHEEL annotated-types==0.8.0
# WHEEL typing-inspection==0.4.5
set -uo pipefail

PY=${PYTHON:-python3}
W=${1:-/tmp/vismae_gpu_check}
END=$((SECONDS + 470)) # the whole run within 8 minutes: a 15-minute device budget leaves time to rerun it
cap() { # seconds for the next step: at most $1, and no more than what is left
    local left=$((END - SECONDS))
    ((left < 1)) && left=1
    echo $((left < $1 ? left : $1))
}
fail() { echo "FAILED: $1 (exit $2; log: $W/$1.log)"; }

"$PY" -c "import nnunetv2, dynamic_network_architectures, batchgeneratorsv2, acvl_utils, SimpleITK, blosc2, pydicom" \
    2>/dev/null || {
    echo "nnU-Net or one of its dependencies is missing: see the header of $0 for installing from wheels."
    exit 2
}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "torch sees no CUDA device."
    exit 2
}

if [ -e "$W" ] && [ ! -e "$W/.vismae_gpu_check" ]; then # never empty a folder this script did not make
    echo "$W exists and is not a work folder of $0: give another."
    exit 2
fi
rm -rf "$W" && mkdir -p "$W" && touch "$W/.vismae_gpu_check" || exit 2
export nnUNet_raw=$W/raw nnUNet_preprocessed=$W/preprocessed nnUNet_results=$W/results
export nnUNet_n_proc_DA=8 PYTHONUNBUFFERED=1
unset nnUNet_compile # nnU-Net's default: training compiles on CUDA
eval "$(nnUNetv2_vismae_env)"
U=$W/raw/Dataset802_VisMAEPhantoms/imagesUnlabeled

echo "== 0 data: 24 labelled phantoms planned and preprocessed by nnU-Net, 600 unlabeled"
"$PY" -c "from nnunetv2_vismae.phantoms.generator import generate_dataset as g; \
g('$W/raw', 802, num_train=24, num_test=0, num_unlabeled=600, size=128)" >"$W/data.log" 2>&1 || fail data $?
timeout "$(cap 90)" nnUNetv2_plan_and_preprocess -d 802 -c 2d -np 8 >"$W/prep.log" 2>&1 || fail prep $?

echo "== 1 pretraining: 300 bf16 steps x batch 256 at 224 px, 12 workers, GPU utilisation sampled"
SMI=
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 >"$W/gpu.csv" &
    SMI=$!
fi
timeout "$(cap 120)" nnUNetv2_vismae_pretrain -i "$U" -o "$W/mae" -device cuda --precision bf16 --steps 300 \
    --batch-size 256 --workers 12 --save-every 150 --preview-every 0 >"$W/mae.log" 2>&1 || fail mae $?
[ -n "$SMI" ] && kill "$SMI"

echo "== 2 DDP at world size 1 under torchrun (DDP forced on), --accum 2, then resumed 30 -> 40 steps"
cat >"$W/ddp_world1.py" <<'EOF'
"""nnUNetv2_vismae_pretrain with the DDP code path forced on at world size 1 (where it is normally skipped)."""
import sys

import torch
import torch.distributed as dist

import pretrain.runtime
from pretrain.cli import main

dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
pretrain.runtime.Runtime.distributed = property(lambda self: True)
sys.exit(main(sys.argv[1:]))
EOF
for steps in 30 40; do
    timeout "$(cap 45)" "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 "$W/ddp_world1.py" \
        -i "$U" -o "$W/ddp" -device cuda --steps $steps --accum 2 --batch-size 32 --workers 4 --save-every 15 \
        --preview-every 0 >"$W/ddp$steps.log" 2>&1 || fail "ddp$steps" $?
    grep -hE "Resuming|^Step [0-9]+/|rror" "$W/ddp$steps.log" | tail -n 2 | cut -c1-160
done

echo "== 3 nnUNetv2_vismae_speed -device cuda -c 2d 3d_fullres (nnU-Net's compile default)"
timeout "$(cap 240)" nnUNetv2_vismae_speed -device cuda -c 2d 3d_fullres -o "$W/speed" >"$W/speed.log" 2>&1 ||
    fail speed $?

echo "== 4 nnUNetv2_train VisMAETrainer, 1 epoch of 20 iterations, nnU-Net's CUDA defaults (torch.compile on)"
nnUNetv2_vismae_plan -d 802 --pretrained "$W/mae/encoder.safetensors" >"$W/plan.log" 2>&1 || fail plan $?
TORCH_LOGS=graph_breaks,recompiles timeout "$(cap 150)" nnUNetv2_train 802 2d 0 -p nnUNetVisMAEPlans \
    -tr VisMAETrainer_1epochs_20iters -device cuda >"$W/train.log" 2>&1 || fail train $?

echo "== key numbers (whole run $SECONDS s)"
"$PY" - "$W" <<'EOF'
import csv, os, statistics, sys

work = sys.argv[1]


def lines(*path):
    name = os.path.join(work, *path)
    return open(name).read().splitlines() if os.path.exists(name) else []


steps = list(csv.DictReader(lines("mae", "log.csv")))
if steps:
    rate = statistics.median(float(r["img_per_s"]) for r in steps[-100:])
    print(f"pretraining: {len(steps)} steps, loss {float(steps[0]['loss']):.3f} -> {float(steps[-1]['loss']):.3f}, "
          f"{rate:.0f} img/s (median of the last 100 steps, loader included)")
readings = [line.split(",") for line in lines("gpu.csv")]  # utilisation %, memory MiB; "[N/A]" left out
samples = [[float(v) for v in r] for r in readings if len(r) == 2 and all(v.strip().isdigit() for v in r)]
busy = [util for util, _ in samples[next((i for i, (u, _) in enumerate(samples) if u > 0), len(samples)):]]
if busy:
    print(f"GPU utilisation while pretraining: mean {statistics.mean(busy):.0f}% over {len(busy)} samples of 0.25 s "
          f"from the first busy one; GPU memory at most {max(m for _, m in samples) / 1024:.1f} GiB")
print("\n".join(lines("speed", "speed.md")))
train = lines("train.log")
shown = ("Using torch.compile", "bf16 autocast", "Loaded swin", "train_loss", "Epoch time", "Mean Validation Dice")
print("\n".join(line[:160] for line in train if any(s in line for s in shown)))
print(f"nnUNetv2_train: {sum('Graph break' in l for l in train)} graph breaks, "
      f"{sum('Recompiling' in l for l in train)} recompiles logged")
EOF
