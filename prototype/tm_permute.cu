// Experiment (session 18): out[t, m] = src[t, inv[m]] for token-major rows, src in group order.
//
// Why: tm_mma.cu built with GROUP_OUT writes its output in group order with coalesced stores; the
// F.linear layout needs each row's columns put back through the permutation. Reading src[t, inv[m]]
// straight from global memory would fetch a 32-byte sector per 2-byte element (inv is random), so a
// CTA first copies ROWS whole rows of src into shared memory (16-byte loads), then writes each output
// row in order (consecutive threads, consecutive columns) gathering from shared memory.
// Built by NVRTC; HALF is not needed (it moves 2-byte elements).

typedef unsigned short u16;

#define ROWS 4
#define NTHREADS 256

extern "C" __global__ void __launch_bounds__(NTHREADS) shflbw_permute_cols(const u16* __restrict__ src,
                                                                            const int* __restrict__ inv,
                                                                            u16* __restrict__ dst, int T, int P,
                                                                            int M) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  u16* rows = reinterpret_cast<u16*>(smem_raw);  // [ROWS][P]
  const int t0 = blockIdx.x * ROWS;
  const int n = min(ROWS, T - t0);
  const int vec_per_row = P / 8;  // P is a multiple of 64
  for (int i = threadIdx.x; i < n * vec_per_row; i += NTHREADS) {
    const int r = i / vec_per_row, v = i % vec_per_row;
    reinterpret_cast<uint4*>(rows + r * P)[v] = reinterpret_cast<const uint4*>(src + (size_t)(t0 + r) * P)[v];
  }
  __syncthreads();
  for (int m = threadIdx.x; m < M; m += NTHREADS) {
    const int p = inv[m];
    for (int r = 0; r < n; ++r) dst[(size_t)(t0 + r) * M + m] = rows[r * P + p];
  }
}
