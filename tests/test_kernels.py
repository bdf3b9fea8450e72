"""Triton kernels against the reference: under TRITON_INTERPRET=1 on CPU in CI, natively on a GPU."""

import pytest
import torch
import torch.nn.functional as F

import shflbw
from shflbw.testing import random_problem, rel_error

from conftest import KERNEL_TOLERANCE

triton = pytest.importorskip("triton")

from shflbw.kernels.decode import DecodeConfig  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.spmm import SpmmConfig, spmm_fwd  # noqa: E402
from shflbw.kernels.transpose import transpose  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Small tiles keep the interpreter fast; they still cover tails in every dimension.
SMALL = SpmmConfig(block_n=16, block_k=16, num_warps=4, num_stages=1)
# The persistent kernel: 3 programs under the interpreter, so each walks several tiles.
SMALL_PERSISTENT = SpmmConfig(block_n=16, block_k=16, num_warps=4, num_stages=1, programs_per_sm=1)
SMALL_DECODE = DecodeConfig(block_k=16, gemv=False)
SMALL_XT = DecodeConfig(block_k=16, transpose_x=True)

# (M, K, T, V, density, empty groups): T not a power of two, M not a multiple of V, odd K,
# sparsity 0 and near 1, an empty group.
CASES = [
    (100, 70, 37, 32, 0.3, (1,)),
    (64, 48, 16, 16, 1.0, ()),
    (48, 33, 5, 16, 0.05, (0,)),
    (130, 64, 1, 64, 0.25, ()),
    (128, 40, 20, 128, 0.5, ()),
    (96, 50, 150, 32, 0.3, (2,)),
]


def _id(c):
    m, k, t, v, d, e = c
    return f"M{m}-K{k}-T{t}-V{v}-d{d}-empty{len(e)}"


def _dt(d):
    return str(d).split(".")[-1]


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize(
    "path,splits,row_slice,reduce",
    [("decode", 1, None, "fixup"), ("decode-xt", 2, None, "fixup"), ("decode", 3, None, "fixup"), ("decode", 3, None, "atomic"),
     ("decode", 1, 16, "fixup"), ("decode", 2, 16, "fixup"), ("splitk", 3, None, None), ("transpose", None, None, None),
     ("roundtrip", None, None, None)],
    ids=["decode", "decode-xt-split2", "decode-split3", "decode-split3-atomic", "decode-slice16", "decode-slice16-split2", "splitk3",
         "transpose", "roundtrip"],
)
def test_linear_kernels_match_reference(case, dtype, path, splits, row_slice, reduce, nan_poison):
    m, k, t, v, density, empty = case
    weight, mask, perm, w = random_problem(m, k, v, density, dtype, seed=m + t, device=DEVICE, empty_groups=empty)
    x = torch.randn(t, k, device=DEVICE).to(dtype)
    bias = torch.randn(m, device=DEVICE).to(dtype)
    dcfg = SMALL_XT if path == "decode-xt" else SMALL_DECODE
    y = linear_fwd(x, w.values, w.col_idx, w.group_ptr, w.perm, bias, m, path=path.replace("-xt", ""), splits=splits,
                   config=SMALL, decode_config=dcfg, row_slice=row_slice, reduce=reduce or "fixup")
    ref = F.linear(x.double(), (weight * mask).double(), bias.double())
    assert y.shape == (t, m) and y.dtype == dtype
    assert rel_error(y, ref) < KERNEL_TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("config", [SMALL, SMALL_PERSISTENT], ids=["one-tile", "persistent"])
def test_spmm_kernel_matches_reference(case, dtype, config, nan_poison):
    m, k, n, v, density, empty = case
    weight, mask, perm, w = random_problem(m, k, v, density, dtype, seed=m + n, device=DEVICE, empty_groups=empty)
    b = torch.randn(n, k, device=DEVICE).to(dtype).t()  # K x N, non-contiguous
    c = spmm_fwd(w.values, w.col_idx, w.group_ptr, w.perm, b, m, config=config)
    assert c.shape == (m, n)
    assert rel_error(c, (weight * mask).double() @ b.double()) < KERNEL_TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("prefetch", [0, 1, 2], ids=["plain", "prefetch1", "prefetch2"])
