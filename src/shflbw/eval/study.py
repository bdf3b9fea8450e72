"""``shflbw eval``: the accuracy study on all-MiniLM-L6-v2 (issue #4's table).

For each pattern x sparsity x V, up to three recipes, each evaluated on the gensim sets:
- ``magnitude``: one-shot by weight magnitude, no data (the demo's recipe);
- ``oneshot``: layer by layer, OBS score from calibration activations, columns by greedy group OBS
  (Shfl-BW and vector), least-squares refit toward the dense model (``oneshot_prune_``; 512
  lee_background sentences, CALIBRATION_WORDS single words and the 300 whole lee_background
  documents), the layers' biases refit and each layer given its own sparsity under the overall
  budget (ONESHOT_FIT_BIAS, ONESHOT_ALLOCATE: the recipe that met issue #4's bars, docs/recovery.md);
- ``distill``: a one-shot start with DISTILL_START_WORDS single words (Shfl-BW rows not regrouped,
  no bias refit, uniform sparsity: DISTILL_*), then ``distill_`` toward the dense model for a fixed
  time budget.
Calibration and distillation texts are lee_background, disjoint from every evaluation text.
Writes study.json after every cell (a long run can be stopped and kept), study.md and study.png.
"""

from __future__ import annotations

import copy
import json
import os
import time

import torch

from shflbw.recover.recipes import (DISTILL_ALLOCATE, DISTILL_FIT_BIAS, DISTILL_LR, DISTILL_REGROUP,
                                    ONESHOT_ALLOCATE, ONESHOT_FIT_BIAS)

METHODS = ("magnitude", "oneshot", "distill")
# Single calibration words of the one-shot recipe. 4,096 instead of 512 (until session 6) lifted
# every metric of both patterns measured at 75 %, V = 64 (docs/recovery.md): Shfl-BW WordSim 0.389 ->
# 0.529, SimLex 0.302 -> 0.437, Lee 0.645 -> 0.668; vector-wise WordSim 0.368 -> 0.557, Lee 0.627 -> 0.635.
CALIBRATION_WORDS = 4096
# ... but distillation starts from the 512-word one-shot: Shfl-BW 75 %, V = 64 then ended at polarity
# 0.750 and met every distillation bar, where the 4,096-word start ended at 0.710 with two batch
# orders (docs/recovery.md, sessions 6 and 7). A cell with both recipes runs two one-shots.
DISTILL_START_WORDS = 512
# The recipes' choices (row regrouping, bias refit, allocation, learning rate) and the measurements
# behind them live in recover.recipes, shared with `shflbw prune`.
PATTERNS = ("unstructured", "2:4", "vector", "block", "shfl_bw")


def cells(patterns, sparsities, vectors) -> list[tuple[str, float, int | None]]:
    """(pattern, sparsity, V or None): V only where the pattern has one; 2:4 only at 50 %."""
    out = []
    for s in sparsities:
        for p in patterns:
            if p == "2:4":
                if s == 0.5:
                    out.append((p, s, None))
            elif p in ("vector", "shfl_bw"):
                out.extend((p, s, v) for v in vectors)
            else:
                out.append((p, s, None))
    return out


