"""Model check of tm_mma_cluster.cu's barrier protocol: random interleavings, no GPU.

    python prototype/cluster_protocol_check.py [--trials 300]

Why: a wrong parity or a missing arrive in the cluster kernel hangs the device call until its
timeout, and device time is scarce. This runs the kernel's loop as one process per CTA against a
model of mbarriers (arrival count, transaction bytes that may go negative, phase parity as
try_wait.parity reads it) and of multicast bulk copies (one asynchronous event per destination,
completing in random order and late). It checks, over random schedules and every (CL, NSTAGE,
chunks, STRADDLE, token tail):
- no deadlock: every CTA gets through every chunk and the closing cluster barrier;
- every read finds the chunk it expects, complete (the rows of every CTA of the cluster);
- no copy lands in a stage whose previous chunk a CTA has still to read.
The process mirrors the kernel line by line (comments name them); keep the two in step. Each of
five planted mistakes (no empty wait, either wrong parity, a straddling loop that waits for chunk c
only, empty arrivals on the own CTA only) fails it within a few schedules.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys


class Barrier:
    """An mbarrier: completes a phase when its pending arrivals reach 0 with its tx-count at 0."""

    def __init__(self, count: int):
        self.count, self.pending, self.tx, self.phase = count, count, 0, 0

    def _settle(self):
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count

    def arrive(self, expect_tx: int = 0):
        assert self.pending > 0, "arrive on a barrier with no pending arrival"
        self.tx += expect_tx
        self.pending -= 1
        self._settle()

    def complete_tx(self, nbytes: int):
        self.tx -= nbytes
        self._settle()

    def passed(self, parity: int) -> bool:  # mbarrier.try_wait.parity
        return self.phase % 2 != parity


def run(cl: int, nstage: int, nc: int, straddle: bool, rows: int, bt: int, rng: random.Random) -> None:
    full = [[Barrier(1) for _ in range(nstage)] for _ in range(cl)]
    empty = [[Barrier(cl) for _ in range(nstage)] for _ in range(cl)]
    # stage contents per CTA: (chunk, set of source ranks whose rows landed)
    stage = [[(None, set()) for _ in range(nstage)] for _ in range(cl)]
    done_reading = [-1] * cl  # last chunk each CTA has finished reading as chunk c (iteration c done)
    pending_copies = []  # (dest, stage, chunk, source rank, bytes)
    per_rank_rows = [max(0, min((r + 1) * (bt // cl), rows) - r * (bt // cl)) for r in range(cl)]

    def issue_chunk(r, c):  # issue_chunk(): expect the whole tile's bytes, then this rank's rows to all
        s = c % nstage
        full[r][s].arrive(expect_tx=rows)  # lane 0: mbar_expect_tx(full_bar, row_bytes * rows)
        if per_rank_rows[r]:
            for dest in range(cl):
                pending_copies.append((dest, s, c, r, per_rank_rows[r]))

    def cta(r):
        # prologue: warp 0 issues chunks 0 .. NSTAGE - 1
        for s in range(min(nstage, nc)):
            issue_chunk(r, s)
        for c in range(nc):
            s = c % nstage
            parity = (c // nstage) % 2
            waits = ([0] if c == 0 else []) + ([c + 1] if c + 1 < nc else []) if straddle else [c]
            for cc in waits:  # mbar_wait(full of chunk cc)
                while not full[r][cc % nstage].passed((cc // nstage) % 2):
                    yield
            for cc in [c] + ([c + 1] if straddle and c + 1 < nc else []):  # compute_steps reads these
                chunk, ranks = stage[r][cc % nstage]
                assert chunk == cc and len(ranks) == sum(1 for x in per_rank_rows if x), (
                    f"CTA {r} iteration {c} read stage {cc % nstage} holding {chunk} from {sorted(ranks)}, wanted {cc}")
            yield  # __syncthreads(): the CTA's warps are done with stage s
            done_reading[r] = c
            for cta_ in range(cl):  # tid 0: mbar_arrive_cluster(empty[s]) on every CTA
                empty[cta_][s].arrive()
            if c + nstage < nc:  # warp 0: wait until every CTA released stage s, then refill it
                while not empty[r][s].passed(parity):
                    yield
                issue_chunk(r, c + nstage)
        at_end[r] = True
        while not all(at_end):  # cluster_sync()
            yield

    at_end = [False] * cl
    procs = {r: cta(r) for r in range(cl)}
    steps = 0
    while procs or pending_copies:
        steps += 1
        assert steps < 100000, "no progress: deadlock"
        choices = [("p", r) for r in procs] + [("c", i) for i in range(len(pending_copies))]
        kind, i = rng.choice(choices)
        if kind == "p":
            try:
                next(procs[i])
            except StopIteration:
                del procs[i]
        else:
            dest, s, c, src, nbytes = pending_copies.pop(i)
            prev, ranks = stage[dest][s]
            if prev != c:
                # the previous occupant (chunk c - nstage) must be read out by dest already
                assert prev is None or done_reading[dest] >= prev, (
                    f"copy of chunk {c} into CTA {dest} stage {s} while chunk {prev} is unread")
                stage[dest][s] = (c, set())
            stage[dest][s][1].add(src)
            full[dest][s].complete_tx(nbytes)
    assert all(at_end), "a CTA did not finish"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=300)
    args = ap.parse_args()
    rng = random.Random(0)
    cases = 0
    for cl, nstage, nc, straddle, rows in itertools.product((1, 2, 4), (2, 3, 4), (1, 2, 3, 5, 8), (False, True),
                                                            (128, 70, 20)):
        for _ in range(args.trials // 30 + 1):
            run(cl, nstage, nc, straddle, rows, 128, rng)
            cases += 1
    print(f"cluster protocol: {cases} random schedules, no deadlock, every read complete, no early overwrite")
    return 0


if __name__ == "__main__":
    sys.exit(main())