def test_decode_gemv_one_token(dtype, splits, prefetch, nan_poison):
    # 21 kept vectors per non-empty group at BK 4 are 6 steps (2 per split of 3): the prefetching
    # loop's first, middle, last and masked-past-the-end loads all run; the empty group runs none.
    weight, mask, perm, w = random_problem(130, 70, 64, 0.3, dtype, seed=5, device=DEVICE, empty_groups=(1,))
    x = torch.randn(1, 70, device=DEVICE).to(dtype)
    bias = torch.randn(130, device=DEVICE).to(dtype)
    cfg = DecodeConfig(block_k=4, gemv=True, gemv_prefetch=prefetch)
    y = linear_fwd(x, w.values, w.col_idx, w.group_ptr, w.perm, bias, 130, path="decode", splits=splits,
                   decode_config=cfg)
    ref = F.linear(x.double(), (weight * mask).double(), bias.double())
    assert y.shape == (1, 130) and rel_error(y, ref) < KERNEL_TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
@pytest.mark.parametrize("programs", [1, 3, 7, 500], ids=lambda p: f"programs{p}")
@pytest.mark.parametrize("tokens,transpose_x", [(1, False), (5, False), (20, True)], ids=["T1", "T5", "T20-xt"])
def test_decode_stream_k(dtype, programs, tokens, transpose_x, nan_poison):
    # Groups of 21 kept vectors at BK 4 are 6 steps each, plus one step for the empty group: 3 and
    # 7 programs split groups between programs (partials finished by the last to arrive); 500 is
    # more programs than steps (the kernel uses one per step); bias on, M not a multiple of V. T = 1
    # runs on CUDA cores, T = 5 as one tensor-core tile of 16 tokens from token-major X, T = 20 as
    # two tiles from transposed X.
    weight, mask, perm, w = random_problem(130, 70, 64, 0.3, dtype, seed=5, device=DEVICE, empty_groups=(1,))
    x = torch.randn(tokens, 70, device=DEVICE).to(dtype)
    bias = torch.randn(130, device=DEVICE).to(dtype)
    cfg = DecodeConfig(block_k=4, stream_k=1, transpose_x=transpose_x, block_t=16)
    y = linear_fwd(x, w.values, w.col_idx, w.group_ptr, w.perm, bias, 130, path="decode", splits=programs,
                   decode_config=cfg)
    ref = F.linear(x.double(), (weight * mask).double(), bias.double())
    assert y.shape == (tokens, 130) and rel_error(y, ref) < KERNEL_TOLERANCE[dtype]


def test_decode_stream_k_is_repeatable_and_leaves_counters_zeroed(nan_poison):
    from shflbw.kernels.decode import arrival_counters

    weight, mask, perm, w = random_problem(100, 70, 32, 0.3, torch.float32, seed=2, device=DEVICE, empty_groups=(0, 2))
    x = torch.randn(1, 70, device=DEVICE)
    kw = dict(path="decode", splits=5, decode_config=DecodeConfig(block_k=8, stream_k=2))
    y1 = linear_fwd(x, w.values, w.col_idx, w.group_ptr, w.perm, None, 100, **kw)
    assert int(arrival_counters(x.device, 1).abs().sum()) == 0
    y2 = linear_fwd(x, w.values, w.col_idx, w.group_ptr, w.perm, None, 100, **kw)
    assert torch.equal(y1, y2)
    assert rel_error(y1, x.double() @ (weight * mask).double().t()) < 1e-5


def test_decode_stream_k_rejects_bad_input():
    from shflbw.kernels.decode_streamk import linear_decode_streamk

    with pytest.raises(ValueError, match="stream_k"):
        DecodeConfig(stream_k=-1)
    weight, mask, perm, w = random_problem(64, 32, 16, 0.5, torch.float32, seed=1, device=DEVICE)
    args = (w.values, w.col_idx, w.group_ptr, w.perm, None, 64)
    with pytest.raises(ValueError, match="programs"):
        linear_decode_streamk(torch.randn(1, 32, device=DEVICE), *args, programs=0)
    with pytest.raises(ValueError, match="row_slice or reduce"):
        linear_fwd(torch.randn(1, 32, device=DEVICE), *args, path="decode", row_slice=16,
                   decode_config=DecodeConfig(stream_k=1))


