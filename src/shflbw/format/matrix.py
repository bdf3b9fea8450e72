"""The packed Shfl-BW matrix: one class, plain tensors inside, validated on every way in.

Layout (weight W of shape M x K, Linear: out x in; Conv2d: Cout x Cin*R*S):

- ``perm`` (int32, M): ``perm[p]`` is the original row that sits at permuted position ``p``.
  Position ``p`` belongs to row group ``p // V``. When M is not a multiple of V the last group
  is padded with zero rows at positions M .. G*V-1; they exist only inside ``values`` and are
  never written by any op.
- ``group_ptr`` (int32, G+1): group ``g`` owns kept vectors ``group_ptr[g] .. group_ptr[g+1]-1``.
  A group may own none (an empty group).
- ``col_idx`` (int32, nnz): the input column of each kept vector, strictly increasing in a group.
- ``values`` (nnz x V, fp32/fp16/bf16): kept vector ``i`` holds ``W[perm[g*V + r], col_idx[i]]``
  at ``values[i, r]``. Each group's panel is contiguous and vector-major, so a kernel reads a
  [BK, V] tile of one group with 16-byte rows and feeds it straight to the tensor cores.
"""

from __future__ import annotations

import math
from typing import Any

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPE = torch.int32


def _check_vector(vector: Any) -> int:
    if isinstance(vector, bool) or not isinstance(vector, int):
        raise TypeError(f"vector (V) must be an int, got {type(vector).__name__}")
    if vector <= 0 or vector % 16 != 0:
        raise ValueError(f"vector (V) must be a positive multiple of 16 (16, 32, 64, 128, ...), got {vector}")
    return vector


def group_ids(group_ptr: torch.Tensor) -> torch.Tensor:
    """The group of each packed column entry (int64, on group_ptr's device), from a CSR group_ptr."""
    ptr = group_ptr.long()
    return torch.repeat_interleave(torch.arange(ptr.numel() - 1, device=ptr.device), ptr[1:] - ptr[:-1])


def check_permutation(perm: torch.Tensor, m: int, name: str = "perm") -> None:
    """Raise ValueError unless ``perm`` is a 1-D integer bijection of range(m)."""
    if not isinstance(perm, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(perm).__name__}")
    if perm.dtype.is_floating_point or perm.dtype.is_complex or perm.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got {perm.dtype}")
    if perm.dim() != 1 or perm.numel() != m:
        raise ValueError(f"{name} must have shape ({m},), got {tuple(perm.shape)}")
    if m == 0:
        return
    p = perm.detach().to("cpu", torch.int64)
    lo, hi = int(p.min()), int(p.max())
    if lo < 0 or hi >= m:
        bad = int(p[(p < 0) | (p >= m)][0])
        raise ValueError(f"{name} is not a permutation of range({m}): it holds {bad}")
    counts = torch.bincount(p, minlength=m)
    if bool((counts != 1).any()):
        dup = int(torch.nonzero(counts > 1)[0])
        raise ValueError(f"{name} is not a bijection: row {dup} appears {int(counts[dup])} times")