def run_study(patterns=PATTERNS, sparsities=(0.5, 0.75, 0.875), vectors=(32, 64, 128), methods=METHODS,
              distill_minutes: float = 15.0, distill_steps: int = 1250, out: str = "out/study",
              model_path: str | None = None, distill_seed: int = 0, calibration_seed: int = 0,
              regroup: bool = True, distill_regroup: bool = DISTILL_REGROUP, fit_bias: bool = ONESHOT_FIT_BIAS,
              allocate: bool = ONESHOT_ALLOCATE, distill_fit_bias: bool = DISTILL_FIT_BIAS,
              distill_allocate: bool = DISTILL_ALLOCATE) -> list[dict]:
    """Run the cells. Two one-shot options, on by default for the one-shot recipe and off for the
    distillation start (``distill_fit_bias``, ``distill_allocate``; the constants above say why):
    ``fit_bias`` refits the layers' biases too (``oneshot_prune_(fit_bias=True)``; rows say "+ bias");
    ``allocate`` gives each layer its own sparsity from its refit error, the overall sparsity kept
    (``recover.allocate_sparsity``; rows say "+ allocation" and list the layers' sparsities). Patterns
    that ``allocate_sparsity`` cannot vary (2:4) run at the uniform sparsity."""
    import shflbw
    from shflbw.demo import _masked_copy, load_minilm
    from shflbw.eval.data import calibration_batches, distillation_batches, load_eval_data
    from shflbw.eval.metrics import evaluate
    from shflbw.recover import DistillConfig, allocate_sparsity, distill_
    from shflbw.recover.recipes import oneshot_recipe_
    from shflbw.recover.allocate import PATTERNS as ALLOCATABLE

    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}: choose from {METHODS}")
    for p in patterns:
        if p not in PATTERNS:
            raise ValueError(f"unknown pattern {p!r}: choose from {PATTERNS}")
    for s in sparsities:
        if not 0 < s < 1:
            raise ValueError(f"sparsity must be in (0, 1), got {s}")
    for v in vectors:
        if v <= 0 or v % 16:
            raise ValueError(f"V must be a positive multiple of 16, got {v}")
    if distill_minutes <= 0 or distill_steps <= 0:
        raise ValueError("distill_minutes and distill_steps must be positive")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_minilm(model_path)
    model.to(device)
    data = load_eval_data()
    os.makedirs(out, exist_ok=True)
    dense = evaluate(model, tok, data)
    ref = dense.pop("lee_embeddings")
    rows = [{"pattern": "dense", "sparsity": 0.0, "vector": None, "method": "dense", **dense, "cosine_to_dense": 1.0,
             "device": device}]
    calib, distill = {}, None  # calibration batches by word count
    todo = cells(patterns, sparsities, vectors)
    print(f"shflbw eval: {len(todo)} cells x {len(methods)} recipes on {device}", flush=True)
    for pattern, s, v in todo:
        vector = v or 64
        oneshot_models = {}  # by calibration word count and recipe (regroup, bias, allocation)
        allocations = {}  # by calibration word count: sparsity per layer

        def oneshot(words, regroup_, fit_bias_, allocate_):
            key = (words, regroup_, fit_bias_, allocate_)
            if key not in oneshot_models:
                if words not in calib:
                    calib[words] = calibration_batches(tok, data, words=words, documents=300, seed=calibration_seed)
                cfg = shflbw.ShflBWConfig(sparsity=s, vector=vector, include=("encoder.*",), exclude=())
                batches = [_to(b, device) for b in calib[words]]
                if allocate_ and words not in allocations:  # the same for either regrouping or bias
                    allocations[words] = allocate_sparsity(model, cfg, batches, pattern=pattern)[0]
                oneshot_models[key] = oneshot_recipe_(copy.deepcopy(model), cfg, batches, pattern=pattern,
                                                      regroup=regroup_, fit_bias=fit_bias_,
                                                      allocation=allocations[words] if allocate_ else None)
            return oneshot_models[key]

        for method in methods:
            t0 = time.monotonic()
            words = {"oneshot": CALIBRATION_WORDS, "distill": DISTILL_START_WORDS}.get(method)
            # the recipe of the one-shot (or of the distillation's one-shot start)
            regroup_, bias_, alloc_ = ((regroup, fit_bias, allocate) if method == "oneshot"
                                       else (distill_regroup, distill_fit_bias, distill_allocate))
            alloc_ = alloc_ and pattern in ALLOCATABLE
            if method == "magnitude":
                m = _masked_copy(model, pattern, s, vector)
            elif method == "oneshot":
                m = oneshot(words, regroup_, bias_, alloc_)
            else:
                distill = distill or distillation_batches(tok, data)
                m = copy.deepcopy(oneshot(words, regroup_, bias_, alloc_))
                distill_(m, model, distill, DistillConfig(steps=distill_steps, lr=DISTILL_LR, seed=distill_seed,
                                                         time_budget=distill_minutes * 60))
            r = evaluate(m, tok, data, reference=ref)
            r.pop("lee_embeddings")
            rows.append({"pattern": pattern, "sparsity": s, "vector": v, "method": method,
                         "seconds": time.monotonic() - t0, "device": device, **r})
            if words is not None:
                rows[-1]["calibration_words"] = words
                if pattern == "shfl_bw":  # whether the one-shot (start) regrouped rows for the refit (recover.regroup)
                    rows[-1]["regroup"] = regroup_
                if bias_:
                    rows[-1]["fit_bias"] = True
                if alloc_:
                    rows[-1]["allocate"] = True
                    rows[-1]["layer_sparsity"] = allocations[words]
                if calibration_seed:
                    rows[-1]["calibration_seed"] = calibration_seed  # which calibration text (eval.data)
            if method == "distill":
                rows[-1]["distill_seed"] = distill_seed  # the batch order; pruning and one-shot are deterministic
            print(_line(rows[-1]), flush=True)
            _write(rows, out, device)
    _write(rows, out, device, final=True)
    return rows


