"""nnUNetv2_vismae_inspect: prints metadata and tensor groups; one line and exit 2 on bad input."""

import os

import pytest

from nnunetv2_vismae.checkpoint import save_encoder_checkpoint
from nnunetv2_vismae.checkpoint.cli import main
from tests.conftest import run


def test_inspect_prints_metadata_and_groups(tmp_path, make_encoder, base_metadata, capsys):
    encoder = make_encoder(0)
    path = tmp_path / "enc.safetensors"
    content_hash = save_encoder_checkpoint(
        path, encoder.state_dict(), base_metadata(encoder, steps=321, final_loss=0.25)
    )
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    for text in (
        'format: "nnunetv2_vismae.encoder"',
        "format_version: 1",
        'family: "swin"',
        content_hash,
        "depths: [1, 1, 1, 1]",
        'scheme: "zscore"',
        "steps: 321",
        "final_loss: 0.25",
    ):
        assert text in out, text
    total = sum(v.numel() for v in encoder.state_dict().values())
    assert f"Tensors: {len(encoder.state_dict())}, {total:,} parameters, dtype float32" in out
    group_lines = [line.split() for line in out.splitlines()[-6:]]
    assert [g[0] for g in group_lines] == ["patch_embed", "layers.0", "layers.1", "layers.2", "layers.3", "norm"]
    patch_params = sum(v.numel() for k, v in encoder.state_dict().items() if k.startswith("patch_embed."))
    assert group_lines[0][2] == f"{patch_params:,}"
    assert sum(int(g[2].replace(",", "")) for g in group_lines) == total


@pytest.mark.slow
def test_console_script_bad_file_gives_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(2048))
    result = run(["nnUNetv2_vismae_inspect", str(bad)], {**os.environ, "PYTHONWARNINGS": "default"}, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.safetensors", None, "does not exist"),
        ("short.safetensors", b"\x10\x00\x00", "truncated"),
        ("zip.safetensors", b"PK\x03\x04" + b"\x00" * 60, "pickle"),
    ],
)
def test_main_reports_bad_input_in_one_line(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err


def test_main_without_argument_is_a_usage_error(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err == "nnUNetv2_vismae_inspect: error: The following arguments are required: FILE.\n"


def test_escape_sequences_in_metadata_never_reach_the_terminal(tmp_path, make_encoder, base_metadata, capsys):
    """Issue 17: a metadata key holding an escape sequence was printed raw."""
    encoder = make_encoder(0)
    path = tmp_path / "enc.safetensors"
    save_encoder_checkpoint(
        path,
        encoder.state_dict(),
        base_metadata(
            encoder,
            **{
                "\x1b[2J\x1b]0;owned\x07title": 1,
                "notes": {"\x1b[31mred\u202e": "\x1b[5mblink\r\nline", "ok": "caf\u00e9"},
            },
        ),
    )
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\x07\r\u202e")
    assert "\\x1b[2J\\x1b]0;owned\\x07title: 1" in out  # the key, escaped
    assert "\\x1b[31mred\\u202e:" in out  # a nested key
    assert '"\\u001b[5mblink\\r\\nline"' in out  # a value, as ASCII JSON
