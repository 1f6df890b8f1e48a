"""nnUNetv2_vismae_convert --from nnssl: checkpoints written the way nnssl writes them (its keys, its adaptation
plan as the plain dict ``AdaptationPlan.serialize()`` gives, training state beside) -> cnn encoder checkpoints
whose encoder computes what the nnssl network's encoder computes. Nothing is downloaded."""

from dataclasses import dataclass

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from nnunetv2_vismae.checkpoint import load_encoder_into, read_encoder_checkpoint
from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network, encoder_and_stem_as_encoder
from nnunetv2_vismae.checkpoint.convert import main
from nnunetv2_vismae.checkpoint.nnssl import RESENC_L, architecture_of

# a small ResEnc of nnssl's ResidualEncoderUNet kind (its BaseMAETrainer variant with architecture kwargs)
KWARGS = dict(
    n_stages=3,
    features_per_stage=[4, 8, 16],
    conv_op=nn.Conv3d,
    kernel_sizes=[(3, 3, 3)] * 3,
    strides=[(1, 1, 1), (2, 2, 2), (2, 2, 2)],
    n_blocks_per_stage=[1, 2, 1],
    n_conv_per_stage_decoder=[1, 1],
    conv_bias=True,
    norm_op=nn.InstanceNorm3d,
    norm_op_kwargs={"eps": 1e-5, "affine": True},
    dropout_op=None,
    dropout_op_kwargs=None,
    nonlin=nn.LeakyReLU,
    nonlin_kwargs={"inplace": True},
)
CITATIONS = [
    {
        "type": "Pre-training",
        "name": "OpenMind MAE",
        "apa_citations": ["Wald, T., et al. (2024). An OpenMind for 3D medical vision self-supervised learning."],
    }
]


def nnssl_network(seed=0) -> ResidualEncoderUNet:
    """The pretraining network as nnssl's get_network_from_plans builds it (non-trivial norms)."""
    torch.manual_seed(seed)
    network = ResidualEncoderUNet(input_channels=1, num_classes=1, deep_supervision=False, **KWARGS)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return network.eval()


def serialized_plan(arch_class_name="ResidualEncoderUNet", arch_kwargs="small") -> dict:
    """``AdaptationPlan.serialize()`` of nnssl: dataclasses as dicts, ops as dotted names, tuples kept."""
    if arch_kwargs == "small":
        arch_kwargs = {k: f"{v.__module__}.{v.__name__}" if isinstance(v, type) else v for k, v in KWARGS.items()}
    configuration = {
        "data_identifier": "nnsslPlans_onemmiso",
        "preprocessor_name": "DefaultPreprocessor",
        "spacing_style": "onemmiso",
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_mask": "resample_data_or_seg_to_shape",
        "resampling_fn_mask_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "spacing": [1, 1, 1],
        "patch_size": [16, 16, 16],
    }
    return {
        "architecture_plans": {
            "arch_class_name": arch_class_name,
            "arch_kwargs": arch_kwargs,
            "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"] if arch_kwargs else None,
        },
        "pretrain_plan": {
            "dataset_name": "Dataset745_OpenNeuro_v2",
            "plans_name": "nnsslPlans",
            "original_median_spacing_after_transp": [1, 1, 1],
            "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2],
            "configurations": {"onemmiso": configuration},
            "experiment_planner_used": "FixedResEncUNetPlanner",
        },
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": (160, 160, 160),
        "key_to_encoder": "encoder.stages",
        "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"),
        "key_to_lpe": None,
    }


def save_like_nnssl(path, network, plan, citations=None, weights=None):
    """The dict nnssl's ``AbstractBaseTrainer.save_checkpoint`` torch.saves, after one optimizer step."""
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True)
    network(torch.randn(1, 1, 16, 16, 16)).mean().backward()
    optimizer.step()
    checkpoint = {
        "network_weights": network.state_dict() if weights is None else weights,
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": {"train_losses": [0.9, 0.7], "epoch_end_timestamps": [1.0, 2.0]},
        "_best_ema": None,
        "current_epoch": 2,
        "init_args": {
            "plan": plan["pretrain_plan"],
            "configuration_name": "onemmiso",
            "fold": 0,
            "pretrain_json": {"collection_name": "OpenMind"},
            "device": torch.device("cpu"),
        },
        "trainer_name": "BaseMAETrainer",
        "nnssl_adaptation_plan": plan,
    }
    if citations is not None:  # what the published checkpoints add (nnU-Net master's like_nnssl reads it)
        checkpoint["citations"] = citations
    torch.save(checkpoint, path)


def convert(tmp_path, capsys, *extra, plan=None, weights=None, citations=CITATIONS, network=None):
    source, out = tmp_path / "checkpoint_final.pth", tmp_path / "encoder.safetensors"
    network = network or nnssl_network()
    save_like_nnssl(source, network, plan or serialized_plan(), citations, weights)
    code = main(["--from", "nnssl", str(source), str(out), *extra])
    return code, out, capsys.readouterr()


