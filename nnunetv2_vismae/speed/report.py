"""The Markdown table of ``nnUNetv2_vismae_speed``: each figure, what it means, and its goal met or the gap."""

from __future__ import annotations

from nnunetv2_vismae.planning.families import NNUNET_NETWORK_FAMILY

# the goals
PRETRAIN_FRACTION_OF_BF16 = 0.5
LOADER_OVER_MODEL = 3.0
VISMAE_OVER_NNUNET = 1.0
PRETRAIN_3D_OVER_NNUNET = 1.3


def _goal(ok: bool, text: str) -> str:
    return f"{'met' if ok else 'GAP'}: {text}"


def _cpu_ratio(vismae: float | None, nnunet: float | None) -> str:
    """The same comparison in CPU seconds of the process, which other processes on a busy CPU disturb less."""
    if not vismae or not nnunet:
        return ""
    return f"; CPU time {vismae:.2f} s / {nnunet:.2f} s = {vismae / nnunet:.2f}"


def _timing(t: dict | None) -> str:
    """How the seconds were taken (``nnunetv2_vismae.device.StepTiming``)."""
    if not t:
        return ""
    return f"; {t['statistic']} of {t['repeats']} after {t['warmup']} warm-up(s)"


def _of_datasheet(flops: float, peak: float | None) -> str:
    return f"{flops / peak:.0%} of the datasheet's dense bf16 peak" if peak else "datasheet bf16 peak: n/a"


def _setup(r: dict) -> str:
    """A trainer's or predictor's precision and whether its network is compiled, where recorded."""
    parts = [r["precision"]] if r.get("precision") else []
    if "compiled" in r:
        parts.append("compiled" if r["compiled"] else "eager")
    return ", ".join(parts) or "-"


def _patch(size: int | list[int]) -> str:
    """A patch as the rows give it: one side (2D pretraining) or the sides joined by x."""
    return "x".join(map(str, size)) if isinstance(size, list) else str(size)


def _flops_row(measure: str, p: dict, matmul: dict, peak: float | None) -> tuple[str, str, str, str]:
    """A pretraining step's model FLOP/s against the machine's matmul; the goal: half the bf16 matmul."""
    fraction_bf16 = p["model_flops_per_s"] / matmul["bf16"]
    fraction_fp32 = p["model_flops_per_s"] / matmul["fp32"]
    return (
        measure,
        f"{p['model_flops_per_s'] / 1e9:.1f} GFLOP/s",
        f"{p['flops_per_step'] / 1e9:.1f} GFLOP per step (FlopCounterMode) / step time; "
        f"{fraction_fp32:.0%} of fp32 matmul; {_of_datasheet(p['model_flops_per_s'], peak)}",
        _goal(fraction_bf16 >= PRETRAIN_FRACTION_OF_BF16, f"{fraction_bf16:.0%} of bf16 matmul (goal >= 50%)"),
    )


def _pretraining_rows(name: str, p: dict, matmul: dict, peak: float | None) -> list[tuple[str, str, str, str]]:
    if "error" in p:
        return [(f"pretrain {name}", "failed", p["error"], "not measured")]
    where = f"batch {p['batch_size']}, {_patch(p['patch_size'])} px, {p['precision']}, decoder {p['decoder']}"
    return [
        (
            f"pretrain {name}: images/s",
            f"{p['images_per_s']:.2f}",
            f"training steps (mask, forward, backward, AdamW) per second x batch; {where}; peak {p['peak_mb']:.0f} MB"
            + _timing(p.get("timing")),
            "-",
        ),
        _flops_row(f"pretrain {name}: model FLOP/s", p, matmul, peak),
        (
            f"pretrain {name}: loader samples/s",
            f"{p['loader_samples_per_s']:.1f}",
            f"{p['workers']} workers (the default), measured with the model idle",
            _goal(
                p["loader_vs_model"] >= LOADER_OVER_MODEL,
                f"{p['loader_vs_model']:.1f}x what the model consumes (goal >= 3x)",
            ),
        ),
    ]


