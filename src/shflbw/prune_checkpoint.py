"""``shflbw prune CHECKPOINT --config cfg.json -o OUT``: prune a Hugging Face model directory and save it compressed.

Three recipes, from the cheapest:
- no calibration text: masks from the weights (the config's ``importance="magnitude"``);
- ``--calibration FILE``: the same search on activation-aware scores when the config asks for
  ``importance="activation"`` (Wanda's |W| ||x||, ``sparsify_``);
- ``--recipe oneshot --calibration FILE``: layer by layer, OBS scores and a least-squares refit of
  the kept weights and biases toward the dense model, each layer at its own sparsity under the
  config's overall budget (``recover.allocate_sparsity``, ``oneshot_prune_``): the recipe that kept
  MiniLM closest to dense in docs/recovery.md. ``--no-fit-bias`` / ``--no-allocate`` drop a part;
- ``--recipe distill --calibration FILE``: a plain one-shot start (the search's row grouping, no
  bias refit, uniform sparsity: the start that distilled best in docs/recovery.md), then
  ``distill_`` toward the dense model on the same text, masks fixed, for ``--distill-steps`` or
  ``--distill-minutes``, whichever ends first (lr 2e-4 as the study: ``recover.recipes.DISTILL_LR``). Give it more text than
  a one-shot needs: the study distilled on about 6,000 texts.
The calibration file holds one text per line (blank lines skipped), tokenised with the checkpoint's
own tokenizer. Every recipe prunes to Shfl-BW (the packed format).
"""

from __future__ import annotations

import json
import os

RECIPES = ("sparsify", "oneshot", "distill")


def read_calibration(path: str, tokenizer, batch_size: int = 16, max_length: int = 128) -> list[dict]:
    """Tokenised batches of the non-blank lines of a UTF-8 text file (dicts the model takes as ``**batch``)."""
    from shflbw.eval.data import text_batches

    if not os.path.isfile(path):
        raise SystemExit(f"calibration file {path!r} not found")
    if batch_size < 1 or max_length < 1:
        raise SystemExit("--batch-size and --max-length must be positive")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError as e:
        raise SystemExit(f"calibration file {path!r} is not UTF-8 text: {e}") from None
    texts = [line for line in lines if line]
    if not texts:
        raise SystemExit(f"calibration file {path!r} has no text (one sample per line)")
    batches = text_batches(tokenizer, texts, batch_size, max_length)
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None:
        import torch

        ids = torch.cat([b["input_ids"].flatten() for b in batches])
        other = [i for i in getattr(tokenizer, "all_special_ids", ()) if i != unk]
        words = ids[~torch.isin(ids, torch.tensor(other, dtype=ids.dtype))] if other else ids
        if words.numel() and bool((words == unk).all()):
            raise SystemExit(f"every token of {path!r} is unknown to the checkpoint's tokenizer ({tokenizer.unk_token})")
    return batches


def _tokenizer(checkpoint: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError) as e:
        raise SystemExit(f"{checkpoint!r} has no tokenizer to read the calibration text with: {e}") from None
    # transformers 5 builds an empty tokenizer (special tokens only) for a directory without tokenizer
    # files: every word would become [UNK]
    if len(tok) <= len(set(tok.all_special_tokens)):
        raise SystemExit(f"{checkpoint!r} has no tokenizer to read the calibration text with (no vocabulary "
                         "files: save the tokenizer next to the model)")
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # decoder tokenizers (GPT-2 style) have none; the mask hides padding
    return tok