def stage_outputs(encoder, x) -> list[torch.Tensor]:
    with torch.no_grad():
        return encoder(x)


def test_converted_encoder_computes_the_nnssl_encoders_stages(tmp_path, capsys):
    nnssl = nnssl_network()
    code, out, _ = convert(tmp_path, capsys, network=nnssl)
    assert code == 0
    checkpoint = read_encoder_checkpoint(out)
    network = build_stock_network(checkpoint.encoder_config["architecture"], 1)
    assert set(checkpoint.tensors) == set(network.encoder.state_dict())  # no missing or extra stem/encoder key
    with encoder_and_stem_as_encoder(network):
        report = load_encoder_into(network, checkpoint, log=lambda s: None)
    assert report.fraction_loaded == 1.0 and not (report.adapted or report.missing or report.unexpected)
    x = torch.randn(2, 1, 16, 16, 16)
    ours, theirs = stage_outputs(network.encoder.eval(), x), stage_outputs(nnssl.encoder, x)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_metadata_records_dims_normalization_source_and_citations(tmp_path, capsys):
    code, out, captured = convert(tmp_path, capsys, "--license", "CC-BY-4.0")
    assert code == 0, captured.err
    meta = read_encoder_checkpoint(out).metadata
    assert meta["spatial_dims"] == 3 and meta["encoder_config"]["conv_op"] == "Conv3d"
    assert meta["normalization"]["scheme"] == "nnunet"
    assert meta["normalization"]["normalization_schemes"] == ["ZScoreNormalization"]
    assert meta["spacing"] == [1, 1, 1] and meta["patch_size"] == [16, 16, 16]
    assert meta["recommended_downstream_patch_size"] == [160, 160, 160]
    assert meta["citations"] == CITATIONS and meta["license"] == "CC-BY-4.0"
    record = meta["converted_from"]
    assert record["layout"] == "nnssl" and record["trainer"] == "BaseMAETrainer" and record["epoch"] == 2
    assert record["dropped"] == {"decoder": len(nnssl_network().decoder.state_dict())}
    assert "Please cite" in captured.out  # the verifying load already shows what fine-tuning will print


def test_fine_tuning_prints_the_checkpoints_citation(tmp_path, capsys):
    from nnunetv2_vismae.checkpoint.reference import checkpoint_reference

    from ..training.test_cnn_trainer import bare_trainer

    code, out, _ = convert(tmp_path, capsys, "--cite", "Our own pretraining paper (2026).")
    assert code == 0
    checkpoint = read_encoder_checkpoint(out)
    trainer = bare_trainer(build_stock_network(checkpoint.encoder_config["architecture"], 1))
    trainer.load_pretrained_encoder(checkpoint_reference(out, checkpoint))
    log = "\n".join(trainer.log)
    assert "Please cite the associated papers when using pre-trained weights" in log
    assert CITATIONS[0]["apa_citations"][0] in log and "Our own pretraining paper (2026)." in log


def test_a_spark_checkpoint_keeps_only_the_encoder_under_the_plans_keys(tmp_path, capsys):
    """nnssl's SparK3D holds the U-Net twice (``architecture.*`` and ``encoder.*``) plus densify layers."""
    nnssl = nnssl_network()
    weights = {**{f"architecture.{k}": v for k, v in nnssl.state_dict().items()}, **nnssl.state_dict()}
    weights["mask_tokens.0"] = torch.zeros(1, 16, 1, 1, 1)
    code, out, captured = convert(tmp_path, capsys, weights=weights, network=nnssl)
    assert code == 0, captured.err
    checkpoint = read_encoder_checkpoint(out)
    assert all(torch.equal(checkpoint.tensors[k], v) for k, v in nnssl.encoder.state_dict().items())
    assert set(checkpoint.metadata["converted_from"]["dropped"]) == {"architecture", "decoder", "mask_tokens"}


def test_the_resencl_preset_is_nnssls_resencl():
    """nnssl's ``get_res_enc_l`` (its architecture_registry), written out here, builds what the block does."""
    with torch.device("meta"):
        nnssl = ResidualEncoderUNet(
            input_channels=1,
            n_stages=6,
            features_per_stage=[32, 64, 128, 256, 320, 320],
            conv_op=nn.Conv3d,
            kernel_sizes=[[3, 3, 3] for _ in range(6)],
            strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
            n_blocks_per_stage=[1, 3, 4, 6, 6, 6],
            num_classes=2,
            n_conv_per_stage_decoder=[1, 1, 1, 1, 1],
            conv_bias=True,
            norm_op=nn.InstanceNorm3d,
            norm_op_kwargs={"eps": 1e-5, "affine": True},
            nonlin=nn.LeakyReLU,
            nonlin_kwargs={"inplace": True},
        )
        ours = build_stock_network(architecture_of(serialized_plan(RESENC_L, None), "plan"), 1, initialize=False)
    assert type(ours) is ResidualEncoderUNet
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in nnssl.state_dict().items()}
    assert str(ours) == str(nnssl)  # every op and its settings