def _finetuning_rows(ft: dict, dims: str = "") -> list[tuple[str, str, str, str]]:
    """VisMAETrainer's step against nnUNetTrainer's per precision; ``dims``: "3D " for the volume rows."""
    rows = []
    for precision, r in ft.items():
        if "not_measured" in r:
            rows.append((f"{dims}fine-tune step {precision}", "not measured", r["not_measured"], "-"))
            continue
        a, b = r["nnunet"], r["vismae"]
        ratio = b["step_s"] / a["step_s"]
        rows.append(
            (
                f"{dims}fine-tune step {precision}: VisMAE / nnU-Net",
                f"{b['step_s']:.3f} s / {a['step_s']:.3f} s",
                f"nnU-Net's train_step (forward, loss, backward, optimizer) on batch {a['batch_size']}, patch "
                f"{_patch(a['patch_size'])}; {_setup(b)} / {_setup(a)}; peak {b['peak_mb']:.0f} / {a['peak_mb']:.0f} MB"
                + _timing(a.get("timing"))
                + _cpu_ratio(b.get("step_cpu_s"), a.get("step_cpu_s")),
                _goal(ratio <= VISMAE_OVER_NNUNET, f"ratio {ratio:.2f} (goal <= 1)"),
            )
        )
    return rows


def _inference_rows(inf: dict) -> list[tuple[str, str, str, str]]:
    a, b = inf["nnunet"], inf["vismae"]
    ratio = b["case_s"] / a["case_s"]
    return [
        (
            "inference per case: VisMAE / nnU-Net",
            f"{b['case_s']:.3f} s / {a['case_s']:.3f} s",
            f"nnU-Net's predictor on one {a['case_shape'][0]}x{a['case_shape'][1]} case (preprocessing, sliding "
            f"window, mirroring {a['mirroring_axes']}, export); {_setup(b)} / {_setup(a)}; "
            f"peak {b['peak_mb']:.0f} / {a['peak_mb']:.0f} MB"
            + _timing(a.get("timing"))
            + _cpu_ratio(b.get("case_cpu_s"), a.get("case_cpu_s")),
            _goal(ratio <= VISMAE_OVER_NNUNET, f"ratio {ratio:.2f} (goal <= 1)"),
        )
    ]


def nnunet_step(finetuning: dict) -> dict:
    """nnUNetTrainer's step in the first precision measured: fp32 on a CPU (as nnU-Net trains there), its own AMP
    on CUDA; the 3D pretraining steps are measured at its patch and batch, in that precision."""
    return next(r["nnunet"] for r in finetuning.values() if "nnunet" in r)


def _volume_rows(v: dict, matmul: dict, peak: float | None) -> list[tuple[str, str, str, str]]:
    """The 3D rows (``-c 3d_fullres``): VisMAE's fine-tuning step against nnU-Net's; the MAE pretraining step of
    nnU-Net's own network against nnU-Net's training step, and the 3D loader against the model; each pretraining
    family's model FLOP/s against the machine's matmul."""
    rows = _finetuning_rows(v["finetuning"], "3D ")
    for family, p in v["pretraining"].items():
        if "error" in p:
            rows.append((f"3D pretrain {family} MAE", "failed", p["error"], "not measured"))
        elif family == NNUNET_NETWORK_FAMILY:
            rows += _nnunet_network_mae_rows(family, p, nnunet_step(v["finetuning"]))
    for family, p in v["pretraining"].items():
        if "error" not in p:
            rows.append(_volume_flops_row(family, p, matmul, peak))
    return rows