def prune_checkpoint(checkpoint: str, config_path: str | None, out: str, calibration: str | None = None,
                     recipe: str = "sparsify", fit_bias: bool | None = None, allocate: bool | None = None,
                     batch_size: int = 16, max_length: int = 128, device: str | None = None,
                     distill_steps: int = 1250, distill_minutes: float = 15.0) -> int:
    import torch

    import shflbw
    from shflbw.nn.serialization import refuse_foreign_target
    from shflbw.recover.recipes import ONESHOT_ALLOCATE, ONESHOT_FIT_BIAS

    # None: the one-shot recipe's measured choice (recover.recipes), as `shflbw eval` resolves it
    fit_bias = ONESHOT_FIT_BIAS if fit_bias is None else fit_bias
    allocate = ONESHOT_ALLOCATE if allocate is None else allocate

    if recipe not in RECIPES:
        raise SystemExit(f"--recipe must be one of {RECIPES}, got {recipe!r}")
    dcfg = None
    if recipe == "distill":
        from shflbw.recover import DistillConfig
        from shflbw.recover.recipes import DISTILL_LR

        try:  # checked before the model is loaded
            dcfg = DistillConfig(steps=distill_steps, lr=DISTILL_LR, time_budget=distill_minutes * 60)
        except ValueError as e:
            raise SystemExit(f"--distill-steps / --distill-minutes: {e}") from None
    try:  # checked before minutes of pruning, not at the save
        refuse_foreign_target(os.path.abspath(out))
    except ValueError as e:
        raise SystemExit(f"-o: {e}") from None
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
    if calibration is None and (recipe != "sparsify" or cfg.importance == "activation"):
        why = f"--recipe {recipe}" if recipe != "sparsify" else 'the config\'s importance="activation"'
        raise SystemExit(f"{why} needs calibration text: --calibration FILE (one sample per line)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint).eval()
    try:
        layers = shflbw.nn.masked.selected_layers(model, cfg)  # a config that selects nothing stops here
    except ValueError as e:
        raise SystemExit(str(e)) from None
    # the trained weights, for the report's kept importance: the one-shot refit rewrites the kept ones
    # (a CPU copy in the weights' dtype; sparsify_ leaves them as they are)
    trained = {n: m.weight.detach().to("cpu", copy=True) for n, m in layers.items()} if recipe != "sparsify" else {}
    batches = None
    if calibration is not None:
        batches = read_calibration(calibration, _tokenizer(checkpoint), batch_size, max_length)
        model.to(device)
        batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    try:
        _apply_recipe(model, cfg, batches, recipe, fit_bias, allocate, dcfg)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    model.cpu()
    report = _report(model, trained)
    if not report:
        raise SystemExit("the config selected no layer to prune")
    recipe_info = {"recipe": recipe, "calibration": calibration}
    if recipe == "oneshot":
        recipe_info.update(fit_bias=fit_bias, allocate=allocate)
    elif recipe == "distill":
        recipe_info.update(distill_steps=distill_steps, distill_minutes=distill_minutes)

    def hf_config_and_report(path):
        model.config.save_pretrained(path)  # so `load` can rebuild the skeleton with AutoModel.from_config
        with open(os.path.join(path, "report.json"), "w") as f:
            json.dump({**recipe_info, "layers": report}, f, indent=1)

    shflbw.compress_(model)
    # written with the weights into a temporary directory that then replaces OUT: a run stopped at any
    # point leaves OUT as it was (no weights without their config)
    shflbw.save(model, out, config=cfg, extra=hf_config_and_report)
    weights = sum(r["shape"][0] * r["shape"][1] for r in report.values())
    overall = sum(r["sparsity"] * r["shape"][0] * r["shape"][1] for r in report.values()) / weights
    mean_keep = sum(r["kept_importance"] for r in report.values()) / len(report)
    print(f"pruned {len(report)} layers ({recipe}; overall sparsity {overall:.3f}, mean kept importance "
          f"{mean_keep:.3f}); wrote {out}")
    return 0


def _apply_recipe(model, cfg, batches, recipe: str, fit_bias: bool, allocate: bool, distill_config) -> None:
    """Prune ``model`` in place (masked mode) by ``recipe`` (module docstring); ``distill_config``
    (a DistillConfig) for the distill recipe."""
    import shflbw

    if recipe == "oneshot":
        from shflbw.recover import allocate_sparsity
        from shflbw.recover.recipes import oneshot_recipe_

        allocation = allocate_sparsity(model, cfg, batches)[0] if allocate else None
        oneshot_recipe_(model, cfg, batches, fit_bias=fit_bias, allocation=allocation)
    elif recipe == "distill":
        import copy

        from shflbw.recover import distill_
        from shflbw.recover.recipes import DISTILL_FIT_BIAS, DISTILL_REGROUP, oneshot_recipe_

        teacher = copy.deepcopy(model)
        # the study's distillation start (uniform sparsity: DISTILL_ALLOCATE is off)
        oneshot_recipe_(model, cfg, batches, regroup=DISTILL_REGROUP, fit_bias=DISTILL_FIT_BIAS)
        distill_(model, teacher, batches, distill_config)
        model.eval()  # distill_ trains; the saved model runs in eval mode
    else:
        shflbw.sparsify_(model, cfg, batches)


def _report(model, trained: dict) -> dict:
    """Per pruned layer: shape, V, sparsity and the squared magnitude kept of its trained weight
    (``trained[name]`` where a refit rewrote the weight, else the masked layer's own)."""
    import shflbw

    report = {}
    for name, mod in model.named_modules():
        p = shflbw.nn.masked.mask_of(mod)
        if p is not None:
            w = trained.get(name)
            w = (shflbw.nn.masked.dense_weight(mod) if w is None else w).detach().double()
            report[name] = {"shape": list(w.shape), "vector": p.vector, "sparsity": 1 - p.mask.double().mean().item(),
                            "kept_importance": float((w**2 * p.mask.reshape(w.shape)).sum() / (w**2).sum())}
    return report


def load_pruned(directory: str):
    """Load a directory written by ``shflbw prune``, rebuilding the Hugging Face model from its config.

    The skeleton is built on the CPU, not the meta device: Hugging Face models hold non-persistent
    buffers (position_ids) that no checkpoint stores. The model comes back in eval mode, as
    ``from_pretrained`` gives it (``from_config`` alone would leave dropout on).
    """
    import shflbw
    from transformers import AutoConfig, AutoModel

    return shflbw.load(directory, AutoModel.from_config(AutoConfig.from_pretrained(directory))).eval()
