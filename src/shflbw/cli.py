"""The ``shflbw`` command line."""

from __future__ import annotations

import argparse
import sys


def _cmd_env(args: argparse.Namespace) -> int:
    from shflbw.env import env_report

    print(env_report())
    return 0


def _cmd_example(args: argparse.Namespace) -> int:
    from shflbw.example import run_example

    return run_example(out=args.out, seed=args.seed)


def _cmd_demo(args: argparse.Namespace) -> int:
    from shflbw.demo import run_demo

    sparsities = _floats(args.sparsity, "sparsity")
    for s in sparsities:
        if not 0 < s < 1:
            raise SystemExit(f"--sparsity values must be in (0, 1), got {s}")
    if args.vector <= 0 or args.vector % 16:
        raise SystemExit(f"--vector must be a positive multiple of 16, got {args.vector}")
    return run_demo(args.model, sparsities, args.vector, args.out)


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--{name} must be comma-separated numbers, got {text!r}") from None


def _cmd_eval(args: argparse.Namespace) -> int:
    from shflbw.eval.study import merge, run_study

    try:
        if args.merge:
            merge(args.merge, args.out)
            return 0
        run_study(tuple(args.patterns.split(",")), _floats(args.sparsity, "sparsity"),
                  tuple(int(v) for v in _floats(args.vector, "vector")), tuple(args.methods.split(",")),
                  args.distill_minutes, args.distill_steps, args.out, args.model, args.distill_seed,
                  args.calibration_seed, regroup=not args.no_regroup, distill_regroup=args.distill_regroup,
                  distill_fit_bias=args.distill_fit_bias, distill_allocate=args.distill_allocate,
                  # unset: the study's one-shot recipe (recover.recipes.ONESHOT_FIT_BIAS / ONESHOT_ALLOCATE)
                  **{k: v for k, v in (("fit_bias", args.fit_bias), ("allocate", args.allocate)) if v is not None})
    except ValueError as e:
        raise SystemExit(f"shflbw eval: {e}") from None
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from shflbw.prune_checkpoint import prune_checkpoint

    return prune_checkpoint(args.checkpoint, args.config, args.output, calibration=args.calibration,
                            recipe=args.recipe, fit_bias=args.fit_bias, allocate=args.allocate,
                            batch_size=args.batch_size, max_length=args.max_length, device=args.device,
                            distill_steps=args.distill_steps, distill_minutes=args.distill_minutes)


BENCH_SCRIPTS = {"linear": "run_linear.py", "conv": "run_conv.py", "mlp": "run_mlp.py", "e2e": "run_e2e.py"}


