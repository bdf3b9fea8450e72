"""Timing and correctness-gate helpers shared by the benchmark scripts (GPU only)."""

from __future__ import annotations

import time

import torch
import triton


def median_us(fn, graph: bool = False, rep: int = 100) -> float:
    """Median time of fn() in microseconds (do_bench, L2 flushed between runs).

    ``graph=True`` captures fn in a CUDA graph and times its replays, as decode servers run it.
    ``rep`` (ms of repeats): raise it for calls of tens of ms, or the median is of a handful of runs.
    """
    if graph:
        fn()  # compile / warm up outside capture
        torch.cuda.synchronize()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return triton.testing.do_bench(g.replay, warmup=25, rep=rep, return_mode="median") * 1e3
    return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median") * 1e3


def chain_us(fns, rep: int = 100) -> float:
    """Time per call of a CUDA graph that replays ``fns`` one after another, in microseconds.

    A decode server replays one graph for a whole model step, so each layer pays its kernel time and
    the gap between kernels, not the fixed cost of launching a graph around one kernel. That cost is
    not even the same on both sides: on the H100 of session 13, dense 11008 x 4096 at T = 1 took
    46.9 us as a one-kernel graph, 36.4 us per layer in a chain of 8 and 37.3 us under Nsight
    Compute; the sparse kernel 18.8, 14.1 and 13.3 us. Give each fn its own weights (copies) so
    that no call finds the previous one's weights in L2.
    """
    def run_all():
        for fn in fns:
            fn()

    return median_us(run_all, graph=True, rep=rep) / len(fns)


def host_us(fn, n: int = 300) -> float:
    """Host time per call in microseconds: n calls back to back, one sync at the end (for calls
    whose GPU time is smaller than their launch cost, this is what an eager caller waits)."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    if not bool(torch.isfinite(out).all()):
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


GATE = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 1e-3}


def gated(name: str, fn, ref: torch.Tensor, dtype: torch.dtype, graph: bool = False, rep: int = 100) -> dict:
    """Run fn once on a NaN-poisoned result path, check it, and time it only if it is right."""
    out = fn()
    err = rel_error(out, ref)
    if not err < GATE[dtype]:
        return {"variant": name, "error": err, "us": None, "status": "WRONG"}
    return {"variant": name, "error": err, "us": median_us(fn, graph=graph, rep=rep), "status": "ok"}


def gated_chain(name: str, fns, ref: torch.Tensor, dtype: torch.dtype, rep: int = 100) -> dict:
    """As ``gated`` for a chain of calls (``chain_us``): every call is checked before the chain is timed."""
    err = max(rel_error(fn(), ref) for fn in fns)
    if not err < GATE[dtype]:
        return {"variant": name, "error": err, "us": None, "status": "WRONG"}
    return {"variant": name, "error": err, "us": chain_us(fns, rep=rep), "status": "ok"}


def format_row(case: str, r: dict) -> str:
    """One printed line per gated result: case, variant, median time, speedup, status."""
    us = f"{r['us']:9.1f}" if r.get("us") else "        -"
    sp = f"{r['speedup']:5.2f}x" if r.get("speedup") else "     -"
    return f"{case:42s} {r['variant']:24s} {us} us {sp} {r['status']}"