# ------------------------------------------------------------------------------------ refusals
def refused(code, captured) -> str:
    assert code == 2
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


class _Marker:
    """An object whose unpickling would create a file: the code execution a checkpoint must not do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@dataclass
class AdaptationPlan:  # nnssl's dataclass, pickled as is instead of serialized
    key_to_encoder: str = "encoder.stages"


def test_a_pickle_needing_code_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    source, out = tmp_path / "evil.pth", tmp_path / "encoder.safetensors"
    torch.save({"network_weights": nnssl_network().state_dict(), "nnssl_adaptation_plan": _Marker(str(marker))}, source)
    err = refused(main(["--from", "nnssl", str(source), str(out)]), capsys.readouterr())
    assert "refused" in err and "weights_only=True" in err
    assert not marker.exists() and not out.exists()


def test_a_plan_saved_as_a_dataclass_is_refused_in_one_sentence(tmp_path, capsys):
    source, out = tmp_path / "dataclass.pth", tmp_path / "encoder.safetensors"
    torch.save({"network_weights": nnssl_network().state_dict(), "nnssl_adaptation_plan": AdaptationPlan()}, source)
    err = refused(main(["--from", "nnssl", str(source), str(out)]), capsys.readouterr())
    assert "AdaptationPlan" in err and not out.exists()


@pytest.mark.parametrize("name", ["PrimusM", "NoSkipResEncL", "os.system"])
def test_a_plan_naming_an_architecture_we_do_not_build_is_refused(tmp_path, capsys, name):
    err = refused(*convert(tmp_path, capsys, plan=serialized_plan(name, None))[::2])
    assert f'"{name}"' in err and "cannot be converted" in err


def test_an_op_outside_the_list_is_refused_before_anything_is_imported(tmp_path, capsys):
    plan = serialized_plan()
    plan["architecture_plans"]["arch_kwargs"]["nonlin"] = "os.system"
    err = refused(*convert(tmp_path, capsys, plan=plan)[::2])
    assert "nonlin" in err and "os.system" in err


def test_tensors_not_matching_the_plan_are_refused(tmp_path, capsys):
    plan = serialized_plan()
    plan["architecture_plans"]["arch_kwargs"]["features_per_stage"] = [4, 8, 32]
    code, out, captured = convert(tmp_path, capsys, plan=plan)
    err = refused(code, captured)
    assert "do not match" in err and "wrong shape" in err and not out.exists()


def test_an_encoder_of_repeated_views_is_refused_before_its_values_are_copied(tmp_path, capsys):
    """torch.save stores an expanded view's one value: the values it claims must not be copied."""
    source, out = tmp_path / "crafted.pth", tmp_path / "encoder.safetensors"
    plan = serialized_plan()
    plan["architecture_plans"]["arch_kwargs"]["features_per_stage"] = [32, 64, 128]
    with torch.device("meta"):
        shapes = ResidualEncoderUNet(input_channels=1, num_classes=1, **{**KWARGS, "features_per_stage": [32, 64, 128]})
    state = {k: torch.zeros(1, dtype=v.dtype).expand(v.shape) for k, v in shapes.state_dict().items()}
    torch.save({"network_weights": state, "nnssl_adaptation_plan": plan}, source)
    err = refused(main(["--from", "nnssl", str(source), str(out)]), capsys.readouterr())
    assert "claim" in err and "bytes" in err and not out.exists()


def test_a_swin_layout_on_an_nnssl_file_points_to_from_nnssl(tmp_path, capsys):
    source, out = tmp_path / "checkpoint_final.pth", tmp_path / "encoder.safetensors"
    save_like_nnssl(source, nnssl_network(), serialized_plan())
    err = refused(main(["--from", "auto", str(source), str(out)]), capsys.readouterr())
    assert "--from nnssl" in err


def test_in_channels_is_refused_for_nnssl(tmp_path, capsys):
    err = refused(
        main(["--from", "nnssl", "x.pth", str(tmp_path / "o.safetensors"), "--in-channels", "2"]), capsys.readouterr()
    )
    assert "--in-channels" in err


def test_the_citation_notice_prints_only_text_and_escapes_it():
    from nnunetv2_vismae.checkpoint.citations import citation_notice

    crafted = [
        {"type": "Pre-training", "name": "x", "apa_citations": ["Paper \x1b[2J (2024)."]},
        {"type": "t", "apa_citations": "not a list"},
        "not an entry",
    ]
    notice = citation_notice({"citations": crafted})
    assert "Paper \\x1b[2J (2024)." in notice and "\x1b" not in notice and "not a list" not in notice
    assert citation_notice({"license": "CC-BY-4.0"}).count("CC-BY-4.0") == 1
    assert citation_notice({"citations": crafted[1:]}) is None
