"""The encoder checkpoint file: round trip, hashing, atomic writes and refusals."""

import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from nnunetv2_vismae.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_content_hash,
    read_encoder_checkpoint,
    save_encoder_checkpoint,
    tensors_content_hash,
    verify_checkpoint,
)


def test_round_trip_is_bit_exact_and_keeps_metadata(tmp_path, make_encoder, base_metadata):
    encoder = make_encoder(0)
    state = encoder.state_dict()
    extra = {
        "normalization": {"scheme": "ct", "ct_clip": [-1000.0, 400.5], "ct_stats": [12.25, 3.5]},
        "source_plans": {"dataset": "Dataset004_Hippocampus", "spacing": [1.0, 0.75]},
        "data_sources": [{"folder": "/data/x", "images": 1200}],
        "mask": {"ratio": 0.75},
        "steps": 1234,
        "final_loss": 0.0123,
    }
    path = tmp_path / "enc.safetensors"
    returned = save_encoder_checkpoint(path, state, {**base_metadata(encoder), **extra})

    ckpt = read_encoder_checkpoint(path)
    assert set(ckpt.tensors) == set(state)
    for name, value in state.items():
        assert ckpt.tensors[name].dtype == value.dtype
        assert torch.equal(ckpt.tensors[name], value), name
    for key, value in extra.items():
        assert ckpt.metadata[key] == value
    assert ckpt.metadata["format"] == FORMAT_NAME
    assert ckpt.metadata["format_version"] == FORMAT_VERSION == 1
    assert ckpt.family == "swin"
    assert ckpt.encoder_config == encoder.config.to_json()
    assert ckpt.normalization == extra["normalization"]
    assert returned == ckpt.content_hash == ckpt.metadata["content_hash"]
    assert returned == checkpoint_content_hash(path) == tensors_content_hash(state)


def test_bfloat16_tensors_round_trip(tmp_path, make_encoder, base_metadata):
    encoder = make_encoder(0)
    state = {k: v.to(torch.bfloat16) for k, v in encoder.state_dict().items()}
    path = tmp_path / "bf16.safetensors"
    h = save_encoder_checkpoint(path, state, base_metadata(encoder))
    ckpt = read_encoder_checkpoint(path)
    assert all(torch.equal(ckpt.tensors[k], v) and ckpt.tensors[k].dtype == torch.bfloat16 for k, v in state.items())
    assert h == ckpt.content_hash


def test_hash_changes_with_one_value_but_not_with_order(make_encoder):
    state = make_encoder(0).state_dict()
    h = tensors_content_hash(state)
    assert tensors_content_hash(dict(reversed(list(state.items())))) == h

    changed = {k: v.clone() for k, v in state.items()}
    w = changed["layers.2.blocks.0.mlp.fc1.weight"]
    w.view(-1)[5] = torch.nextafter(w.view(-1)[5], torch.tensor(float("inf")))
    assert tensors_content_hash(changed) != h

    renamed = dict(state)
    renamed["norm.scale"] = renamed.pop("norm.weight")
    assert tensors_content_hash(renamed) != h


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path, saved, make_encoder, base_metadata, monkeypatch):
    path, encoder, first_hash = saved
    original = path.read_bytes()

    def failing_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", failing_save_file)
    other = make_encoder(5)
    with pytest.raises(CheckpointError, match="No space left"):
        save_encoder_checkpoint(path, other.state_dict(), base_metadata(other))
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == [path.name]

    monkeypatch.undo()
    second_hash = save_encoder_checkpoint(path, other.state_dict(), base_metadata(other))
    assert second_hash != first_hash
    assert read_encoder_checkpoint(path).content_hash == second_hash
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_truncated_file_is_refused(tmp_path, saved):
    path, _, _ = saved
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 20, 5):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated") as info:
            read_encoder_checkpoint(bad)
        assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    "content", [os.urandom(4096), b"", b"hello world, not a checkpoint", struct.pack("<Q", 40) + b"[" * 40]
)
def test_non_safetensors_file_is_refused(tmp_path, content):
    bad = tmp_path / "random.safetensors"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_encoder_checkpoint(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_encoder_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="not a file"):
        read_encoder_checkpoint(tmp_path)


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickle_files_are_refused_without_running_code(tmp_path, writer):
    marker = tmp_path / "code_ran.txt"
    bad = tmp_path / "evil.safetensors"
    obj = {"patch_embed.proj.weight": torch.zeros(2), "payload": _Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, bad)
    else:
        bad.write_bytes(pickle.dumps(obj, protocol=4))

    for call in (read_encoder_checkpoint, checkpoint_content_hash, lambda p: verify_checkpoint(p, "0" * 64)):
        with pytest.raises(CheckpointError, match="pickle"):
            call(bad)
    assert not marker.exists()

    # the payload is live: an unsafe loader would have run it
    if writer == "pickle":
        pickle.loads(bad.read_bytes())
    else:
        plain = tmp_path / "evil.pt"  # torch.load treats *.safetensors names specially
        plain.write_bytes(bad.read_bytes())
        torch.load(plain, weights_only=False)
    assert marker.exists()


def test_flipped_data_byte_is_reported_as_corruption(tmp_path, saved):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's bytes
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        read_encoder_checkpoint(bad)