def test_decode_fixup_is_repeatable_and_leaves_counters_zeroed(nan_poison):
    # The last split of each tile sums the partials in split order and re-zeroes its counter: a
    # second call (and a call with other shapes) must see clean counters and give the same bits.
    from shflbw.kernels.decode import arrival_counters

    weight, mask, perm, w = random_problem(96, 80, 32, 0.5, torch.float32, seed=3, device=DEVICE)
    x = torch.randn(3, 80, device=DEVICE)
    args = (w.values, w.col_idx, w.group_ptr, w.perm, None, 96)
    kw = dict(path="decode", splits=4, decode_config=SMALL_DECODE)
    y1 = linear_fwd(x, *args, **kw)
    assert int(arrival_counters(x.device, 1).abs().sum()) == 0
    y2 = linear_fwd(x, *args, **kw)
    assert torch.equal(y1, y2)
    assert rel_error(y1, x.double() @ (weight * mask).double().t()) < 1e-5


def test_decode_config_rejects_unknown_prefetch():
    with pytest.raises(ValueError, match="gemv_prefetch"):
        DecodeConfig(gemv_prefetch=3)


def test_decode_rejects_unknown_reduce():
    weight, mask, perm, w = random_problem(64, 32, 32, 0.5, device=DEVICE)
    with pytest.raises(ValueError, match="reduce"):
        linear_fwd(torch.randn(2, 32, device=DEVICE), w.values, w.col_idx, w.group_ptr, w.perm, None, 64,
                   path="decode", splits=2, reduce="tree")


def test_decode_plan_follows_the_measured_rule():
    from shflbw.kernels.configs import decode_config, decode_plan

    one, tile, xt = decode_config(1, 4096), decode_config(16, 768), decode_config(16, 4096)
    assert one.gemv and not tile.transpose_x and xt.transpose_x and (xt.block_k, xt.num_stages) == (128, 5)
    # (n_groups, V, nnz, tokens, SMs, config): about 3 programs per SM at T = 1, 1 with X
    # transposed, 2 for the tile
    assert decode_plan(64, 64, 64 * 1024, 1, 132, one) == (64, 8)  # 4096^2, 75 %
    assert decode_plan(172, 64, 172 * 1024, 1, 132, one) == (64, 2)  # 11008 x 4096
    assert decode_plan(172, 64, 172 * 1024, 16, 132, xt) == (64, 1)
    assert decode_plan(64, 64, 64 * 1024, 16, 132, xt) == (64, 2)
    assert decode_plan(48, 64, 48 * 192, 16, 132, tile) == (64, 2)  # 3072 x 768: 2 steps of 128 per group
    assert decode_plan(48, 64, 48 * 192, 1, 132, one) == (64, 2)
    assert decode_plan(1000, 64, 1000 * 1024, 1, 132, one) == (64, 1)  # enough groups: no split
    assert decode_plan(64, 64, 64 * 1024, 1, None, one) == (64, 1)  # CPU interpreter


def test_linear_plan_follows_the_measured_rule():
    from shflbw.kernels.configs import linear_plan

    # (tokens, n_groups, nnz, SMs) -> (path, splits): decode up to 32 tokens; then the roundtrip,
    # or split-K where it launches few programs for long groups (about 2 programs per SM, >= 8 steps
    # of 32 kept vectors each, at most 8 splits).
    assert linear_plan(16, 64, 64 * 1024, 132) == ("decode", 0)
    assert linear_plan(256, 64, 64 * 2752, 132) == ("splitk", 2)  # 4096 x 11008, 75 %: 86 steps a group
    assert linear_plan(64, 16, 16 * 1024, 132) == ("splitk", 4)  # 1024 x 4096, 75 %: 16 programs, 32 steps
    assert linear_plan(64, 48, 48 * 192, 132) == ("roundtrip", 1)  # 3072 x 768: 6 steps a group, no split
    assert linear_plan(512, 224, 224 * 1024, 132) == ("roundtrip", 1)  # 14336 x 4096: 896 programs
    assert linear_plan(4096, 64, 64 * 1024, 132) == ("roundtrip", 1)
    assert linear_plan(64, 64, 64 * 1024, None) == ("roundtrip", 1)  # CPU interpreter: no SM count
    # eager (not capturing a CUDA graph): host-bound, the fewest launches
    assert linear_plan(256, 64, 64 * 2752, 132, capturing=False) == ("transpose", 1)
    assert linear_plan(512, 64, 64 * 2752, 132, capturing=False) == ("roundtrip", 1)
    assert linear_plan(16, 64, 64 * 1024, 132, capturing=False) == ("decode", 0)


