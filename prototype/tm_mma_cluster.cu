// Experiment (session 18): tm_mma.cu with the X tile shared by a cluster of CL CTAs (sm_90a).
//
// Why: per CTA tm_mma.cu reads its X tile (BT tokens x all K) once per group set, so at 75 % the X
// side is two thirds of its L2 traffic (4096^2, T = 4096: 512 of 768 MB; the weights 256 MB), and
// the Triton kernels already run at the L2's rate (7.5-8.3 TB/s, H100). The CL CTAs of a cluster
// take the same token tile and different group sets: each copies BT / CL rows of every chunk with
// bulk copies multicast to all of them, so X is read from L2 once per cluster (CL = 2: 256 + 256 MB).
//
// Sync: full[s] (one local arrive with the chunk's bytes; the copies of every CTA complete_tx on it)
// and empty[s] (one arrive from each CTA of the cluster once all its warps are done with stage s;
// a CTA's producer waits on its own before multicasting the next chunk into everyone's stage s).
// Rows past T and columns past K are not copied: their stale contents only reach outputs that are
// never stored (tokens past T) or columns no k-step reads (past K). With CL = 1 it is the same
// kernel with plain bulk copies. With STRADDLE (steps reading chunks c and c + 1) iteration c waits for
// chunk c + 1 and still releases chunk c. Built by NVRTC for sm_90a; KC, NSTAGE, GPC, CL (and STRADDLE,
// HALF) come in as -D options.

#ifndef CL
#define CL 2
#endif

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}

__device__ __forceinline__ void mbar_expect_tx(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

__device__ __forceinline__ void mbar_arrive_cluster(u32 bar, u32 cta) {
  u32 remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(bar), "r"(cta));
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
}

__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

__device__ __forceinline__ u32 cluster_rank() {
  u32 r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}

__device__ __forceinline__ void bulk_copy(u32 dst, const void* src, u32 bytes, u32 bar) {
#if CL > 1
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], %4;\n" ::"r"(
          dst),
      "l"(src), "r"(bytes), "r"(bar), "h"((unsigned short)((1 << CL) - 1))
      : "memory");
#else
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
#endif
}

// Warp 0 of each CTA: this CTA's BT / CL rows of chunk c into stage s of every CTA in the cluster;
// lane 0 first arms the local full barrier with the whole tile's bytes (all CTAs' rows).
__device__ __forceinline__ void issue_chunk(const u16* __restrict__ X, u16* xs, u32 full_bar, int t0, int c, int T,
                                            int K, u32 rank, int lane) {
  const int cols = min(KC, K - c * KC);
  const u32 row_bytes = (u32)cols * 2;
  const int rows = max(0, min(BT, T - t0));
  if (lane == 0) mbar_expect_tx(full_bar, row_bytes * rows);
  for (int r = (int)rank * (BT / CL) + lane; r < ((int)rank + 1) * (BT / CL); r += 32)
    if (r < rows) bulk_copy(smem_addr(xs + r * STRIDE), X + (size_t)(t0 + r) * K + (size_t)c * KC, row_bytes, full_bar);
}

extern "C" __global__ void __cluster_dims__(CL, 1, 1) __launch_bounds__(NTHREADS, MIN_CTAS)
    shflbw_tm_cluster(const u16* __restrict__ X, const uint4* __restrict__ wfrag, const uint2* __restrict__ cfrag,
                      const int* __restrict__ step_ptr, const int* __restrict__ perm, const u16* __restrict__ bias,
                      u16* __restrict__ out, int T, int K, int M, int G, int NC, int has_bias) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  u16* xs = reinterpret_cast<u16*>(smem_raw);
  const u32 bars = smem_addr(smem_raw + NSTAGE * BT * STRIDE * 2);  // full[0..NSTAGE), then empty[0..NSTAGE)
  const int tid = threadIdx.x;
  const WarpJob job = warp_job(step_ptr, G, NC);
  const u32 rank = cluster_rank();

  if (tid == 0) {
    for (int s = 0; s < NSTAGE; ++s) {
      mbar_init(bars + 8 * s, 1);
      mbar_init(bars + 8 * (NSTAGE + s), CL);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  cluster_sync();  // every CTA's barriers exist before any copy or remote arrive targets them

  float acc[4][8][4];
  zero_acc(acc);
  if (job.warp == 0)
    for (int s = 0; s < NSTAGE && s < NC; ++s)
      issue_chunk(X, xs + s * BT * STRIDE, bars + 8 * s, job.t0, s, T, K, rank, job.lane);

  for (int c = 0; c < NC; ++c) {
    const int s = c % NSTAGE;
    const u32 parity = (c / NSTAGE) & 1;
#ifdef STRADDLE  // steps of chunk c read chunk c + 1 too
    if (c == 0) mbar_wait(bars, 0);
    if (c + 1 < NC) mbar_wait(bars + 8 * ((c + 1) % NSTAGE), ((c + 1) / NSTAGE) & 1);
#else
    mbar_wait(bars + 8 * s, parity);
#endif
    if (job.active)
      compute_steps(acc, xs + s * BT * STRIDE + job.slab * 64 * STRIDE,
                    xs + ((c + 1) % NSTAGE) * BT * STRIDE + job.slab * 64 * STRIDE, wfrag, cfrag, job.sp[c],
                    job.sp[c + 1], job.lane);
    __syncthreads();  // every warp of this CTA is done with stage s
    if (tid == 0)
      for (u32 cta = 0; cta < CL; ++cta) mbar_arrive_cluster(bars + 8 * (NSTAGE + s), cta);
    if (job.warp == 0 && c + NSTAGE < NC) {
      mbar_wait(bars + 8 * (NSTAGE + s), parity);  // every CTA of the cluster is done with stage s
      issue_chunk(X, xs + s * BT * STRIDE, bars + 8 * s, job.t0, c + NSTAGE, T, K, rank, job.lane);
    }
  }
  if (job.active) store_tile(acc, perm, bias, out, job.g, job.t0 + job.slab * 64, T, M, G, has_bias, job.lane);
  cluster_sync();  // no CTA leaves while a peer may still arrive on its barriers
}