def _rewrite_header(path, target, change):
    """Copy ``path`` to ``target`` with its (JSON-text) metadata changed by ``change(dict)``."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(meta)
    save_file(tensors, str(target), metadata=meta)
    return target


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(format_version="2"), "newer"),
        (lambda m: m.update(format_version='"one"'), "format_version"),
        (lambda m: m.update(format='"timm.swin"'), "expected 'nnunetv2_vismae.encoder'"),
        (lambda m: m.pop("format"), "not an nnunetv2_vismae encoder checkpoint"),
        (lambda m: m.update(family='"vit"'), "'vit'"),
        (lambda m: m.pop("normalization"), "normalization"),
        (lambda m: m.update(encoder_config=json.dumps({"embed_dim": 24})), "encoder_config"),
        (
            lambda m: m.update(encoder_config=json.dumps({**json.loads(m["encoder_config"]), "depths": [1, 1, 2, 1]})),
            "do not match",
        ),
        (lambda m: m.update(steps="not json {"), "'steps' is not JSON"),
        (lambda m: m.update(content_hash=json.dumps("ab" * 32)), "corrupted"),
    ],
)
def test_header_problems_are_refused(tmp_path, saved, change, message):
    path, _, _ = saved
    bad = _rewrite_header(path, tmp_path / "bad.safetensors", change)
    with pytest.raises(CheckpointError, match=message):
        read_encoder_checkpoint(bad)


def test_tensors_must_match_the_config(tmp_path, make_encoder, base_metadata):
    encoder = make_encoder(0)
    meta = base_metadata(encoder)
    prefixed = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}  # a whole-model dict
    with pytest.raises(CheckpointError, match="missing .*unexpected .*state_dict"):
        save_encoder_checkpoint(tmp_path / "x.safetensors", prefixed, meta)
    deeper = make_encoder(0, depths=(1, 1, 2, 1))
    with pytest.raises(CheckpointError, match="do not match"):
        save_encoder_checkpoint(tmp_path / "x.safetensors", deeper.state_dict(), meta)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "drop, bad_value, message",
    [
        ("normalization", None, "lacks required entries"),
        (None, {"family": "vit"}, "'vit'"),
        (None, {"normalization": "zscore"}, "normalization"),
        (None, {"steps": object()}, "'steps' is not JSON-serialisable"),
    ],
)
def test_save_refuses_bad_metadata(tmp_path, make_encoder, base_metadata, drop, bad_value, message):
    encoder = make_encoder(0)
    meta = base_metadata(encoder)
    if drop:
        del meta[drop]
    meta.update(bad_value or {})
    with pytest.raises(CheckpointError, match=message):
        save_encoder_checkpoint(tmp_path / "x.safetensors", encoder.state_dict(), meta)
    assert os.listdir(tmp_path) == []


def test_verify_checkpoint(saved):
    path, _, content_hash = saved
    assert verify_checkpoint(path, content_hash).content_hash == content_hash
    assert verify_checkpoint(path, "sha256:" + content_hash.upper()).content_hash == content_hash
    with pytest.raises(CheckpointError, match="was expected"):
        verify_checkpoint(path, "0" * 64)


def test_the_metadata_hash_covers_every_entry_but_the_content_hash(saved, tmp_path):
    """Plans record it beside the content hash, which covers only the tensors (issue 29)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path, _, content_hash = saved
    recorded = read_encoder_checkpoint(path).metadata_hash
    with safe_open(str(path), "pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}

    def rewritten(**entries) -> str:
        """The metadata hash of ``path`` written with its header's entries in reverse order and respaced."""
        changed = {**{k: json.loads(v) for k, v in header.items()}, **entries}
        save_file(
            tensors, str(tmp_path / "x.safetensors"), {k: json.dumps(v, indent=1) for k, v in reversed(changed.items())}
        )
        return verify_checkpoint(tmp_path / "x.safetensors", content_hash).metadata_hash

    assert rewritten() == recorded and rewritten(content_hash="SHA256:" + content_hash.upper()) == recorded
    assert rewritten(steps=2) != recorded and rewritten(normalization={"scheme": "ct"}) != recorded
    with pytest.raises(CheckpointError, match=r"metadata hash .* \(its metadata changed since"):
        verify_checkpoint(path, content_hash, "0" * 64)
    assert verify_checkpoint(path, content_hash, recorded).metadata_hash == recorded


def test_reading_never_calls_torch_load(saved, monkeypatch):
    path, _, _ = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    assert read_encoder_checkpoint(path).family == "swin"


@pytest.mark.parametrize("family", ["swin", "cnn"])
def test_family_configs_are_checked_for_type_and_missing_entries(family):
    from nnunetv2_vismae.checkpoint.families import ConfigProblems, get_family

    family = get_family(family)
    with pytest.raises(ConfigProblems, match=r"^encoder_config is \[\], expected a JSON object\.$"):
        family.validated_config([])
    given = {"embed_dim": 24} if family.name == "swin" else {"in_channels": 1}
    with pytest.raises(ConfigProblems) as info:
        family.validated_config(given)
    missing = [k for k in family.required_config_keys if k not in given]
    assert info.value.problems[: len(missing)] == [
        f"encoder_config lacks the entry {k!r}, expected {family.config_rules[k].expected}." for k in missing
    ]