def merge(paths: list[str], out: str) -> list[dict]:
    """One report (study.json, .md, .png) from several runs' study.json (e.g. one run per recipe, or
    runs on different machines: each row keeps the device it ran on)."""
    rows, devices = [], set()
    for path in paths:
        with open(path) as f:
            d = json.load(f)
        for r in d["rows"]:
            if r["method"] == "dense" and rows:
                continue  # one dense row, first
            r = {**r, "device": r.get("device") or d.get("device") or "unknown"}
            devices.add(r["device"])
            rows.append(r)
    if not rows or rows[0]["method"] != "dense":
        raise ValueError("the first study.json must start with its dense row")
    os.makedirs(out, exist_ok=True)
    _write(rows, out, "+".join(sorted(devices)) or "unknown", final=True)
    return rows


def _to(batch, device):
    return {k: t.to(device) for k, t in batch.items()}


def _line(r: dict) -> str:
    ci = r["polarity_ci95"]
    v = "" if r["vector"] is None else f"V={r['vector']}"
    return (f"{r['pattern']:12s} {r['sparsity']:>6.1%} {v:6s} {r['method']:9s} Lee {r['lee_pearson']:.3f}  "
            f"pol {r['polarity']:.3f} ({ci[0]:.2f}-{ci[1]:.2f})  WS {r['wordsim353']:.3f}  SL {r['simlex999']:.3f}  "
            f"cos {r['cosine_to_dense']:.3f}")


def _split_mean(r: dict) -> str:
    return f"{r['polarity_10splits']:.3f}" if "polarity_10splits" in r else "n/a"


