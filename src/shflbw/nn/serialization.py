"""``save(model, dir)`` / ``load(dir, skeleton)`` for compressed models.

A directory holds ``model.safetensors`` (the whole state dict: packed buffers of every
ShflBWLinear and the other tensors) and ``shflbw.json`` (format version, the packed layers with
their shapes and V, the config when given). It is written to a temporary sibling and renamed
into place, so a failed save leaves any earlier directory intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable

import torch
from torch import nn

from shflbw.config import ShflBWConfig
from shflbw.format.matrix import ShflBWMatrix
from shflbw.nn.conv2d import ShflBWConv2d
from shflbw.nn.convert import _set_child
from shflbw.nn.hf_conv1d import is_conv1d
from shflbw.nn.linear import ShflBWLinear
from shflbw.nn.masked import mask_of

FORMAT = "shflbw.model"
VERSION = 1
WEIGHTS = "model.safetensors"
META = "shflbw.json"


def save(model: nn.Module, directory: str, config: ShflBWConfig | None = None,
         extra: Callable[[str], None] | None = None) -> None:
    """Write ``model`` (compressed) to ``directory``. MLP regions are stored as their per-layer
    modules (the model is unfused for the write and fused again after) and re-fused by ``load``.
    ``extra(path)`` may write more files into the directory before it replaces ``directory`` (a
    Hugging Face config, a report): if it raises, nothing at ``directory`` changes. An existing
    ``directory`` is replaced whole, so it must be an earlier save or empty (ValueError otherwise)."""
    from shflbw.nn.deferred_norm import has_deferred_norms
    from shflbw.nn.regions import fuse_regions_, unfuse_regions_

    deferred = has_deferred_norms(model)
    n_regions = unfuse_regions_(model)
    try:
        _save(model, directory, config, regions=n_regions > 0, deferred=deferred, extra=extra)
    finally:
        if n_regions:
            fuse_regions_(model, defer_layernorm=deferred)


def _save(model: nn.Module, directory: str, config: ShflBWConfig | None, regions: bool, deferred: bool,
          extra: Callable[[str], None] | None = None) -> None:
    from safetensors.torch import save_file

    if any(mask_of(m) is not None for m in model.modules()):
        raise ValueError("the model still has masked layers: call shflbw.compress_(model) before saving")
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, ShflBWLinear):
            layers[name] = {"type": "linear", "in_features": m.in_features, "out_features": m.out_features,
                            "vector": m.vector, "bias": m.bias is not None}
        elif isinstance(m, ShflBWConv2d):
            layers[name] = {"type": "conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
                            "kernel_size": list(m.kernel_size), "stride": list(m.stride), "dilation": list(m.dilation),
                            "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
                            "vector": m.vector, "bias": m.bias is not None}
    if not layers:
        raise ValueError("the model has no ShflBWLinear / ShflBWConv2d layer: nothing shflbw-specific to save")
    # clone: safetensors refuses tensors that share memory (tied weights are saved twice)
    state = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "layers": layers, "regions": regions, "deferred_layernorm": deferred,
            "config": None if config is None else json.loads(config.to_json())}
    directory = os.path.abspath(directory)
    refuse_foreign_target(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".shflbw-save-", dir=parent)
    try:
        save_file(state, os.path.join(tmp, WEIGHTS), metadata={"format": FORMAT, "version": str(VERSION)})
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=1)
        if extra is not None:
            extra(tmp)
        if os.path.exists(directory):
            old = tempfile.mkdtemp(prefix=".shflbw-old-", dir=parent)
            os.replace(directory, os.path.join(old, "d"))
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def read_header(meta_path: str) -> dict:
    """The JSON header :func:`save` writes; ValueError if it is corrupted or not shflbw's."""
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path} is corrupted: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a shflbw model header")
    return meta


def is_model_directory(directory: str) -> bool:
    """Whether ``directory`` holds a header written by :func:`save` (its weights may be damaged)."""
    try:
        read_header(os.path.join(directory, META))
    except (OSError, ValueError):
        return False
    return True