def test_spmm_config_takes_the_persistent_kernel_for_short_groups():
    from shflbw.kernels.configs import PERSISTENT_MAX_STEPS, SPMM_BLOCK_K, spmm_config

    short = PERSISTENT_MAX_STEPS * SPMM_BLOCK_K
    assert spmm_config(64, 4096, torch.bfloat16, kept_per_group=short).programs_per_sm > 0
    assert spmm_config(64, 4096, torch.bfloat16, kept_per_group=short + 1).programs_per_sm == 0
    assert spmm_config(64, 4096, torch.bfloat16).programs_per_sm == 0  # unknown group sizes


def test_linear_plan_is_deterministic_when_asked():
    from shflbw.kernels.configs import linear_plan

    torch.use_deterministic_algorithms(True)
    try:
        assert linear_plan(256, 64, 64 * 2752, 132) == ("roundtrip", 1)  # no float32 atomics
    finally:
        torch.use_deterministic_algorithms(False)


def test_decode_rejects_bad_row_slice():
    weight, mask, perm, w = random_problem(64, 32, 32, 0.5, device=DEVICE)
    with pytest.raises(ValueError, match="row_slice"):
        linear_fwd(torch.randn(2, 32, device=DEVICE), w.values, w.col_idx, w.group_ptr, w.perm, None, 64,
                   path="decode", row_slice=24)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
def test_spmm_group_order_output(dtype, nan_poison):
    # permute_out=False writes row g*V + r of a padded output: what a consumer that absorbs perm reads
    from shflbw.kernels.spmm import launch_spmm

    m, k, n, v = 70, 40, 21, 32
    weight, mask, perm, w = random_problem(m, k, v, 0.4, dtype, seed=9, device=DEVICE, empty_groups=(1,))
    b = torch.randn(k, n, device=DEVICE).to(dtype)
    out = torch.empty(w.padded_rows, n, dtype=dtype, device=DEVICE)
    launch_spmm(w.values, w.col_idx, w.group_ptr, w.perm, b, None, out, (n, 1), SMALL, permute_out=False)
    ref = (weight * mask).double() @ b.double()
    assert rel_error(out[:m], ref[perm.long()]) < KERNEL_TOLERANCE[dtype]
    assert rel_error(out[m:], torch.zeros(w.padded_rows - m, n)) == 0  # padding rows are zero


@pytest.mark.parametrize("dtype", DTYPES, ids=_dt)
@pytest.mark.parametrize("activation", [0, 1, 2], ids=["none", "relu", "gelu"])
@pytest.mark.parametrize("permute_out", [True, False], ids=["perm", "group-order"])
def test_spmm_persistent_epilogue(dtype, activation, permute_out, nan_poison):
    # bias, residual and activation in the persistent kernel's in-loop epilogue, both row orders,
    # a token tail (N = 37 over BN 16) and an empty group, against the one-tile kernel and fp64.
    from shflbw.kernels.spmm import launch_spmm

    m, k, n, v = 70, 40, 37, 32
    weight, mask, perm, w = random_problem(m, k, v, 0.4, dtype, seed=11, device=DEVICE, empty_groups=(1,))
    b = torch.randn(k, n, device=DEVICE).to(dtype)
    rows = m if permute_out else w.padded_rows
    bias = torch.randn(rows, device=DEVICE).to(dtype)
    residual = torch.randn(rows, n, device=DEVICE).to(dtype)
    outs = []
    for cfg in (SMALL, SMALL_PERSISTENT):
        out = torch.full((rows, n), float("nan"), dtype=dtype, device=DEVICE)
        launch_spmm(w.values, w.col_idx, w.group_ptr, w.perm, b, bias, out, (n, 1), cfg, permute_out=permute_out,
                    activation=activation, residual=residual)
        outs.append(out)
    prod = (weight * mask).double() @ b.double()
    if not permute_out:
        prod = torch.cat([prod[perm.long()], torch.zeros(rows - m, n, dtype=torch.float64, device=DEVICE)])
    ref = prod + bias.double()[:, None] + residual.double()
    ref = [ref, torch.relu(ref), F.gelu(ref)][activation]
    for out in outs:
        assert rel_error(out, ref) < KERNEL_TOLERANCE[dtype]
    assert rel_error(outs[1], outs[0]) < KERNEL_TOLERANCE[dtype]


@pytest.mark.parametrize("shape", [(37, 70), (1, 5), (64, 64), (130, 3)], ids=str)
def test_transpose_exact(shape, nan_poison):
    x = torch.randn(*shape, device=DEVICE).to(torch.bfloat16)
    assert torch.equal(transpose(x, 16, 16), x.t().contiguous())
    assert torch.equal(transpose(x.t(), 16, 16), x)  # strided input


