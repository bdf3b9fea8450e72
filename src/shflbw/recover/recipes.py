"""The measured recipes, shared by ``shflbw eval`` (eval.study) and ``shflbw prune`` (prune_checkpoint).

Each constant says what was measured to choose it (MiniLM, docs/recovery.md). ``oneshot_recipe_``
composes the one-shot recipe (optional per-layer sparsity, OBS scores, least-squares refit) so
both commands prune the same way.
"""

from __future__ import annotations

from torch import nn

from shflbw.config import ShflBWConfig
from shflbw.recover.allocate import config_with
from shflbw.recover.reconstruct import oneshot_prune_

# The distillation starts from the search's row grouping, not the one regrouped for the refit
# (recover.regroup): Shfl-BW 75 %, V = 64, over calibration seeds 0-3 (H100, session 13), the distilled polarity was 0.732
# (0.715-0.745) from that start against 0.711 (0.710-0.715) from the regrouped one, the other four
# metrics level (docs/recovery.md). The one-shot recipe itself keeps regrouping (cosine 0.662 vs 0.632).
DISTILL_REGROUP = False
# The one-shot recipe refits the layers' biases and gives each layer its own sparsity (recover.allocate):
# over calibration seeds 0-3, Shfl-BW V = 64 at 75 % went from Lee 0.641 / polarity 0.691 / cosine 0.662
# to 0.677 / 0.718 / 0.704 (CPU, session 14), and at 50 % from 0.675 / 0.725 / 0.802 to 0.675 / 0.745 /
# 0.830 (H100, session 15). Patterns whose layout fixes the sparsity per row (2:4) are not allocated.
ONESHOT_FIT_BIAS = True
ONESHOT_ALLOCATE = True
# ... but the distillation start stays plain: from the allocated, bias-refit start the distilled model
# ended closer to the dense one (cosine 0.766 against 0.733) and lower on the tasks (polarity 0.705
# against 0.732, WordSim 0.628 against 0.650; 75 %, seeds 0-3, H100, session 15).
DISTILL_FIT_BIAS = False
DISTILL_ALLOCATE = False
# The distillation's learning rate (every study run and `shflbw prune --recipe distill`; docs/recovery.md;
# DistillConfig's default is 5e-5).
DISTILL_LR = 2e-4


def oneshot_recipe_(model: nn.Module, config: ShflBWConfig, calibration, pattern: str = "shfl_bw",
                    regroup: bool = True, fit_bias: bool = ONESHOT_FIT_BIAS,
                    allocation: dict[str, float] | None = None) -> nn.Module:
    """Prune ``model`` in place by the one-shot recipe: OBS scores and a least-squares refit
    (``oneshot_prune_(score="obs")``), each layer at its sparsity in ``allocation`` (from
    ``allocate_sparsity``; None: the config's own). The distillation start passes
    ``regroup=DISTILL_REGROUP, fit_bias=DISTILL_FIT_BIAS`` and no allocation."""
    if allocation is not None:
        config = config_with(config, allocation)
    return oneshot_prune_(model, config, calibration, pattern=pattern, score="obs", regroup=regroup,
                          fit_bias=fit_bias)