def refuse_foreign_target(directory: str) -> None:
    """A save replaces its target whole, so it may only replace an earlier save or an empty folder:
    ``save(model, ".")`` must not delete the user's working directory."""
    if not os.path.lexists(directory):
        return
    if os.path.isdir(directory) and not os.path.islink(directory) and (
            not os.listdir(directory) or is_model_directory(directory)):
        return
    kind = ("a symbolic link" if os.path.islink(directory) else
            "a directory that is not a shflbw model directory" if os.path.isdir(directory) else "a file")
    raise ValueError(f"{directory} is {kind}; save replaces its target whole, so it only overwrites an earlier "
                     "shflbw save or an empty directory: choose a new path or remove it first")


def load(directory: str, skeleton: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """Restore a model saved by :func:`save` into ``skeleton`` (the same architecture, dense or on the meta device)."""
    from safetensors.torch import load_file

    if not isinstance(skeleton, nn.Module):
        raise TypeError(f"skeleton must be the model (an nn.Module) to load into, got {type(skeleton).__name__}")
    meta_path, weights_path = os.path.join(directory, META), os.path.join(directory, WEIGHTS)
    for p in (meta_path, weights_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{directory} is not a shflbw model directory: {os.path.basename(p)} is missing")
    meta = read_header(meta_path)
    if meta.get("version") != VERSION:
        raise ValueError(f"{meta_path}: format version {meta.get('version')!r} is not supported (reads {VERSION})")
    try:
        state = load_file(weights_path, device="cpu")
    except Exception as e:
        raise ValueError(f"{weights_path} cannot be read ({type(e).__name__}: {e})") from None

    for name, info in meta["layers"].items():
        try:
            mod = skeleton.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the checkpoint has a layer {name!r} that the model does not: another architecture?") from None
        conv = info.get("type", "linear") == "conv2d"
        if conv:
            kernel = (info["in_channels"], *info["kernel_size"])
            shape = (info["out_channels"], kernel[0] * kernel[1] * kernel[2])
            fits = isinstance(mod, (nn.Conv2d, ShflBWConv2d)) and (
                mod.out_channels, mod.in_channels, *mod.kernel_size) == (shape[0], *kernel)
        else:
            kernel = None
            shape = (info["out_features"], info["in_features"])
            fits = (isinstance(mod, (nn.Linear, ShflBWLinear)) and (mod.out_features, mod.in_features) == shape
                    or is_conv1d(mod) and (mod.nf, mod.nx) == shape)  # a GPT-2 skeleton: hf_conv1d.py
        if not fits:
            raise ValueError(f"layer {name!r} is a {mod.__class__.__name__} in the model that does not match the "
                             f"checkpoint's {info}: another architecture?")
        try:
            w = ShflBWMatrix(shape, info["vector"], *(state[f"{name}.{t}"] for t in ("perm", "group_ptr", "col_idx", "values")),
                             kernel=kernel)
        except KeyError as e:
            raise ValueError(f"{weights_path} lacks tensor {e} of layer {name!r}") from None
        bias = state.get(f"{name}.bias") if info["bias"] else None
        if conv:
            padding = info["padding"] if isinstance(info["padding"], str) else tuple(info["padding"])
            _set_child(skeleton, name, ShflBWConv2d(w, bias, info["stride"], padding, info["dilation"]))
        else:
            _set_child(skeleton, name, ShflBWLinear(w, bias))
    missing, unexpected = [], []
    try:
        result = skeleton.load_state_dict(state, strict=False, assign=True)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    except RuntimeError as e:
        raise ValueError(f"the checkpoint does not fit the model: {e}") from None
    if missing or unexpected:
        raise ValueError(f"the checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    # Non-persistent buffers (a Hugging Face model's position_ids, say) are in no state dict: on a
    # meta skeleton they would stay unmaterialised and the model would compute garbage (NaN, seen).
    left = [n for n, t in list(skeleton.named_parameters()) + list(skeleton.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(
            f"these tensors are not stored in checkpoints and are still on the meta device: {left[:5]}; "
            "build the skeleton on a real device (or materialise them) before loading"
        )
    if device is not None:
        skeleton.to(device)
    if meta.get("regions"):
        from shflbw.nn.regions import fuse_regions_

        fuse_regions_(skeleton, defer_layernorm=bool(meta.get("deferred_layernorm")))
    return skeleton
