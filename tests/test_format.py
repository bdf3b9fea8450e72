import pytest
import torch

from shflbw import ShflBWMatrix
from shflbw.testing import random_problem, random_shflbw_mask

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (M, K, V, density, empty groups, dense groups): odd K, M not a multiple of V, empty and full groups
SHAPES = [
    (64, 64, 16, 0.5, (), ()),
    (200, 97, 64, 0.25, (1,), (0,)),
    (130, 33, 32, 0.3, (0, 4), (2,)),
    (17, 5, 16, 0.6, (), ()),
    (256, 128, 128, 0.125, (), (1,)),
    (96, 40, 32, 0.0, (), ()),
    (96, 40, 32, 1.0, (), ()),
]


def _id(s):
    m, k, v, d, e, f = s
    return f"M{m}-K{k}-V{v}-d{d}-empty{len(e)}-dense{len(f)}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_round_trip_is_exact(shape, dtype):
    m, k, v, density, empty, dense = shape
    weight, mask, perm, w = random_problem(m, k, v, density, dtype, seed=m + k, empty_groups=empty, dense_groups=dense)
    dense_out = w.to_dense()
    assert dense_out.dtype == dtype and dense_out.shape == (m, k)
    assert torch.equal(dense_out, weight * mask)
    assert torch.equal(w.mask(), mask)
    assert w.values.shape == (int(w.group_ptr[-1]), v)
    assert abs(w.density - mask.double().mean().item()) < 1e-12


def test_columns_sorted_and_groups_follow_perm():
    weight, mask, perm, w = random_problem(100, 50, 16, 0.4, seed=3)
    ptr = w.group_ptr.tolist()
    for g in range(w.num_groups):
        cols = w.col_idx[ptr[g] : ptr[g + 1]]
        assert bool((cols[1:] > cols[:-1]).all())
        rows = perm[g * 16 : (g + 1) * 16]
        expect = torch.nonzero(mask[rows[0]]).flatten().to(torch.int32)
        assert torch.equal(cols, expect)
        # values[i, r] = W[perm[g*V + r], col_idx[i]]
        assert torch.equal(w.values[ptr[g] : ptr[g + 1], : len(rows)], weight[rows][:, cols.long()].t())


def test_identity_perm_default_and_masked_weights_dropped():
    weight = torch.randn(32, 8)
    mask = torch.zeros(32, 8, dtype=torch.bool)
    mask[:16, [1, 5]] = True
    mask[16:, [0]] = True
    w = ShflBWMatrix.from_dense(weight, mask, vector=16)
    assert torch.equal(w.perm, torch.arange(32, dtype=torch.int32))
    assert w.nnz_vectors == 3
    weight_nan = weight.clone()
    weight_nan[~mask] = float("nan")  # pruned positions never leak into the packed matrix
    assert torch.equal(ShflBWMatrix.from_dense(weight_nan, mask, vector=16).to_dense(), weight * mask)


def test_zero_one_float_mask_accepted():
    weight, mask, perm, _ = random_problem(48, 24, 16, 0.5)
    w = ShflBWMatrix.from_dense(weight, mask.float(), perm, vector=16)
    assert torch.equal(w.to_dense(), weight * mask)


def test_to_dtype_and_nbytes():
    weight, mask, perm, w = random_problem(128, 64, 64, 0.25)
    h = w.to(dtype=torch.bfloat16)
    assert h.dtype == torch.bfloat16 and h.perm.dtype == torch.int32
    assert torch.equal(h.to_dense(), (weight * mask).to(torch.bfloat16))
    assert torch.equal(w.to(torch.float16).to_dense(), (weight * mask).half())  # dtype first, as tensors take it
    with pytest.raises(TypeError, match="two dtypes"):
        w.to(torch.float16, torch.bfloat16)
    with pytest.raises(TypeError, match="dtype must be"):
        w.to(torch.int8)
    nnz = w.nnz_vectors
    assert w.nbytes == 4 * 128 + 4 * 3 + 4 * nnz + 4 * 64 * nnz
    assert "V=64" in repr(w) and "sparsity=75.0%" in repr(w)


# ---------------------------------------------------------------- bad input
def test_rejects_mask_that_is_not_shflbw_and_names_the_group():
    weight, mask, perm, _ = random_problem(64, 20, 16, 0.5, seed=1)
    bad = mask.clone()
    row = int(perm[16 + 3])  # a row of group 1
    col = int(torch.nonzero(~bad[row])[0])
    bad[row, col] = True
    with pytest.raises(ValueError, match=rf"group 1, column {col}"):
        ShflBWMatrix.from_dense(weight, bad, perm, vector=16)


def test_rejects_mask_under_wrong_perm():
    weight, mask, perm, _ = random_problem(64, 20, 16, 0.5, seed=2)
    with pytest.raises(ValueError, match="not Shfl-BW"):
        ShflBWMatrix.from_dense(weight, mask, torch.arange(64), vector=16)


