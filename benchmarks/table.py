"""Print a markdown table from a run_linear.py JSON file: one row per case, the variants as columns."""

from __future__ import annotations

import collections
import json
import sys

# '-graph' columns are CUDA-graph replays against dense replays (GPU time without host launch cost).
# Other libraries' columns (benchmarks/baselines.py) follow ours: dense-compiled, torch-2:4*, torch-bsr<block>*.
COLUMNS = ["shflbw", "shflbw-graph", "transpose-scatter", "decode-path", "spmm-feature-major", "group-order-out"]
# Not counted as "best shflbw variant": baselines, and our kernels with another output layout.
NOT_OURS = ("spmm-feature-major", "group-order-out")


def is_ours(variant: str) -> bool:
    return not variant.startswith(("dense", "torch-")) and variant not in NOT_OURS


def other_columns(variants) -> list[str]:
    return sorted({v for v in variants if v.startswith(("dense-compiled", "torch-"))})


def main(path: str) -> None:
    data = json.load(open(path))
    st = data["stamp"]
    print(f"{st['gpu']}, torch {st['torch']}, triton {st['triton']}, commit {st['commit']}\n")
    by = collections.defaultdict(dict)
    for r in data["rows"]:
        if "case" in r:
            by[r["case"]][r["variant"]] = r
    columns = [c for c in COLUMNS if any(c in v for v in by.values())]
    columns += other_columns({k for v in by.values() for k in v})
    print("| case | dense us | " + " | ".join(columns) + " | best shflbw variant |")
    print("|---|---|" + "---|" * (len(columns) + 1))
    for case, v in by.items():
        cells = []
        for c in columns:
            r = v.get(c)
            cells.append(f"{r['speedup']:.2f}x" if r and r.get("speedup") else ("WRONG" if r and r.get("status") == "WRONG" else ""))
        ours = [r for k, r in v.items() if is_ours(k) and r.get("speedup")]
        best = max(ours, key=lambda r: r["speedup"]) if ours else None
        best_s = f"{best['variant']} {best['speedup']:.2f}x" if best else ""
        if best and best.get("ceiling_pct"):  # runs since session 19 carry it (benchmarks/roofline.py)
            best_s += f", {best['ceiling_pct']:.0f} % of ceiling"
        print(f"| {case.replace('-bfloat16', '')} | {v['dense']['us']:.1f} | " + " | ".join(cells) + f" | {best_s} |")


if __name__ == "__main__":
    main(sys.argv[1])
