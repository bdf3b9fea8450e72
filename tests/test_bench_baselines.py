"""The benchmark's other-library baselines (benchmarks/baselines.py) and their table, on CPU:
the BSR baseline runs at the case's sparsity and computes the product on its own masked weight."""

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baselines import block_mask, bsr_candidates  # noqa: E402
from shflbw.testing import rel_error  # noqa: E402


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875, 0.9375])
def test_block_mask_keeps_the_heaviest_blocks_at_the_exact_sparsity(sparsity):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(128, 192, generator=g) * torch.rand(128 // 32, 1, 192 // 32, 1, generator=g).expand(-1, 32, -1, 32).reshape(128, 192)
    mask = block_mask(w, sparsity, 32)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    blocks = mask.view(4, 32, 6, 32).permute(0, 2, 1, 3).reshape(24, -1)
    assert bool((blocks.all(dim=1) | ~blocks.any(dim=1)).all())  # whole blocks only
    kept = blocks.all(dim=1)
    assert int(kept.sum()) == round((1 - sparsity) * 24)
    norms = w.pow(2).view(4, 32, 6, 32).sum(dim=(1, 3)).flatten()
    assert norms[kept].min() >= norms[~kept].max()  # the heaviest ones


def test_block_mask_refuses_a_block_that_does_not_divide():
    with pytest.raises(ValueError, match="does not divide"):
        block_mask(torch.randn(100, 64), 0.5, 64)


def test_bsr_candidates_compute_the_product_on_their_masked_weight():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(7, 128, generator=g), torch.randn(192, 128, generator=g)
    candidates = bsr_candidates(x, w, 0.75, block=32)
    assert [name for name, _, _ in candidates] == ["torch-bsr32"]  # the Triton kernel needs CUDA
    for _, fn, ref in candidates:
        out = fn()
        assert out.shape == ref.shape and rel_error(out, ref) < 1e-5
        # the reference is the block-masked product, not the dense one: the baseline really is 75 % sparse
        assert rel_error(ref, F.linear(x, w)) > 0.1


def test_failing_baselines_become_unavailable_rows():
    run_linear = pytest.importorskip("benchmarks.run_linear")

    def no_build():
        raise RuntimeError("this build has no cuSPARSELt")

    def boom():
        raise NotImplementedError("not for bfloat16")

    rows = run_linear.other_library("torch-2:4", no_build, torch.bfloat16, graph=False)
    assert rows == [{"variant": "torch-2:4", "us": None, "status": "unavailable: RuntimeError: this build has no cuSPARSELt"}]
    rows = run_linear.other_library("torch-bsr64", lambda: [("torch-bsr64", boom, None)], torch.bfloat16, graph=False)
    assert rows[0]["us"] is None and rows[0]["status"].startswith("unavailable: NotImplementedError")


def test_table_shows_baseline_columns_and_never_calls_them_ours(tmp_path, capsys):
    table = pytest.importorskip("benchmarks.table")

    def row(variant, us, speedup):
        return {"case": "M4096-K4096-T4096-V64-s0.75-bfloat16", "variant": variant, "us": us, "speedup": speedup,
                "status": "ok"}

    data = {"stamp": {"gpu": "test", "torch": "x", "triton": "y", "commit": "z"},
            "rows": [row("dense", 100.0, 1.0), dict(row("shflbw", 60.0, 1.67), ceiling_pct=41.2), row("dense-compiled", 95.0, 1.05),
                     row("torch-bsr64", 40.0, 2.5), row("torch-bsr64-wxT", 30.0, 3.33)]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    table.main(str(path))
    header, _, line = capsys.readouterr().out.strip().splitlines()[-3:]
    assert "dense-compiled" in header and "torch-bsr64" in header and "torch-bsr64-wxT" in header
    assert line.endswith("| shflbw 1.67x, 41 % of ceiling |")  # BSR's 3.33x is a baseline, not the best shflbw variant


def test_compile_static_compiles_once_per_shape():
    from benchmarks.baselines import compile_static

    def f(a):
        return torch.relu(a) * 2

    a, b = torch.randn(4, 8), torch.randn(3, 5)
    fa = compile_static(f, a.shape)
    assert compile_static(f, a.shape) is fa  # the run's other sparsities reuse it
    assert torch.equal(fa(a), f(a))
    fb = compile_static(f, b.shape)
    assert fb is not fa and torch.equal(fb(b), f(b))


def test_ceiling_fraction_of_a_row():
    from benchmarks.roofline import Ceilings, ceiling_pct, floor_us

    ceil = Ceilings(bytes_per_us=4.0e6, flops_per_us=700.0e6)  # 4 TB/s, 700 TFLOP/s
    # 4096^2, T = 4096, dense bf16: 137.4 GFLOP -> 196.3 us at 700 TFLOP/s (the bytes take 25 us)
    assert floor_us(4096, 4096, 4096, 1.0, 2, ceil) == pytest.approx(2 * 4096**3 / 700e6)
    # T = 1, 75 %: the weight's kept quarter, 8.4 MB, at 4 TB/s -> 2.1 us (the flops take 0.01 us)
    assert floor_us(1, 4096, 4096, 0.25, 2, ceil) == pytest.approx(2 * (4096 * 4096 / 4 + 4096 + 4096) / 4e6)
    # a sparse row is held to the sparse work, a dense one to the dense work
    assert ceiling_pct("shflbw", 100.0, 4096, 4096, 4096, 0.75, 2, ceil) == pytest.approx(
        100 * 2 * 4096**3 / 4 / 700e6 / 100.0)
    assert ceiling_pct("dense-graph", 250.0, 4096, 4096, 4096, 0.75, 2, ceil) == pytest.approx(
        100 * 2 * 4096**3 / 700e6 / 250.0)
    assert ceiling_pct("shflbw", None, 1, 64, 64, 0.5, 2, ceil) is None  # a WRONG row has no time
    with pytest.raises(ValueError, match="density"):
        floor_us(1, 64, 64, 0.0, 2, ceil)


@pytest.mark.parametrize("tokens,sparsity,dtype", [(1, 0.75, "bfloat16"), (40, 0.5, "float32")])
def test_run_case_gates_every_row_on_cpu(tokens, sparsity, dtype, monkeypatch):
    """run_linear.run_case end to end with the kernels under the interpreter and the times faked:
    every row is gated and right, or says why it could not run (no crash costs device time)."""
    run_linear = pytest.importorskip("benchmarks.run_linear")
    from benchmarks import timing
    from benchmarks.cases import LinearCase
    from benchmarks.roofline import Ceilings

    monkeypatch.setattr(run_linear, "DEVICE", "cpu")
    monkeypatch.setattr(timing, "median_us", lambda fn, graph=False, rep=100: 10.0)
    case = LinearCase(128, 64, tokens, sparsity, 32, dtype)
    rows = run_linear.run_case(case, sweep=False, chain=2, bsr_block=32, ceilings=Ceilings(4e6, 7e8))
    by = {r["variant"]: r for r in rows}
    assert not [r for r in rows if r["status"] == "WRONG"]
    assert by["dense"]["status"] == by["shflbw"]["status"] == "ok"
    assert by["shflbw"]["speedup"] == pytest.approx(1.0) and by["shflbw"]["ceiling_pct"] > 0
    if tokens <= 16:
        assert by["shflbw-chain2"]["status"] == "ok"
    else:
        assert {"shflbw-graph", "transpose-scatter", "spmm-feature-major", "group-order-out"} <= by.keys()
        assert all(by[v]["status"] == "ok" for v in ("shflbw-graph", "transpose-scatter", "spmm-feature-major",
                                                     "group-order-out"))
        assert by["torch-2:4"]["status"].startswith("unavailable")  # cuSPARSELt: CUDA only
    if tokens <= 16:  # graph replays: BSR is left out, saying why
        assert by["torch-bsr32"]["status"].startswith("not timed: T <= 16")
    else:
        assert by["torch-bsr32"]["status"] == "ok"