def test_op_dispatches_to_triton_with_batch_dims(nan_poison):
    weight, mask, perm, w = random_problem(40, 24, 16, 0.5, torch.float16, device=DEVICE)
    x = torch.randn(2, 3, 24, device=DEVICE).to(torch.float16)
    ref = F.linear(x.double(), (weight * mask).double())
    with shflbw.ops.backend("triton"):
        y = shflbw.linear(x, w)
    assert y.shape == (2, 3, 40)
    assert rel_error(y, ref) < KERNEL_TOLERANCE[torch.float16]


@pytest.mark.requires_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=_dt)
@pytest.mark.parametrize("t", [1, 16, 33, 512, 1000])
@pytest.mark.parametrize("v", [32, 64, 128])
def test_gpu_default_configs_large(dtype, t, v, nan_poison):
    m, k = 1000, 1536
    weight, mask, perm, w = random_problem(m, k, v, 0.25, dtype, seed=t, device="cuda", empty_groups=(2,))
    x = torch.randn(t, k, device="cuda").to(dtype)
    bias = torch.randn(m, device="cuda").to(dtype)
    y = shflbw.linear(x, w, bias)
    ref = F.linear(x.double(), (weight * mask).double(), bias.double())
    assert rel_error(y, ref) < KERNEL_TOLERANCE[dtype]
    c = shflbw.spmm(w, x.t())
    assert rel_error(c, (weight * mask).double() @ x.t().double()) < KERNEL_TOLERANCE[dtype]


@pytest.mark.requires_gpu
def test_gpu_cuda_graph_and_compile():
    weight, mask, perm, w = random_problem(512, 256, 64, 0.25, torch.bfloat16, device="cuda")
    x = torch.randn(8, 256, device="cuda", dtype=torch.bfloat16)
    ref = shflbw.linear(x, w)
    g = torch.cuda.CUDAGraph()
    shflbw.linear(x, w)
    with torch.cuda.graph(g):
        y = shflbw.linear(x, w)
    x.copy_(torch.randn_like(x))
    g.replay()
    assert rel_error(y, F.linear(x.double(), (weight * mask).double())) < KERNEL_TOLERANCE[torch.bfloat16]
    f = torch.compile(lambda a: shflbw.linear(a, w) * 2, fullgraph=True)
    assert rel_error(f(x), 2 * F.linear(x.double(), (weight * mask).double())) < KERNEL_TOLERANCE[torch.bfloat16]
    del ref


@pytest.mark.requires_gpu
@pytest.mark.parametrize("tokens", [64, 256])
def test_gpu_captured_medium_t_takes_the_graph_plan(tokens, monkeypatch):
    # Under capture the plan differs from eager (split-K / roundtrip instead of the fewest launches):
    # the replayed graph must still give the right product, and the plan must see the capture.
    import shflbw.kernels.linear as lin
    from shflbw.kernels.configs import linear_plan, sm_count

    weight, mask, perm, w = random_problem(256, 2048, 64, 0.25, torch.bfloat16, seed=tokens, device="cuda")
    x = torch.randn(tokens, 2048, device="cuda", dtype=torch.bfloat16)
    plans = []
    real = lin.linear_plan
    monkeypatch.setattr(lin, "linear_plan", lambda *a: (plans.append(real(*a)), plans[-1])[1])
    shflbw.linear(x, w)  # eager: records the eager plan
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        shflbw.linear(x, w)  # warm-up outside capture
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = shflbw.linear(x, w)
    x.copy_(torch.randn_like(x))
    g.replay()
    ref = F.linear(x.double(), (weight * mask).double())
    assert rel_error(y, ref) < KERNEL_TOLERANCE[torch.bfloat16]
    assert plans[0][0] == "transpose"  # eager: the fewest launches
    captured = linear_plan(tokens, w.num_groups, w.values.shape[0], sm_count(x.device))
    assert plans[-1] == captured and captured[0] in ("splitk", "roundtrip")


def test_non_power_of_two_vector_takes_the_reference_path(nan_poison):
    # V = 48 is a valid format (a multiple of 16) but not a tile the kernels can index
    weight, mask, perm, w = random_problem(100, 40, 48, 0.5, torch.float16, device=DEVICE)
    x = torch.randn(5, 40, device=DEVICE).to(torch.float16)
    with shflbw.ops.backend("triton"):
        y = shflbw.linear(x, w)
        c = shflbw.spmm(w, x.t())
    assert rel_error(y, F.linear(x.double(), (weight * mask).double())) < KERNEL_TOLERANCE[torch.float16]
    assert rel_error(c, (weight * mask).double() @ x.t().double()) < KERNEL_TOLERANCE[torch.float16]