def _write(rows: list[dict], out: str, device: str, final: bool = False) -> None:
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump({"model": "all-MiniLM-L6-v2", "device": device, "rows": rows}, f, indent=1)
    if not final:
        return
    lines = ["| pattern | sparsity | V | recipe | calibration words | Lee r | polarity (95 % CI) | polarity, 10 splits | "
             "WS353 | SimLex | cosine |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    home = rows[0].get("device") if rows else None
    for r in rows:
        ci = r["polarity_ci95"]
        recipe = _recipe(r["method"], None, _variant(r))  # the words have their own column
        recipe += f" (seed {r['distill_seed']})" if r.get("distill_seed") else ""
        recipe += f" (calibration seed {r['calibration_seed']})" if r.get("calibration_seed") else ""
        if r.get("device") and home and r["device"] != home:
            recipe += f" [{r['device']}]"  # ran on another machine than the dense row (merged runs)
        lines.append(f"| {r['pattern']} | {r['sparsity']:.1%} | {r['vector'] or ''} | {recipe} | "
                     f"{r.get('calibration_words', '')} | "
                     f"{r['lee_pearson']:.3f} | {r['polarity']:.3f} ({ci[0]:.2f}-{ci[1]:.2f}) | {_split_mean(r)} | {r['wordsim353']:.3f} | "
                     f"{r['simlex999']:.3f} | {r['cosine_to_dense']:.3f} |")
    lines += [""] + comparison(rows)
    means = seed_means(rows)
    if means:
        lines += [""] + means
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _plot(rows, os.path.join(out, "study.png"))
    print(f"wrote {out}/study.json, study.md, study.png")


METRICS = (("lee_pearson", "Lee"), ("polarity", "polarity"), ("wordsim353", "WS353"), ("simlex999", "SimLex"),
           ("cosine_to_dense", "cosine"))


# One-shot options that make one recipe of a cell differ from another: (row key, name in the tables).
# A row records those that were on; cells with different ones are kept apart everywhere.
VARIANTS = (("regroup", "regroup"), ("fit_bias", "bias"), ("allocate", "allocation"))


def _variant(r: dict) -> tuple[bool, ...]:
    return tuple(bool(r.get(key)) for key, _ in VARIANTS)


def _unregrouped(variant: tuple[bool, ...]) -> tuple[bool, ...]:
    """The same options without regrouping: what the other patterns' cells of a Shfl-BW recipe have."""
    return (False,) + tuple(variant[1:])


def _recipe(method: str, words, variant: tuple[bool, ...] = ()) -> str:
    """A recipe as the tables and the plot name it: method, the options on, calibration words."""
    names = "".join(f" + {name}" for (_, name), on in zip(VARIANTS, variant) if on)
    return method + names + (f" ({words} words)" if words else "")


def _at_vector(r: dict, vector: int) -> bool:
    """Whether a row belongs to the V = ``vector`` view (patterns without a V always do)."""
    return r["vector"] in (None, vector)


def comparison(rows: list[dict], vector: int = 64) -> list[str]:
    """Markdown: Shfl-BW at ``vector`` minus vector-wise (same V), block and unstructured, metric by
    metric, for every sparsity and recipe (method and calibration words; seed 0 of the distillation
    order and of the calibration text) that has the Shfl-BW cell; issue #4 asks whether Shfl-BW
    beats vector-wise and block on every metric and how far it is from unstructured. A later row of
    the same cell replaces an earlier one; Shfl-BW with and without regrouping are separate rows
    (the one-shot recipe regroups, the distillation start does not: DISTILL_REGROUP)."""
    cells = {}
    for r in rows[1:]:
        if r.get("distill_seed") or r.get("calibration_seed"):
            continue
        if not _at_vector(r, vector):
            continue
        cells[(r["pattern"], r["sparsity"], r["method"], r.get("calibration_words"), _variant(r))] = r
    out = [f"Shfl-BW (V = {vector}) minus each other pattern, same sparsity and recipe "
           "(Lee / polarity / WS353 / SimLex / cosine; positive: Shfl-BW ahead):", "",
           "| sparsity | recipe | vs vector-wise | vs block | vs unstructured | ahead of vector-wise and block on all five |",
           "|---|---|---|---|---|---|"]
    for (pattern, s, method, words, variant), shfl in sorted(cells.items(),
                                                       key=lambda kv: (kv[0][1], kv[0][2], str(kv[0][3]), str(kv[0][4]))):
        if pattern != "shfl_bw":
            continue
        diffs, ahead = [], True
        for other in ("vector", "block", "unstructured"):
            o = cells.get((other, s, method, words, _unregrouped(variant)))
            if o is None:
                diffs.append("n/a")
                continue
            d = [shfl[k] - o[k] for k, _ in METRICS]
            diffs.append(" / ".join(f"{x:+.3f}" for x in d))
            if other != "unstructured":
                ahead = ahead and all(x > 0 for x in d)
        recipe = _recipe(method, words, variant)
        missing = "n/a" in diffs[:2]
        out.append(f"| {s:.1%} | {recipe} | {diffs[0]} | {diffs[1]} | {diffs[2]} | "
                   f"{'incomplete' if missing else ('yes' if ahead else 'no')} |")
    return out


def seed_means(rows: list[dict], vector: int = 64) -> list[str]:
    """Markdown: for every cell run on two or more calibration seeds (``--calibration-seed``; seed 0 is
    the default text), each metric's mean over the seeds with its range, and Shfl-BW minus
    vector-wise on the means over the seeds both ran. One model differs from another equally good
    one by about 0.02 on Lee, polarity and SimLex (docs/recovery.md, session 11), so single-seed
    gaps of that size say little. Cells as in ``comparison``, with and without Shfl-BW's regrouping
    apart: a later row of the same cell and seed replaces an earlier one; repeat distillation orders
    (``distill_seed``) are left out."""
    runs: dict = {}
    for r in rows[1:]:
        if r.get("distill_seed") or not _at_vector(r, vector):
            continue
        key = (r["pattern"], r["sparsity"], r["method"], r.get("calibration_words"), _variant(r))
        runs.setdefault(key, {})[r.get("calibration_seed", 0)] = r
    runs = {k: v for k, v in runs.items() if len(v) >= 2}
    if not runs:
        return []
    out = [f"Means over calibration seeds (V = {vector}; each metric: mean (lowest-highest)):", "",
           "| sparsity | recipe | pattern | seeds | Lee | polarity | WS353 | SimLex | cosine |",
           "|---|---|---|---|---|---|---|---|---|"]
    order = sorted(runs, key=lambda k: (k[1], k[2], str(k[3]), k[0], k[4]))
    for key in order:
        pattern, s, method, words, variant = key
        by_seed = runs[key]
        cols = []
        for m, _ in METRICS:
            vals = [r[m] for r in by_seed.values()]
            cols.append(f"{sum(vals) / len(vals):.3f} ({min(vals):.3f}-{max(vals):.3f})")
        out.append(f"| {s:.1%} | {_recipe(method, words, variant)} | {pattern} | {', '.join(map(str, sorted(by_seed)))} | {' | '.join(cols)} |")
    out += ["", "Shfl-BW minus vector-wise on the means over the seeds both ran (Lee / polarity / WS353 / SimLex / "
            "cosine):", ""]
    for key in order:
        pattern, s, method, words, variant = key
        other = runs.get(("vector", s, method, words, _unregrouped(variant)))
        if pattern != "shfl_bw" or other is None:
            continue
        common = sorted(set(runs[key]) & set(other))
        if len(common) < 2:
            continue
        d = [sum(runs[key][sd][m] - other[sd][m] for sd in common) / len(common) for m, _ in METRICS]
        out.append(f"- {s:.1%} {_recipe(method, words, variant)}, seeds {', '.join(map(str, common))}: " + " / ".join(f"{x:+.3f}" for x in d))
    return out


def _series(r: dict) -> tuple:
    """One plotted line: pattern, V, method, calibration words, the one-shot options on."""
    return r["pattern"], r["vector"], r["method"], r.get("calibration_words"), _variant(r)


PATTERN_COLORS = {"unstructured": "tab:gray", "2:4": "tab:purple", "vector": "tab:blue", "block": "tab:orange",
                  "shfl_bw": "tab:red"}


def plotted_series(rows: list[dict], vector: int = 64) -> dict[tuple, list[dict]]:
    """The plot's lines: V = ``vector`` (and the patterns without a V), the default calibration text
    and distillation order; repeat seeds and other V stay in the table and the means section, where
    40 lines would not be read."""
    out: dict[tuple, list[dict]] = {}
    for r in rows[1:]:
        if r.get("distill_seed") or r.get("calibration_seed") or not _at_vector(r, vector):
            continue
        out.setdefault(_series(r), []).append(r)
    return out


def _plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG (pip install 'shflbw[demo]')")
        return
    dense = rows[0]
    series = plotted_series(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (key, title) in zip(axes, [("lee_pearson", "Lee Pearson"), ("cosine_to_dense", "embedding cosine to dense")]):
        for line in sorted(series, key=str):
            pattern, v, method, words, variant = line
            by_sparsity = {r["sparsity"]: r[key] for r in series[line]}  # a later run of a cell replaces an earlier
            pts = sorted(by_sparsity.items())
            label = f"{pattern}{'' if v is None else f' V={v}'} {_recipe(method, words, variant)}"
            style = {"magnitude": ":", "oneshot": "--", "distill": "-"}[method]
            ax.plot([0.0] + [p[0] for p in pts], [dense[key]] + [p[1] for p in pts], style, marker="o", label=label,
                    color=PATTERN_COLORS.get(pattern))
        ax.set_title(title)
        ax.set_xlabel("sparsity")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle("all-MiniLM-L6-v2: patterns x recipes, V = 64 and first seeds (shflbw eval; every row in study.md)")
    fig.tight_layout(rect=(0, 0.1 + 0.018 * ((len(labels) + 2) // 3), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
