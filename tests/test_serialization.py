import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from shflbw import ShflBWMatrix
from shflbw.format import serialization
from shflbw.testing import random_problem


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_save_load_round_trip_exact(tmp_path, dtype):
    weight, mask, perm, w = random_problem(150, 37, 32, 0.3, dtype, seed=7, empty_groups=(2,))
    path = str(tmp_path / "w.safetensors")
    w.save(path)
    back = ShflBWMatrix.load(path)
    assert back.shape == w.shape and back.vector == w.vector and back.dtype == dtype
    for name, t in w.tensors().items():
        assert torch.equal(back.tensors()[name], t), name
    assert torch.equal(back.to_dense(), weight * mask)


def test_storage_at_75_percent_v64_is_at_most_27_percent_of_dense_bf16(tmp_path):
    m = k = 1024
    weight, mask, perm, w = random_problem(m, k, 64, 0.25, torch.bfloat16, seed=0)
    path = tmp_path / "w.safetensors"
    w.save(str(path))
    dense_bytes = m * k * 2
    ratio = os.path.getsize(path) / dense_bytes
    assert ratio <= 0.27, ratio
    assert ratio > 0.25  # the values alone are 25 %: the file holds them all


def _saved(tmp_path):
    w = random_problem(64, 32, 16, 0.5, seed=1)[3]
    path = str(tmp_path / "w.safetensors")
    w.save(path)
    return w, path


def test_truncated_file_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    data = open(path, "rb").read()
    for cut in (5, len(data) // 2, len(data) - 3):
        with open(path, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(ValueError, match="cannot be read|checksum|missing"):
            ShflBWMatrix.load(path)


def test_flipped_byte_in_values_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0x40  # inside the last tensor's bytes
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        ShflBWMatrix.load(path)


def _rewrite(path, edit_meta):
    with safe_open(path, framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit_meta(meta, tensors)
    save_file(tensors, path, metadata=meta)


def test_wrong_version_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, lambda m, t: m.__setitem__("version", "99"))
    with pytest.raises(ValueError, match="version '99' is not supported"):
        ShflBWMatrix.load(path)


def test_other_safetensors_file_is_refused(tmp_path):
    path = str(tmp_path / "other.safetensors")
    save_file({"weight": torch.randn(3, 3)}, path)
    with pytest.raises(ValueError, match="not a shflbw matrix"):
        ShflBWMatrix.load(path)


def test_consistent_but_invalid_content_is_refused(tmp_path):
    # a file whose checksum matches its (bad) content still fails validation
    _, path = _saved(tmp_path)

    def edit(meta, tensors):
        tensors["col_idx"][0] = 999
        header = json.loads(meta["header"])
        header["sha256"] = serialization._digest(tensors)
        meta["header"] = json.dumps(header)

    _rewrite(path, edit)
    with pytest.raises(ValueError, match="out of range"):
        ShflBWMatrix.load(path)


def test_malformed_header_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    _rewrite(path, lambda m, t: m.__setitem__("header", "{not json"))
    with pytest.raises(ValueError, match="malformed"):
        ShflBWMatrix.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ShflBWMatrix.load(str(tmp_path / "nope.safetensors"))


def test_save_onto_a_directory_is_refused(tmp_path):
    w, _ = _saved(tmp_path)
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        w.save(str(tmp_path / "d"))
    assert (tmp_path / "d").is_dir() and not any((tmp_path / "d").iterdir())


def test_failed_save_leaves_existing_file_intact(tmp_path, monkeypatch):
    w, path = _saved(tmp_path)
    before = open(path, "rb").read()

    def boom(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        w.save(path)
    assert open(path, "rb").read() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left behind