def _nnunet_network_mae_rows(family: str, p: dict, a: dict) -> list[tuple[str, str, str, str]]:
    """The MAE on nnU-Net's own 3D network: its pretraining step against nnU-Net's training step, and the loader."""
    ratio = p["step_s"] / a["step_s"]
    patch = _patch(a["patch_size"])
    return [
        (
            f"3D step: pretrain {family} MAE / nnU-Net",
            f"{p['step_s']:.3f} s / {a['step_s']:.3f} s",
            f"the pretraining loop's train_step (mask, forward, backward, AdamW) against nnUNetTrainer's train_step "
            f"(forward, deep-supervision loss, backward, SGD), 3d_fullres of the same plans, batch {a['batch_size']}, "
            f"patch {patch}; {p['precision']} / {_setup(a)}; in two processes, one after the other"
            + _timing(a.get("timing"))
            + _cpu_ratio(p.get("step_cpu_s"), a.get("step_cpu_s")),
            _goal(ratio <= PRETRAIN_3D_OVER_NNUNET, f"ratio {ratio:.2f} (goal <= {PRETRAIN_3D_OVER_NNUNET})"),
        ),
        (
            "3D loader crops/s",
            f"{p['loader_samples_per_s']:.1f}",
            f"random {patch} crops of nnU-Net's preprocessed volumes, as pretraining reads them; "
            f"{p['workers']} workers (the default), measured with the model idle",
            _goal(
                p["loader_vs_model"] >= LOADER_OVER_MODEL,
                f"{p['loader_vs_model']:.1f}x what the model consumes (goal >= 3x)",
            ),
        ),
    ]


def _volume_flops_row(family: str, p: dict, matmul: dict, peak: float | None) -> tuple[str, str, str, str]:
    measure, value, text, goal = _flops_row(f"3D pretrain {family}: model FLOP/s", p, matmul, peak)
    where = f"{p['step_s']:.3f} s a step at batch {p['batch_size']}, patch {_patch(p['patch_size'])}, {p['precision']}"
    return measure, value, f"{where}; {text}" + _timing(p.get("timing")), goal


def markdown_report(r: dict) -> str:
    m, matmul = r["machine"], r["matmul_flops_per_s"]
    rows = [
        ("matmul fp32", f"{matmul['fp32'] / 1e9:.1f} GFLOP/s", "the yardstick: best square matmul", "-"),
        (
            "matmul bf16",
            f"{matmul['bf16'] / 1e9:.1f} GFLOP/s",
            "the yardstick of the 50% goal"
            + ("" if m["native_bf16"] else "; emulated on this CPU, so that goal says nothing here"),
            "-",
        ),
        (
            "bf16 datasheet peak",
            f"{peak / 1e9:.1f} GFLOP/s" if (peak := r.get("datasheet_bf16_flops_per_s")) else "n/a",
            "the device's dense bf16 peak on its datasheet (known GPUs only)"
            + (f"; the matmul reaches {matmul['bf16'] / peak:.0%} of it" if peak else ""),
            "-",
        ),
    ]
    for name, p in r.get("pretraining", {}).items():
        rows += _pretraining_rows(name, p, matmul, r.get("datasheet_bf16_flops_per_s"))
    rows += _finetuning_rows(r.get("finetuning", {}))
    if r.get("inference"):
        rows += _inference_rows(r["inference"])
    if r.get("volumes"):
        rows += _volume_rows(r["volumes"], matmul, r.get("datasheet_bf16_flops_per_s"))
    load = ", ".join(f"{x:.1f}" for x in m["load_average_at_start"])
    compile_setting = m.get("nnUNet_compile") or "unset (nnU-Net's default: training compiles on CUDA)"
    lines = [
        f"Device: {m['device']}; torch {m['torch']}; native bf16: {m['native_bf16']}; "
        f"nnUNet_compile: {compile_setting}; cudnn.benchmark: {m.get('cudnn_benchmark')}; "
        f"load average at start: {load}",
        "",
        "| measure | value | what it is | goal |",
        "| --- | --- | --- | --- |",
    ]
    return "\n".join(lines + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]) + "\n"