@pytest.mark.parametrize(
    "perm, err, msg",
    [
        (torch.tensor([0, 1, 2, 2]), ValueError, "row 2 appears 2 times"),
        (torch.tensor([0, 1, 2, 4]), ValueError, "holds 4"),
        (torch.tensor([0, 1, -1, 3]), ValueError, "holds -1"),
        (torch.tensor([0, 1, 2]), ValueError, r"shape \(4,\)"),
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, "integers"),
    ],
    ids=["duplicate", "too-large", "negative", "short", "float"],
)
def test_rejects_bad_perm(perm, err, msg):
    with pytest.raises(err, match=msg):
        ShflBWMatrix.from_dense(torch.randn(4, 4), torch.ones(4, 4, dtype=torch.bool), perm, vector=16)


@pytest.mark.parametrize("vector", [0, 8, 24, -16, 64.0, True])
def test_rejects_bad_vector(vector):
    with pytest.raises((ValueError, TypeError), match="vector"):
        ShflBWMatrix.from_dense(torch.randn(32, 4), torch.ones(32, 4, dtype=torch.bool), vector=vector)


def test_rejects_shape_and_dtype_problems():
    ones = torch.ones(32, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="does not match weight shape"):
        ShflBWMatrix.from_dense(torch.randn(32, 5), ones, vector=16)
    with pytest.raises(ValueError, match="2-D"):
        ShflBWMatrix.from_dense(torch.randn(32, 4, 1), ones[..., None], vector=16)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        ShflBWMatrix.from_dense(torch.ones(32, 4, dtype=torch.int64), ones, vector=16)
    with pytest.raises(ValueError, match="only 0 and 1"):
        ShflBWMatrix.from_dense(torch.randn(32, 4), torch.full((32, 4), 2.0), vector=16)
    with pytest.raises(TypeError):
        ShflBWMatrix.from_dense([[1.0]], ones, vector=16)


def _packed():
    return random_problem(64, 16, 16, 0.5, seed=5)[3]


@pytest.mark.parametrize(
    "corrupt, err, msg",
    [
        (lambda w: w.col_idx.__setitem__(0, 16), ValueError, r"col_idx\[0\] = 16 is out of range"),
        (lambda w: w.col_idx.__setitem__(1, w.col_idx[0]), ValueError, "not strictly increasing"),
        (lambda w: w.group_ptr.__setitem__(0, 1), ValueError, r"group_ptr\[0\] must be 0"),
        (lambda w: w.group_ptr.__setitem__(-1, 3), ValueError, "group_ptr\\[-1\\]"),
        (lambda w: w.group_ptr.__setitem__(1, 100), ValueError, "non-decreasing|more than K"),
        (lambda w: w.perm.__setitem__(0, w.perm[1]), ValueError, "bijection"),
        (lambda w: setattr(w, "values", w.values[:, :8]), ValueError, "values must have shape"),
        (lambda w: setattr(w, "col_idx", w.col_idx.long()), TypeError, "col_idx must be int32"),
        (lambda w: setattr(w, "values", w.values.double()), TypeError, "values must be"),
        (lambda w: setattr(w, "vector", 20), ValueError, "multiple of 16"),
    ],
    ids=["col-range", "col-order", "ptr-start", "ptr-end", "ptr-order", "perm", "values-shape", "index-dtype",
         "values-dtype", "vector"],
)
def test_validate_names_the_broken_invariant(corrupt, err, msg):
    w = _packed()
    corrupt(w)
    with pytest.raises(err, match=msg):
        w.validate()


def test_random_mask_helper_is_shflbw():
    mask, perm = random_shflbw_mask(70, 30, 32, 0.4, generator=torch.Generator().manual_seed(0))
    ShflBWMatrix.from_dense(torch.randn(70, 30), mask, perm, vector=32)


def test_stack_rows_is_the_matrices_one_above_the_other():
    # an empty group in the middle one, a padded last group in the last one (M = 40, V = 32)
    parts = [random_problem(m, 48, 32, d, torch.bfloat16, seed=m, empty_groups=e)
             for m, d, e in [(64, 0.25, ()), (96, 0.5, (1,)), (40, 0.3, ())]]
    stacked = ShflBWMatrix.stack_rows([p[3] for p in parts])
    assert stacked.shape == (200, 48) and stacked.vector == 32
    assert torch.equal(stacked.to_dense(), torch.cat([w * m for w, m, _, _ in parts]))
    assert torch.equal(stacked.mask(), torch.cat([m for _, m, _, _ in parts]))


def test_stack_rows_rejects_what_cannot_be_one_matrix():
    a = random_problem(40, 48, 32, 0.5, seed=1)[3]  # 40 rows: its last group is padded
    b = random_problem(64, 48, 32, 0.5, seed=2)[3]
    with pytest.raises(ValueError, match="not a multiple of V"):
        ShflBWMatrix.stack_rows([a, b])
    with pytest.raises(ValueError, match="differs from the first"):
        ShflBWMatrix.stack_rows([b, random_problem(64, 32, 32, 0.5, seed=3)[3]])
    with pytest.raises(ValueError, match="differs from the first"):
        ShflBWMatrix.stack_rows([b, random_problem(64, 48, 16, 0.5, seed=3)[3]])
    with pytest.raises(ValueError, match="at least one"):
        ShflBWMatrix.stack_rows([])
    with pytest.raises(TypeError, match="ShflBWMatrix"):
        ShflBWMatrix.stack_rows([b, torch.zeros(3)])
