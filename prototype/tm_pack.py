"""Packing for the token-major CUDA prototypes (tm_mma.cu, tm_mma_cluster.cu), and its CPU checks.

prepare() turns a ShflBWMatrix into the kernels' operands (k-steps of 16 kept columns per group and
chunk, weights in mma.m16n8k16 B-fragment order, column offsets in A-fragment order); emulate() and
simulate_lanes() compute what the kernels compute from those operands, on any device.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.format.matrix import group_ids  # noqa: E402

BT, VEC = 128, 64  # tokens per CTA, rows per group (the kernels' BT and VEC)


def fragment_index():
    """(k, n) of each B-fragment element a lane holds, [32 lanes, 8 n-tiles, 4]: mma.m16n8k16's
    B operand gives lane (r8 * 4 + q) the elements (k = 2q, 2q+1, 2q+8, 2q+9; n = 8j + r8)."""
    lane = torch.arange(32)
    q, r8 = lane % 4, lane // 4
    kq = torch.stack([2 * q, 2 * q + 1, 2 * q + 8, 2 * q + 9], -1)  # [32, 4]
    kk = kq[:, None, :].expand(32, 8, 4)
    nn = (8 * torch.arange(8)[None, :, None] + r8[:, None, None]).expand(32, 8, 4)
    slots = torch.stack([torch.tensor([2 * i, 2 * i + 1, 2 * i + 8, 2 * i + 9]) for i in range(4)])  # [q, 4]
    return kk, nn, slots


# The four column slots each warp-wide 2-byte load reads: slot 2q, 2q+1, 2q+8 or 2q+9 for q = 0..3,
# i.e. the columns of fragment_index()'s per-lane slot table.
QUAD_SLOTS = fragment_index()[2].t().contiguous()


def straddle_steps(col: torch.Tensor, group_ptr: torch.Tensor, kc: int):
    """k-steps that may run over into the next chunk: each takes up to 16 of its group's next kept
    columns that lie in the chunk of its first one or the chunk after, so a step is padded only
    where its group's columns thin out (fewer than 16 in two chunks) or end. Returns each entry's
    (step, slot) and each step's (group, first chunk). Host loop over steps (packing is one-time)."""
    cols = col.cpu().numpy()
    ptr = group_ptr.cpu().numpy()
    step_of = np.empty(cols.size, dtype=np.int64)
    slot_of = np.empty(cols.size, dtype=np.int64)
    groups, bases = [], []
    for g in range(ptr.size - 1):
        a, b = int(ptr[g]), int(ptr[g + 1])
        gc = cols[a:b]
        i = 0
        while i < b - a:
            base = int(gc[i]) // kc
            j = min(i + 16, int(np.searchsorted(gc, (base + 2) * kc)))
            step_of[a + i:a + j] = len(groups)
            slot_of[a + i:a + j] = np.arange(j - i)
            groups.append(g)
            bases.append(base)
            i = j
    as_long = lambda v: torch.as_tensor(np.asarray(v, dtype=np.int64), device=col.device)  # noqa: E731
    return as_long(step_of), as_long(slot_of), as_long(groups), as_long(bases)


def quad_positions(cell: torch.Tensor, residue: torch.Tensor, n_cells) -> torch.Tensor:
    """Each entry's position inside its cell (entries of a cell contiguous, in order) after dealing
    the cell's columns round-robin by residue: positions 4i .. 4i + 3 take residues 0, 1, 2, 3 while
    each lasts, so consecutive quads of positions hold distinct residues as far as the counts allow."""
    nnz, dev = cell.numel(), cell.device
    n_cells = int(n_cells)
    key2 = cell * 4 + residue
    by_residue = torch.sort(key2, stable=True).indices
    start2 = torch.zeros(n_cells * 4 + 1, dtype=torch.long, device=dev)
    start2[1:] = torch.bincount(key2, minlength=n_cells * 4).cumsum(0)
    rank2 = torch.empty(nnz, dtype=torch.long, device=dev)
    rank2[by_residue] = torch.arange(nnz, device=dev) - start2[key2[by_residue]]
    new_pos = torch.sort(cell * 4 * (nnz + 1) + rank2 * 4 + residue, stable=True).indices
    cell_start = torch.zeros(n_cells + 1, dtype=torch.long, device=dev)
    cell_start[1:] = torch.bincount(cell, minlength=n_cells).cumsum(0)
    pos = torch.empty(nnz, dtype=torch.long, device=dev)
    pos[new_pos] = torch.arange(nnz, device=dev) - cell_start[cell[new_pos]]
    return pos


