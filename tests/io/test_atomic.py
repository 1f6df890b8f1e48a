import json
import os

import pytest

from nnunetv2_vismae.io.atomic import atomic_path, write_json_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "plans.json"
    write_json_atomic(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write('{"version": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["plans.json"]


def test_temporary_keeps_the_suffix_and_lands_in_the_destination_folder(tmp_path):
    target = tmp_path / "sub" / "loss.png"
    with atomic_path(target, fsync=True) as tmp:
        assert os.path.dirname(tmp) == str(target.parent) and tmp.endswith(".png")
        open(tmp, "wb").write(b"png")
    assert target.read_bytes() == b"png"
