"""One-shot pruning of all-MiniLM-L6-v2 with reconstruction, evaluated on the gensim sets (CPU).

    pip install -e ".[demo]" && python benchmarks/oneshot_minilm.py --sparsity 0.75 [--pattern shfl_bw]
        [--score wanda|obs|magnitude] [--target dense|layer] [--no-reconstruct] [--words 512] [--out result.json]

Calibration: 512 sentences of lee_background, plus ``--words`` single words of it that are in
neither word list (all disjoint from every evaluation text).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))


def main() -> int:
    import shflbw
    from shflbw.demo import load_minilm
    from shflbw.eval.data import calibration_batches, load_eval_data
    from shflbw.eval.metrics import evaluate
    from shflbw.recover import oneshot_prune_

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsity", type=float, default=0.75)
    ap.add_argument("--vector", type=int, default=64)
    ap.add_argument("--pattern", default="shfl_bw")
    ap.add_argument("--score", default="wanda", choices=["wanda", "obs", "magnitude"])
    ap.add_argument("--target", default="dense", choices=["dense", "layer"])
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--calibration", type=int, default=512)
    ap.add_argument("--words", type=int, default=0, help="single calibration words (0: sentences only)")
    ap.add_argument("--documents", type=int, default=0, help="whole lee_background documents (0: none)")
    ap.add_argument("--no-reconstruct", action="store_true")
    ap.add_argument("--columns", default="greedy", choices=["greedy", "score"],
                    help="greedy: re-choose each group's columns by greedy group OBS; score: keep the search's")
    ap.add_argument("--no-regroup", action="store_true",
                    help="keep the search's permutation (default: regroup rows by the refit's error, recover/regroup.py)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    model, tok = load_minilm()
    data = load_eval_data()
    batches = calibration_batches(tok, data, args.calibration, args.words, args.documents)
    dense = evaluate(model, tok, data)
    ref = dense.pop("lee_embeddings")
    cfg = shflbw.ShflBWConfig(sparsity=args.sparsity, vector=args.vector, include=("encoder.*",), exclude=())
    pruned = copy.deepcopy(model)
    t0 = time.monotonic()
    oneshot_prune_(pruned, cfg, batches, reconstruct=not args.no_reconstruct, pattern=args.pattern, score=args.score,
                   target=args.target, damp=args.damp, columns=args.columns, regroup=not args.no_regroup)
    seconds = time.monotonic() - t0
    r = evaluate(pruned, tok, data, reference=ref)
    r.pop("lee_embeddings")
    row = {**vars(args), "seconds": seconds, **r}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(row, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
