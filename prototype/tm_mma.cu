// Experiment (session 18): a token-major Shfl-BW SpMM in CUDA, with no layout transposes.
//
//   out[T, M] = X[T, K] @ W^T,  W pruned in Shfl-BW with V = 64, bf16, fp32 accumulation.
//
// Why CUDA: the token-major input must be gathered along K, its contiguous axis, so each gathered
// element is 2 bytes. Gathering from global memory ran at 0.1-0.3x of cuBLAS, and Triton offers no
// indexed load from a staged shared-memory tile into the tensor-core operand (tl.gather measured
// 0.1-0.44x; CONTEXT.md). Here each CTA stages a dense X tile [BT tokens, KC columns] in shared memory
// with cp.async (16-byte copies, every X element read once per CTA) and each warp gathers its group's
// kept columns from it with 2-byte shared loads straight into mma.sync's A fragments
// (tm_mma_common.cuh). Built by NVRTC at run time; KC, NSTAGE, GPC (and STRADDLE, HALF) come in as
// -D options.

// Stage X[t0 : t0 + BT, c * KC : (c + 1) * KC] into one shared-memory buffer (zeros past T and K).
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
  // src_bytes = 0 fills the 16 bytes with zeros (token or column tails)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void load_chunk(const u16* __restrict__ X, u16* xs, int t0, int c, int T, int K, int tid) {
  const int pieces_per_row = KC / 8;
#pragma unroll
  for (int i = 0; i < BT * KC / 8 / NTHREADS; ++i) {
    const int p = tid + i * NTHREADS;
    const int row = p / pieces_per_row, pc = p % pieces_per_row;
    const int tok = t0 + row, col = c * KC + pc * 8;
    const bool ok = tok < T && col < K;
    const u16* src = ok ? X + (size_t)tok * K + col : X;
    cp_async16(smem_addr(xs + row * STRIDE + pc * 8), src, ok ? 16 : 0);
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS, MIN_CTAS)
    shflbw_tm_mma(const u16* __restrict__ X, const uint4* __restrict__ wfrag, const uint2* __restrict__ cfrag,
                  const int* __restrict__ step_ptr, const int* __restrict__ perm, const u16* __restrict__ bias,
                  u16* __restrict__ out, int T, int K, int M, int G, int NC, int has_bias) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  u16* xs = reinterpret_cast<u16*>(smem_raw);
  const int tid = threadIdx.x;
  const WarpJob job = warp_job(step_ptr, G, NC);
  float acc[4][8][4];
  zero_acc(acc);

#ifdef STRADDLE
  static_assert(NSTAGE >= 3, "straddling steps keep chunks c and c + 1 staged while c + 2 loads");
#define AHEAD 1  // chunk c + 1 must be in too
#else
#define AHEAD 0
#endif
  // Split-K over gridDim.z (SPLITK builds; 1 elsewhere): this CTA's chunks c_begin .. c_end - 1, and
  // with STRADDLE the chunk after them, which its last steps read.
  const int c_begin = blockIdx.z * NC / gridDim.z, c_end = (blockIdx.z + 1) * NC / gridDim.z;
  const int c_load_end = min(c_end + AHEAD, NC);
#pragma unroll
  for (int i = 0; i < NSTAGE - 1; ++i) {
    const int cc = c_begin + i;
    if (cc < c_load_end) load_chunk(X, xs + (cc % NSTAGE) * BT * STRIDE, job.t0, cc, T, K, tid);
    asm volatile("cp.async.commit_group;\n" ::);
  }
  for (int c = c_begin; c < c_end; ++c) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(NSTAGE - 2 - AHEAD));
    __syncthreads();  // chunk c (+ 1) is in; every warp is done with the buffer refilled below
    const int cn = c + NSTAGE - 1;
    if (cn < c_load_end) load_chunk(X, xs + (cn % NSTAGE) * BT * STRIDE, job.t0, cn, T, K, tid);
    asm volatile("cp.async.commit_group;\n" ::);
    if (job.active)
      compute_steps(acc, xs + (c % NSTAGE) * BT * STRIDE + job.slab * 64 * STRIDE,
                    xs + ((c + 1) % NSTAGE) * BT * STRIDE + job.slab * 64 * STRIDE, wfrag, cfrag, job.sp[c],
                    job.sp[c + 1], job.lane);
  }
  if (job.active) store_tile(acc, perm, bias, out, job.g, job.t0 + job.slab * 64, T, M, G, has_bias, job.lane);
}