class ShflBWMatrix:
    """A weight matrix pruned in Shfl-BW, packed for the kernels.

    Build one with :meth:`from_dense` from (weight, mask, perm); get the masked weight back with
    :meth:`to_dense`. The constructor takes the packed tensors as they are and validates them.
    """

    FORMAT_NAME = "shflbw.ShflBWMatrix"
    FORMAT_VERSION = 1

    def __init__(
        self,
        shape: tuple[int, int],
        vector: int,
        perm: torch.Tensor,
        group_ptr: torch.Tensor,
        col_idx: torch.Tensor,
        values: torch.Tensor,
        *,
        kernel: tuple[int, int, int] | None = None,
        validate: bool = True,
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1])) if len(shape) == 2 else tuple(shape)
        self.vector = vector
        self.perm = perm
        self.group_ptr = group_ptr
        self.col_idx = col_idx
        self.values = values
        # Conv2d weights: (Cin, R, S) with K = Cin*R*S, the order of weight.flatten(1) and F.unfold.
        self.kernel = None if kernel is None else tuple(int(v) for v in kernel)
        # Host copy of the group pointers: the reference path and launch heuristics read them
        # without a device sync on every call.
        self._group_ptr_host: list[int] | None = None
        if validate:
            self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_groups(self) -> int:
        return math.ceil(self.shape[0] / self.vector)

    @property
    def padded_rows(self) -> int:
        return self.num_groups * self.vector

    @property
    def nnz_vectors(self) -> int:
        return int(self.col_idx.numel())

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def density(self) -> float:
        """Fraction of the M x K weights kept (padding rows not counted)."""
        m, k = self.shape
        if m * k == 0:
            return 0.0
        kept = 0
        ptr = self.group_ptr_host()
        for g in range(self.num_groups):
            rows = min(self.vector, m - g * self.vector)
            kept += rows * (ptr[g + 1] - ptr[g])
        return kept / (m * k)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed tensors (values and all indices)."""
        return sum(t.numel() * t.element_size() for t in (self.perm, self.group_ptr, self.col_idx, self.values))

    def group_ptr_host(self) -> list[int]:
        if self._group_ptr_host is None:
            self._group_ptr_host = [int(v) for v in self.group_ptr.tolist()]
        return self._group_ptr_host

    def max_group_nnz(self) -> int:
        ptr = self.group_ptr_host()
        return max((ptr[g + 1] - ptr[g] for g in range(self.num_groups)), default=0)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "ShflBWMatrix":
        """Check every invariant of the layout; raise ValueError/TypeError naming the broken one."""
        if len(self.shape) != 2 or any(not isinstance(s, int) or s < 0 for s in self.shape):
            raise ValueError(f"shape must be two non-negative ints (M, K), got {self.shape}")
        m, k = self.shape
        _check_vector(self.vector)
        if self.kernel is not None and (len(self.kernel) != 3 or math.prod(self.kernel) != k or min(self.kernel) < 1):
            raise ValueError(f"kernel (Cin, R, S) = {self.kernel} does not multiply to K = {k}")
        tensors = {"perm": self.perm, "group_ptr": self.group_ptr, "col_idx": self.col_idx, "values": self.values}
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        for name in ("perm", "group_ptr", "col_idx"):
            if tensors[name].dtype != INDEX_DTYPE:
                raise TypeError(f"{name} must be int32, got {tensors[name].dtype}")
        if self.values.dtype not in FLOAT_DTYPES:
            raise TypeError(f"values must be float32, float16 or bfloat16, got {self.values.dtype}")
        devices = {t.device for t in tensors.values()}
        if len(devices) != 1:
            raise ValueError(f"all packed tensors must be on one device, got {sorted(map(str, devices))}")
        check_permutation(self.perm, m)

        g_count = self.num_groups
        if self.group_ptr.dim() != 1 or self.group_ptr.numel() != g_count + 1:
            raise ValueError(
                f"group_ptr must have shape ({g_count + 1},) for M={m}, V={self.vector}, got {tuple(self.group_ptr.shape)}"
            )
        nnz = self.col_idx.numel()
        if self.col_idx.dim() != 1:
            raise ValueError(f"col_idx must be 1-D, got shape {tuple(self.col_idx.shape)}")
        if self.values.dim() != 2 or self.values.shape != (nnz, self.vector):
            raise ValueError(f"values must have shape (nnz={nnz}, V={self.vector}), got {tuple(self.values.shape)}")

        ptr = self.group_ptr.detach().to("cpu", torch.int64)
        if int(ptr[0]) != 0:
            raise ValueError(f"group_ptr[0] must be 0, got {int(ptr[0])}")
        if int(ptr[-1]) != nnz:
            raise ValueError(f"group_ptr[-1] must equal the number of kept vectors {nnz}, got {int(ptr[-1])}")
        counts = ptr[1:] - ptr[:-1]
        if bool((counts < 0).any()):
            g = int(torch.nonzero(counts < 0)[0])
            raise ValueError(f"group_ptr must be non-decreasing: group {g} has {int(counts[g])} vectors")
        if bool((counts > k).any()):
            g = int(torch.nonzero(counts > k)[0])
            raise ValueError(f"group {g} keeps {int(counts[g])} columns, more than K={k}")

        cols = self.col_idx.detach().to("cpu", torch.int64)
        if nnz:
            if int(cols.min()) < 0 or int(cols.max()) >= k:
                i = int(torch.nonzero((cols < 0) | (cols >= k))[0])
                raise ValueError(f"col_idx[{i}] = {int(cols[i])} is out of range for K={k}")
            # strictly increasing inside each group: a step <= 0 is allowed only at a group start
            steps = cols[1:] - cols[:-1]
            starts = torch.zeros(nnz, dtype=torch.bool)
            starts[ptr[1:-1][ptr[1:-1] < nnz]] = True
            bad = (steps <= 0) & ~starts[1:]
            if bool(bad.any()):
                i = int(torch.nonzero(bad)[0]) + 1
                g = int(torch.searchsorted(ptr, torch.tensor(i), right=True)) - 1
                raise ValueError(
                    f"col_idx of group {g} is not strictly increasing at position {i} "
                    f"({int(cols[i - 1])} then {int(cols[i])})"
                )
        self._group_ptr_host = [int(v) for v in ptr.tolist()]
        return self

    # ------------------------------------------------------------------ packing
    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor,
        mask: torch.Tensor,
        perm: torch.Tensor | None = None,
        *,
        vector: int = 64,
    ) -> "ShflBWMatrix":
        """Pack exactly ``where(mask, weight, 0)``.

        ``mask`` (bool or 0/1, M x K, original row order) must be Shfl-BW under ``perm``: the
        rows ``perm[g*V:(g+1)*V]`` of every group share one set of kept columns. ``perm=None``
        means the identity (plain V x 1 vector-wise sparsity).
        """
        vector = _check_vector(vector)
        if not isinstance(weight, torch.Tensor) or not isinstance(mask, torch.Tensor):
            raise TypeError("weight and mask must be torch.Tensors")
        kernel = None
        if weight.dim() == 4:  # Conv2d (Cout, Cin, R, S): pruned as Cout x Cin*R*S
            kernel = tuple(weight.shape[1:])
            if mask.shape == weight.shape:
                mask = mask.flatten(1)
            weight = weight.flatten(1)
        if weight.dim() != 2:
            raise ValueError(f"weight must be 2-D (M x K) or a 4-D Conv2d weight, got shape {tuple(weight.shape)}")
        if weight.dtype not in FLOAT_DTYPES:
            raise TypeError(f"weight must be float32, float16 or bfloat16, got {weight.dtype}")
        if mask.shape != weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}")
        if mask.dtype != torch.bool:
            if bool(((mask != 0) & (mask != 1)).any()):
                raise ValueError("mask must be boolean or hold only 0 and 1")
            mask = mask != 0
        m, k = weight.shape
        device = weight.device
        if perm is None:
            perm = torch.arange(m, device=device)
        check_permutation(perm, m)
        perm64 = perm.to(device=device, dtype=torch.int64)

        g_count = math.ceil(m / vector)
        mp = g_count * vector
        wp = torch.zeros(mp, k, dtype=weight.dtype, device=device)
        mp_mask = torch.zeros(mp, k, dtype=torch.bool, device=device)
        mp_mask[:m] = mask.to(device)[perm64]
        wp[:m] = torch.where(mp_mask[:m], weight[perm64], torch.zeros((), dtype=weight.dtype, device=device))

        # Every real row of a group must carry the group's column set (taken from its first row).
        # Padding rows of the last group copy it so the check below ignores them.
        if mp > m:
            mp_mask[m:] = mp_mask[(g_count - 1) * vector]
        grouped = mp_mask.view(g_count, vector, k)
        lead = grouped[:, :1, :]
        diff = grouped != lead
        if bool(diff.any()):
            g, r, c = (int(v) for v in torch.nonzero(diff)[0])
            raise ValueError(
                f"mask is not Shfl-BW under perm with V={vector}: in group {g}, column {c} is "
                f"{'kept' if bool(grouped[g, r, c]) else 'pruned'} in row {int(perm64[g * vector + r])} but "
                f"{'kept' if bool(lead[g, 0, c]) else 'pruned'} in row {int(perm64[g * vector])}"
            )
        group_cols = lead[:, 0, :]  # [G, K]
        counts = group_cols.sum(dim=1)
        group_ptr = torch.zeros(g_count + 1, dtype=torch.int64, device=device)
        group_ptr[1:] = torch.cumsum(counts, 0)
        gid, col = torch.nonzero(group_cols, as_tuple=True)  # row-major: sorted by group, then column
        values = wp.view(g_count, vector, k).permute(0, 2, 1)[gid, col]  # [nnz, V]
        return cls(
            (m, k),
            vector,
            perm64.to(INDEX_DTYPE),
            group_ptr.to(INDEX_DTYPE),
            col.to(INDEX_DTYPE),
            values.contiguous(),
            kernel=kernel,
        )

    def to_dense(self) -> torch.Tensor:
        """The masked weight in the original row order, bit-exact: M x K, or (Cout, Cin, R, S) for Conv2d."""
        m, k = self.shape
        g_count, v = self.num_groups, self.vector
        device = self.device
        gid = group_ids(torch.tensor(self.group_ptr_host(), dtype=torch.int64, device=device))
        panels = torch.zeros(g_count, k, v, dtype=self.dtype, device=device)
        panels[gid, self.col_idx.long()] = self.values
        wp = panels.permute(0, 2, 1).reshape(g_count * v, k)
        out = torch.empty(m, k, dtype=self.dtype, device=device)
        out[self.perm.long()] = wp[:m]
        return out if self.kernel is None else out.view(m, *self.kernel)

    def mask(self) -> torch.Tensor:
        """The boolean M x K mask (original row order) this matrix was packed with."""
        m, k = self.shape
        g_count, v = self.num_groups, self.vector
        gid = group_ids(torch.tensor(self.group_ptr_host(), dtype=torch.int64, device=self.device))
        group_cols = torch.zeros(g_count, k, dtype=torch.bool, device=self.device)
        group_cols[gid, self.col_idx.long()] = True
        rows = group_cols.repeat_interleave(v, dim=0)[:m]
        out = torch.empty(m, k, dtype=torch.bool, device=self.device)
        out[self.perm.long()] = rows
        return out

    @classmethod
    def stack_rows(cls, matrices: "list[ShflBWMatrix]") -> "ShflBWMatrix":
        """The matrices one above the other ([sum M, K]), packed as one: a kernel runs them in one
        launch (a self-attention's Q, K and V projections). They must share K, V, dtype and device,
        be Linear weights, and every one but the last must have M a multiple of V (their groups
        stay whole)."""
        if not matrices:
            raise ValueError("stack_rows needs at least one matrix")
        first = matrices[0]
        for i, w in enumerate(matrices):
            if not isinstance(w, cls):
                raise TypeError(f"stack_rows takes ShflBWMatrix objects, got {type(w).__name__} at {i}")
            if w.kernel is not None:
                raise ValueError("stack_rows takes Linear weights, not Conv2d ones")
            if (w.shape[1], w.vector, w.dtype, w.device) != (first.shape[1], first.vector, first.dtype, first.device):
                raise ValueError(f"matrix {i} differs from the first in K, V, dtype or device: {w!r} against {first!r}")
            if i < len(matrices) - 1 and w.shape[0] % w.vector:
                raise ValueError(f"matrix {i} has {w.shape[0]} rows, not a multiple of V = {w.vector}: its last "
                                 "group is padded and cannot be followed by another matrix's rows")
        ptrs, perms, row0, nnz0 = [first.group_ptr[:1]], [], 0, 0
        for w in matrices:
            ptrs.append(w.group_ptr[1:] + nnz0)
            perms.append(w.perm + row0)
            row0 += w.shape[0]
            nnz0 += w.nnz_vectors
        return cls((row0, first.shape[1]), first.vector, torch.cat(perms), torch.cat(ptrs),
                   torch.cat([w.col_idx for w in matrices]), torch.cat([w.values for w in matrices]))

    # ------------------------------------------------------------------ conversions
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ShflBWMatrix":
        """Move to a device and/or cast the values (indices stay int32). As with tensors, a dtype may
        come first: ``w.to(torch.bfloat16)``."""
        if isinstance(device, torch.dtype):
            if dtype is not None:
                raise TypeError(f"to() got two dtypes ({device} and {dtype})")
            device, dtype = None, device
        if dtype is not None and dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        out = ShflBWMatrix(
            self.shape,
            self.vector,
            self.perm.to(device) if device is not None else self.perm,
            self.group_ptr.to(device) if device is not None else self.group_ptr,
            self.col_idx.to(device) if device is not None else self.col_idx,
            self.values.to(device=device, dtype=dtype),
            kernel=self.kernel,
            validate=False,
        )
        out._group_ptr_host = self._group_ptr_host
        return out

    def cuda(self) -> "ShflBWMatrix":
        return self.to("cuda")

    def cpu(self) -> "ShflBWMatrix":
        return self.to("cpu")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"perm": self.perm, "group_ptr": self.group_ptr, "col_idx": self.col_idx, "values": self.values}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str) -> None:
        """Write to a safetensors file (atomically: an existing file is replaced only on success)."""
        from shflbw.format.serialization import save_matrix

        save_matrix(self, path)

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu") -> "ShflBWMatrix":
        """Read a file written by :meth:`save`; raise ValueError if it is truncated, corrupted or of another version."""
        from shflbw.format.serialization import load_matrix

        return load_matrix(path, device=device)

    def __repr__(self) -> str:
        m, k = self.shape
        return (
            f"ShflBWMatrix(shape=({m}, {k}), {'' if self.kernel is None else f'kernel={self.kernel}, '}"
            f"V={self.vector}, groups={self.num_groups}, "
            f"sparsity={self.sparsity:.1%}, dtype={str(self.dtype).replace('torch.', '')}, "
            f"device={self.device}, nbytes={self.nbytes})"
        )