def prepare(w: ShflBWMatrix, kc: int, order: str = "sorted", straddle: bool = False) -> dict:
    """The kernel's operands: k-steps of 16 kept columns per (group, chunk of kc columns).

    ``straddle``: steps may take columns of the next chunk too (straddle_steps; kernels built with
    -DSTRADDLE keep two chunks staged), instead of padding each (group, chunk)'s last step:
    at 75 %, KC = 256 the padding adds 11 % to the MMAs and the weight bytes, at 87.5 % 23 %.

    ``order="quads"`` reorders each (group, chunk)'s columns so that the four read by one load fall
    in different shared-memory bank quads: with a row stride of 4 words mod 32, the 8 token rows of a
    load cover the banks of one residue of (column // 2) mod 4, so four columns with distinct
    residues are read in one wavefront instead of up to four.
    """
    if w.vector != VEC:
        raise ValueError(f"tm_mma is written for V = {VEC}, got {w.vector}")
    if order not in ("sorted", "quads"):
        raise ValueError(f"order must be 'sorted' or 'quads', got {order!r}")
    m, k = w.shape
    dev = w.values.device
    n_groups, n_chunks = w.num_groups, math.ceil(k / kc)
    col = w.col_idx.long()
    nnz = col.numel()
    step_ptr = torch.zeros(n_groups * n_chunks + 1, dtype=torch.long, device=dev)
    if straddle:
        step, slot, step_group, step_base = straddle_steps(col, w.group_ptr, kc)
        step_ptr[1:] = torch.bincount(step_group * n_chunks + step_base, minlength=n_groups * n_chunks).cumsum(0)
        chunk = step_base[step]  # offsets count from the step's first chunk: 0 .. 2 * kc - 1
        if order == "quads":  # within each step only (the buffers' bank maps agree: stage size = 0 mod 32 words)
            slot = QUAD_SLOTS.to(dev).flatten()[quad_positions(step, ((col - chunk * kc) // 2) % 4, step_group.numel())]
    else:
        chunk = col // kc
        key = group_ids(w.group_ptr) * n_chunks + chunk  # the (group, chunk) cell of each kept column
        count = torch.bincount(key, minlength=n_groups * n_chunks)
        step_ptr[1:] = ((count + 15) // 16).cumsum(0)
        if order == "quads":
            rank = quad_positions(key, ((col - chunk * kc) // 2) % 4, n_groups * n_chunks)
        else:
            cell_start = torch.zeros_like(step_ptr)
            cell_start[1:] = count.cumsum(0)
            rank = torch.arange(nnz, device=dev) - cell_start[key]
        step = step_ptr[key] + rank // 16
        slot = QUAD_SLOTS.to(dev).flatten()[rank % 16] if order == "quads" else rank % 16
    n_steps = int(step_ptr[-1])
    cols16 = torch.zeros(n_steps, 16, dtype=torch.long, device=dev)
    cols16[step, slot] = col - chunk * kc
    filled = torch.zeros(n_steps, 16, dtype=torch.bool, device=dev)
    filled[step, slot] = True
    first = cols16.gather(1, filled.to(torch.int8).argmax(1, keepdim=True))
    cols16 = torch.where(filled, cols16, first)  # padding reads a kept column, times 0
    w16 = torch.zeros(n_steps, 16, VEC, dtype=w.values.dtype, device=dev)
    w16[step, slot] = w.values
    kk, nn, slots = fragment_index()
    wfrag = w16[:, kk.to(dev), nn.to(dev)].contiguous()  # [S, 32, 8, 4]
    cfrag = cols16[:, slots.to(dev)].to(torch.int16).contiguous()  # [S, 4, 4]
    return {"wfrag": wfrag, "cfrag": cfrag, "step_ptr": step_ptr.to(torch.int32), "perm": w.perm.to(torch.int32),
            "m": m, "k": k, "groups": n_groups, "chunks": n_chunks, "kc": kc, "pad": n_steps * 16 / max(nnz, 1),
            "straddle": straddle}


def emulate(p: dict, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """What the kernel computes, step by step from the packed fragments (float32, any device)."""
    kk, nn, slots = fragment_index()
    t = x.shape[0]
    out_p = torch.zeros(t, p["groups"] * VEC, dtype=torch.float32)
    sp = p["step_ptr"].long()
    for g in range(p["groups"]):
        for c in range(p["chunks"]):
            xc = torch.zeros(t, 2 * p["kc"])  # this chunk and the next (straddling steps read both)
            part = x[:, c * p["kc"]:(c + 2) * p["kc"]].float()
            xc[:, :part.shape[1]] = part
            for st in range(int(sp[g * p["chunks"] + c]), int(sp[g * p["chunks"] + c + 1])):
                b = torch.zeros(16, VEC)
                b[kk, nn] = p["wfrag"][st].float()
                cols = torch.zeros(16, dtype=torch.long)
                cols[slots] = p["cfrag"][st].long()
                out_p[:, g * VEC:(g + 1) * VEC] += xc[:, cols] @ b
    out = torch.empty(t, p["m"])
    out[:, p["perm"].long()] = out_p[:, :p["m"]]
    return out + (bias.float() if bias is not None else 0)


def wavefronts(p: dict) -> float:
    """Mean shared-memory wavefronts of one warp-wide gather load (the bank model of QUAD_SLOTS):
    the most distinct 4-byte words among its four columns that share a residue (word mod 4)."""
    _, _, slots = fragment_index()
    cols = torch.zeros(p["cfrag"].shape[0], 16, dtype=torch.long)
    cols[:, slots] = p["cfrag"].long().cpu()
    words = (cols[:, QUAD_SLOTS] // 2).reshape(-1, 4).tolist()  # one row per load
    if not words:
        return 0.0
    return sum(max(len({w for w in load if w % 4 == r}) for r in range(4)) for load in words) / len(words)


def simulate_lanes(p: dict, x: torch.Tensor, bias: torch.Tensor | None, group_out: bool = False) -> torch.Tensor:
    """The CUDA code lane by lane (compute_steps, store_tile): each lane's A registers gathered from
    the staged tile and B registers read from wfrag as the kernel does, then mma.m16n8k16 applied by
    the PTX ISA's fragment layout (A: element i of lane (g, t) at row g + 8 * (i // 2 % 2), column
    2t + i % 2 + 8 * (i // 4); B: element i at row 2t + i % 2 + 8 * (i // 2), column g; C: element i
    at row g + 8 * (i // 2), column 2t + i % 2). Slow; for small shapes."""
    t_total, kc, stride = x.shape[0], p["kc"], p["kc"] + 8
    sp = p["step_ptr"].long().tolist()
    wfrag = p["wfrag"].view(torch.int16).reshape(-1, 32, 16, 2)  # [S, lane, register, half]
    cfrag = p["cfrag"].long() & 0xFFFF
    out = torch.full((t_total, p["groups"] * VEC if group_out else p["m"]), float("nan"))
    for t0 in range(0, t_total, BT):
        for g in range(p["groups"]):
            for slab in range(2):
                acc = torch.zeros(4, 8, 32, 4)  # [mt, j, lane, c-element]
                for c in range(p["chunks"]):
                    tiles = []  # the staged chunks c and c + 1 (zeros past T and K), as the kernel's buffers
                    for cc in (c, c + 1):
                        tile = torch.zeros(BT, stride)
                        part = x[t0:t0 + BT, cc * kc:(cc + 1) * kc].float()
                        tile[:part.shape[0], :part.shape[1]] = part
                        tiles.append(tile[slab * 64:])

                    def xv(row, off):  # the kernel's address: off < KC in chunk c's buffer, else chunk c + 1's
                        return tiles[0][row, off] if off < kc else tiles[1][row, off - kc]

                    for st in range(sp[g * p["chunks"] + c], sp[g * p["chunks"] + c + 1]):
                        b_bits = wfrag[st]  # the bf16 bits each lane loads
                        a_mat = torch.zeros(4, 16, 16)
                        b_mat = torch.zeros(8, 16, 8)
                        for lane in range(32):
                            q, r8 = lane % 4, lane // 4
                            c0, c1, c2, c3 = cfrag[st, q].tolist()  # cc.x low/high, cc.y low/high
                            for mt in range(4):
                                row0, row1 = mt * 16 + r8, mt * 16 + r8 + 8
                                regs = [(xv(row0, c0), xv(row0, c1)), (xv(row1, c0), xv(row1, c1)),
                                        (xv(row0, c2), xv(row0, c3)), (xv(row1, c2), xv(row1, c3))]
                                for i in range(8):
                                    a_mat[mt, r8 + 8 * (i // 2 % 2), 2 * q + i % 2 + 8 * (i // 4)] = regs[i // 2][i % 2]
                            halves = b_bits[lane].to(torch.int32) & 0xFFFF  # [16 registers, 2]
                            vals = (halves << 16).view(torch.float32)  # bf16 bits -> float32
                            for j in range(8):
                                for i in range(4):
                                    reg = 2 * j + i // 2
                                    b_mat[j, 2 * q + i % 2 + 8 * (i // 2), r8] = vals[reg, i % 2]
                        for mt in range(4):
                            for j in range(8):
                                cmat = a_mat[mt] @ b_mat[j]  # [16, 8]
                                for lane in range(32):
                                    q, r8 = lane % 4, lane // 4
                                    for i in range(4):
                                        acc[mt, j, lane, i] += cmat[r8 + 8 * (i // 2), 2 * q + i % 2]
                for lane in range(32):  # store_tile
                    q, r8 = lane % 4, lane // 4
                    for mt in range(4):
                        for h in range(2):
                            tok = t0 + slab * 64 + mt * 16 + r8 + 8 * h
                            if tok >= t_total:
                                continue
                            for j in range(8):
                                for e in range(2):
                                    pos = g * VEC + 8 * j + 2 * q + e
                                    orow = int(p["perm"][pos]) if pos < p["m"] else -1
                                    bv = float(bias[orow]) if bias is not None and orow >= 0 else 0.0
                                    value = float(acc[mt, j, lane, 2 * h + e]) + bv
                                    if group_out:  # GROUP_OUT: every position, padding rows included
                                        out[tok, g * VEC + 8 * j + 2 * q + e] = value
                                    elif orow >= 0:
                                        out[tok, orow] = value
    return out