def _cmd_bench(args: argparse.Namespace) -> int:
    import os
    import subprocess

    import torch

    rest = list(args.args)
    kind = rest.pop(0) if rest and not rest[0].startswith("-") else "linear"
    if kind not in BENCH_SCRIPTS:
        print(f"shflbw bench: unknown benchmark {kind!r}; choose from {', '.join(BENCH_SCRIPTS)}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("shflbw bench times GPU kernels and needs a CUDA GPU; none was found", file=sys.stderr)
        return 2
    script = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", BENCH_SCRIPTS[kind])
    if not os.path.isfile(script):
        print(f"shflbw bench runs benchmarks/{BENCH_SCRIPTS[kind]} from a source checkout (pip install -e .)",
              file=sys.stderr)
        return 2
    if kind == "linear" and "--suite" not in rest:
        rest = ["--suite", "quick"] + rest
    return subprocess.call([sys.executable, script] + rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shflbw", description="Shuffled block-wise sparsity for PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("env", help="print versions, GPU and Triton availability (for bug reports)")
    p.set_defaults(func=_cmd_env)

    p = sub.add_parser(
        "demo",
        help="the main job: prune all-MiniLM-L6-v2 with every pattern, evaluate, run it through shflbw's ops",
    )
    p.add_argument("--model", default=None, help="a Hugging Face model directory (default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--sparsity", default="0.5,0.75", help="comma-separated sparsities (default: %(default)s)")
    p.add_argument("--vector", type=int, default=64, help="V for the vector and Shfl-BW patterns (default: %(default)s)")
    p.add_argument("--out", default="out/demo", help="directory for demo.json, demo.md, demo.png (default: %(default)s)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "eval",
        help="the accuracy study: patterns x sparsities x V x recipes (magnitude, one-shot, distillation) on MiniLM",
    )
    p.add_argument("--model", default=None, help="a Hugging Face model directory (default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--patterns", default="unstructured,2:4,vector,block,shfl_bw", help="(default: %(default)s)")
    p.add_argument("--sparsity", default="0.5,0.75,0.875", help="comma-separated sparsities (default: %(default)s)")
    p.add_argument("--vector", default="32,64,128", help="V values for vector and shfl_bw (default: %(default)s)")
    p.add_argument("--methods", default="magnitude,oneshot,distill",
                   help="recipes: magnitude (no data), oneshot (calibration + refit), distill (a 512-word oneshot + "
                        "distillation); "
                        "default: %(default)s. On 2 CPU cores one-shot takes 30-35 min a cell "
                        "(4,096-word and whole-document calibration, per-layer allocation included), "
                        "distillation 15 min")
    p.add_argument("--distill-minutes", type=float, default=15.0, help="distillation time budget per cell (default: %(default)s)")
    p.add_argument("--distill-steps", type=int, default=1250, help="distillation steps per cell (default: %(default)s)")
    p.add_argument("--distill-seed", type=int, default=0,
                   help="seed of the distillation batch order, for repeat runs (default: %(default)s)")
    p.add_argument("--calibration-seed", type=int, default=0,
                   help="0: the first lee_background sentences and words as calibration; another seed draws "
                        "them at random from all of it, for repeat runs of one-shot and distillation "
                        "(default: %(default)s)")
    p.add_argument("--no-regroup", action="store_true",
                   help="Shfl-BW one-shot keeps the search's row grouping instead of regrouping rows by the "
                        "refit's error (recover.regroup); rows then say no '+ regroup'")
    p.add_argument("--distill-regroup", action="store_true",
                   help="Shfl-BW distillation starts from the regrouped one-shot (default: from the search's "
                        "grouping, which ended 0.02 higher on polarity over four calibration seeds)")
    p.add_argument("--fit-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="one-shot cells refit the layers' biases too (the refit's intercept, "
                        "recover.oneshot_prune_(fit_bias=True)); rows then say '+ bias' (default: on)")
    p.add_argument("--allocate", action=argparse.BooleanOptionalAction, default=None,
                   help="one-shot cells give each layer its own sparsity from its refit error, the overall "
                        "sparsity kept (recover.allocate_sparsity; not for 2:4); rows then say '+ allocation'. "
                        "Adds about 7 min a cell on 2 CPU cores (default: on)")
    p.add_argument("--distill-fit-bias", action="store_true",
                   help="the distillation's one-shot start refits biases too (default: off; it ended lower on "
                        "polarity, docs/recovery.md)")
    p.add_argument("--distill-allocate", action="store_true",
                   help="the distillation's one-shot start allocates per-layer sparsity (default: off)")
    p.add_argument("--out", default="out/study", help="directory for study.json, study.md, study.png (default: %(default)s)")
    p.add_argument("--merge", nargs="+", metavar="STUDY_JSON", default=None,
                   help="instead of running: merge several runs' study.json into one report in --out")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("prune", help="prune a Hugging Face model directory and save it compressed, with a report")
    p.add_argument("checkpoint", help="a Hugging Face model directory (with config.json)")
    p.add_argument("--config", default=None, help="ShflBWConfig as JSON (default: 75 %%, V = 64)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="UTF-8 text, one sample per line, tokenised with the checkpoint's tokenizer: needed by "
                        "--recipe oneshot and by a config with importance \"activation\"")
    p.add_argument("--recipe", choices=("sparsify", "oneshot", "distill"), default="sparsify",
                   help="sparsify: masks from the config's importance (default); oneshot: OBS masks with a "
                        "least-squares refit of the kept weights toward the dense model, layer by layer (minutes "
                        "per layer on a CPU for large models); distill: a plain one-shot, then distillation toward "
                        "the dense model on the calibration text")
    p.add_argument("--fit-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="oneshot: refit the biases with the weights (default: the recipe's, "
                        "recover.recipes.ONESHOT_FIT_BIAS: on)")
    p.add_argument("--allocate", action=argparse.BooleanOptionalAction, default=None,
                   help="oneshot: each layer its own sparsity under the config's overall one (default: the "
                        "recipe's, recover.recipes.ONESHOT_ALLOCATE: on)")
    p.add_argument("--batch-size", type=int, default=16, help="calibration texts per batch (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per calibration text (default: %(default)s)")
    p.add_argument("--device", default=None, help="where to run the calibration (default: cuda if present, else cpu)")
    p.add_argument("--distill-steps", type=int, default=1250, help="distill: optimizer steps (default: %(default)s)")
    p.add_argument("--distill-minutes", type=float, default=15.0,
                   help="distill: time budget, whichever of steps and minutes ends first (default: %(default)s)")
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser(
        "bench",
        help="run a GPU benchmark against cuBLAS / cuDNN: linear (default), conv, mlp or e2e (needs a GPU)",
        description="shflbw bench [linear|conv|mlp|e2e] [ARGS...]: runs benchmarks/run_<kind>.py with ARGS "
                    "(each script's --help lists them; linear defaults to --suite quick). Examples: "
                    "shflbw bench --suite decode; shflbw bench conv --models resnet50 --vectors 64,128; "
                    "shflbw bench e2e --models resnet50.",
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's name, then its own arguments")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "example",
        help="prune a random layer, pack it, save/load it and run it through shflbw's ops, checking every step",
    )
    p.add_argument("--out", default="out/example", help="directory for the saved packed matrix (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(func=_cmd_example)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # ``bench`` hands its arguments to a benchmark script, options included (argparse's REMAINDER
    # does not take a leading option such as ``--suite``): keep what argparse did not know.
    args, unknown = parser.parse_known_args(argv)
    if unknown and getattr(args, "func", None) is _cmd_bench:
        args.args = unknown + list(args.args)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