@pytest.mark.parametrize("path", ["roundtrip", "transpose", "splitk", "decode"])
def test_feature_major_input_is_used_in_place(path, nan_poison, monkeypatch):
    # x handed over as a transposed view of a feature-major buffer (strides (1, T)): same result,
    # and the roundtrip / transpose / split-K paths skip their input transpose.
    import shflbw.kernels.transpose as tr

    m, k, t = 96, 48, 40
    weight, mask, perm, w = random_problem(m, k, 32, 0.5, torch.float32, seed=4, device=DEVICE)
    xt = torch.randn(k, t, device=DEVICE)
    x = xt.t()
    assert x.stride() == (1, t)
    calls = []
    real = tr.transpose_kernel
    monkeypatch.setattr(tr, "transpose_kernel", type("Spy", (), {"__getitem__": lambda self, g: (calls.append(g), real[g])[1]})())
    y = linear_fwd(x, w.values, w.col_idx, w.group_ptr, w.perm, None, m, path=path, splits=2, config=SMALL,
                   decode_config=SMALL_XT)
    assert rel_error(y, x.double() @ (weight * mask).double().t()) < KERNEL_TOLERANCE[torch.float32]
    if path in ("transpose", "decode"):
        assert not calls  # nothing transposed at all
    else:
        assert len(calls) == 1  # only the output goes back to token-major


def test_needs_int64_counts_the_farthest_element_not_numel():
    from shflbw.kernels.spmm import needs_int64

    small = torch.empty(4096, 4096, device="meta")
    assert not needs_int64(small)
    # a 2 x 2 view whose second row starts 2^31 elements past the base: int32 offsets would wrap
    far = torch.empty(0, device="meta").as_strided((2, 2), (2**31, 1))
    assert needs_int64(small, far)
    assert needs_int64(torch.empty(2**16, 2**15 + 1, device="meta"))
    assert not needs_int64(torch.empty(0, 2**40, device="meta"))  # nothing to address


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_dt)
def test_decode_token_tiles_cover_many_tokens(dtype, nan_poison):
    # block_t fixes the token tile: 150 tokens in tiles of 16 is ten tiles, the last partial.
    weight, mask, perm, w = random_problem(96, 50, 32, 0.3, dtype, seed=11, device=DEVICE, empty_groups=(2,))
    x = torch.randn(150, 50, device=DEVICE).to(dtype)
    bias = torch.randn(96, device=DEVICE).to(dtype)
    cfg = DecodeConfig(block_k=16, transpose_x=True, block_t=16)
    y = linear_fwd(x, w.values, w.col_idx, w.group_ptr, w.perm, bias, 96, path="decode", splits=2, decode_config=cfg)
    ref = F.linear(x.double(), (weight * mask).double(), bias.double())
    assert y.shape == (150, 96) and rel_error(y, ref) < KERNEL_TOLERANCE[dtype]


def test_decode_rejects_bad_token_tile():
    weight, mask, perm, w = random_problem(64, 32, 32, 0.5, device=DEVICE)
    with pytest.raises(ValueError, match="block_t"):
        linear_fwd(torch.randn(20, 32, device=DEVICE), w.values, w.col_idx, w.group_ptr, w.perm, None, 64,
                   path="decode", decode_config=DecodeConfig(block_t=24, gemv=False))


def test_gelu_runs_through_the_hardware_tanh_only_for_16_bit_outputs_on_the_gpu(monkeypatch):
    from shflbw.kernels import spmm

    monkeypatch.setattr(spmm, "_interpreting", lambda: False)  # as on the GPU
    assert spmm.kernel_activation(2, torch.bfloat16) == spmm.kernel_activation(2, torch.float16) == spmm.TANH_GELU.value
    assert spmm.kernel_activation(2, torch.float32) == 2  # float32 keeps the erf form
    assert spmm.kernel_activation(2, torch.bfloat16, exact_gelu=True) == 2
    assert spmm.kernel_activation(1, torch.bfloat16) == 1 and spmm.kernel_activation(0, torch.bfloat16) == 0
    monkeypatch.setattr(spmm, "_interpreting", lambda: True)  # inline PTX does not run in the interpreter
    assert spmm.kernel_activation(2, torch.bfloat16) == 2
