"""Save / load a ShflBWMatrix as one safetensors file with a small versioned JSON header.

The header (safetensors metadata, strings only) names the format, its version, the shape, V,
and a SHA-256 of every tensor's bytes, so a file whose bytes changed after writing is refused
instead of loading as a wrong matrix.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import torch

from shflbw.format.matrix import ShflBWMatrix

_TENSOR_NAMES = ("perm", "group_ptr", "col_idx", "values")


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in _TENSOR_NAMES:
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()


def matrix_metadata(w: ShflBWMatrix, tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    return {
        "format": ShflBWMatrix.FORMAT_NAME,
        "version": str(ShflBWMatrix.FORMAT_VERSION),
        "header": json.dumps({"shape": list(w.shape), "vector": w.vector, "sha256": _digest(tensors),
                              "kernel": None if w.kernel is None else list(w.kernel)}),
    }


def matrix_from_parts(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None, source: str) -> ShflBWMatrix:
    """Rebuild and fully validate a matrix from loaded tensors and metadata; ValueError on any mismatch."""
    if not metadata or metadata.get("format") != ShflBWMatrix.FORMAT_NAME:
        raise ValueError(f"{source}: not a shflbw matrix (metadata 'format' is {metadata and metadata.get('format')!r})")
    version = metadata.get("version")
    if version != str(ShflBWMatrix.FORMAT_VERSION):
        raise ValueError(
            f"{source}: format version {version!r} is not supported (this shflbw reads version {ShflBWMatrix.FORMAT_VERSION})"
        )
    try:
        header = json.loads(metadata["header"])
        shape = tuple(int(s) for s in header["shape"])
        vector = int(header["vector"])
        digest = str(header["sha256"])
        kernel = header.get("kernel")  # optional: Conv2d weights (absent in files of plain matrices)
        kernel = None if kernel is None else tuple(int(v) for v in kernel)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: malformed shflbw header ({e})") from None
    missing = [n for n in _TENSOR_NAMES if n not in tensors]
    if missing:
        raise ValueError(f"{source}: missing tensors {missing}")
    if _digest(tensors) != digest:
        raise ValueError(f"{source}: checksum mismatch, the file is corrupted")
    return ShflBWMatrix(shape, vector, *(tensors[n] for n in _TENSOR_NAMES), kernel=kernel)


def atomic_write(path: str, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; the old file survives any failure."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_matrix(w: ShflBWMatrix, path: str) -> None:
    from safetensors.torch import save_file

    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory: give the matrix a file name such as layer.safetensors")
    w.validate()
    tensors = {n: t.detach().contiguous().cpu() for n, t in w.tensors().items()}
    metadata = matrix_metadata(w, tensors)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_matrix(path: str, device: torch.device | str = "cpu") -> ShflBWMatrix:
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no shflbw matrix file at {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata()
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated / garbled files
        raise ValueError(f"{path}: cannot be read as safetensors ({type(e).__name__}: {e})") from None
    return matrix_from_parts(tensors, metadata, path).to(device)
