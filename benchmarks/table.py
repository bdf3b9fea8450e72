"""Print a markdown table from a run_linear.py JSON file: one row per case, the variants as columns."""

from __future__ import annotations

import collections
import json
import sys

COLUMNS = ["shflbw", "transpose-scatter", "decode-path", "spmm-feature-major", "group-order-out", "torch-2:4"]


def main(path: str) -> None:
    data = json.load(open(path))
    st = data["stamp"]
    print(f"{st['gpu']}, torch {st['torch']}, triton {st['triton']}, commit {st['commit']}\n")
    by = collections.defaultdict(dict)
    for r in data["rows"]:
        if "case" in r:
            by[r["case"]][r["variant"]] = r
    print("| case | dense us | " + " | ".join(COLUMNS) + " | best shflbw variant |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for case, v in by.items():
        cells = []
        for c in COLUMNS:
            r = v.get(c)
            cells.append(f"{r['speedup']:.2f}x" if r and r.get("speedup") else ("WRONG" if r and r.get("status") == "WRONG" else ""))
        ours = [r for k, r in v.items() if k not in ("dense", "torch-2:4", "spmm-feature-major", "group-order-out") and r.get("speedup")]
        best = max(ours, key=lambda r: r["speedup"]) if ours else None
        best_s = f"{best['variant']} {best['speedup']:.2f}x" if best else ""
        print(f"| {case.replace('-bfloat16', '')} | {v['dense']['us']:.1f} | " + " | ".join(cells) + f" | {best_s} |")


if __name__ == "__main__":
    main(sys.argv[1])
