"""``shflbw prune CHECKPOINT --config cfg.json -o OUT``: prune a Hugging Face model directory and save it compressed."""

from __future__ import annotations

import json
import os


def prune_checkpoint(checkpoint: str, config_path: str | None, out: str) -> int:
    import shflbw

    if not os.path.isdir(checkpoint) or not os.path.isfile(os.path.join(checkpoint, "config.json")):
        raise SystemExit(f"{checkpoint!r} is not a Hugging Face model directory (no config.json); "
                         "a bare safetensors file has no architecture to rebuild")
    if config_path is not None:
        if not os.path.isfile(config_path):
            raise SystemExit(f"config file {config_path!r} not found")
        with open(config_path) as f:
            try:
                cfg = shflbw.ShflBWConfig.from_json(f.read())
            except (ValueError, TypeError) as e:
                raise SystemExit(f"{config_path}: {e}") from None
    else:
        cfg = shflbw.ShflBWConfig()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint).eval()
    try:
        shflbw.sparsify_(model, cfg)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    report = {}
    for name, mod in model.named_modules():
        p = shflbw.nn.masked.mask_of(mod)
        if p is not None:
            w = shflbw.nn.masked.dense_weight(mod).detach().double()
            report[name] = {"shape": list(w.shape), "vector": p.vector, "sparsity": 1 - p.mask.double().mean().item(),
                            "kept_importance": float((w**2 * p.mask).sum() / (w**2).sum())}
    shflbw.compress_(model)
    shflbw.save(model, out, config=cfg)
    model.config.save_pretrained(out)  # so `load` can rebuild the skeleton with AutoModel.from_config
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    mean_keep = sum(r["kept_importance"] for r in report.values()) / len(report)
    print(f"pruned {len(report)} layers (mean kept importance {mean_keep:.3f}); wrote {out}")
    return 0


def load_pruned(directory: str):
    """Load a directory written by ``shflbw prune``, rebuilding the Hugging Face model from its config.

    The skeleton is built on the CPU, not the meta device: Hugging Face models hold non-persistent
    buffers (position_ids) that no checkpoint stores.
    """
    import shflbw
    from transformers import AutoConfig, AutoModel

    return shflbw.load(directory, AutoModel.from_config(AutoConfig.from_pretrained(directory)))
