"""A pack folder whose settings.json is not JSON is refused with one sentence naming it, and kept."""

from __future__ import annotations

from pretrain.pack_cli import main as pack_main
from tests.pretrain.test_resume_corpus import _error


def test_a_pack_whose_settings_file_is_not_json_is_one_sentence(png_folder, tmp_path, capsys):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "settings.json").write_text("my notes, not JSON")
    assert pack_main(["-i", png_folder, "-o", str(pack), "-np", "1"]) == 2
    assert _error(capsys, "nnUNetv2_vismae_pack") == (
        f"nnUNetv2_vismae_pack: error: {pack}/settings.json is not the JSON settings file of a pack (Expecting "
        "value: line 1 column 1 (char 0)); choose another -o, or move that file away if this folder is a pack."
    )
    assert (pack / "settings.json").read_text() == "my notes, not JSON"
