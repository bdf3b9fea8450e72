// Experiment (session 18): out[t, m] = src[t, inv[m]] for token-major rows, src in group order.
//
// Why: tm_mma.cu built with GROUP_OUT writes its output in group order with coalesced stores; the
// F.linear layout needs each row's columns put back through the permutation. Reading src[t, inv[m]]
// straight from global memory would fetch a 32-byte sector per 2-byte element (inv is random), so a
// CTA first copies ROWS whole rows of src into shared memory (16-byte loads), then writes each output
// row in order (consecutive threads, consecutive columns) gathering from shared memory.
// Built by NVRTC; HALF is not needed (it moves 2-byte elements).

// With -DFINISH it is the split-K kernel's finish: src holds float32 sums, and each element gets the
// bias of its row and is rounded to bf16 (fp16 with -DHALF) as it moves.

typedef unsigned short u16;
typedef unsigned int u32;

#ifdef FINISH
typedef float src_t;
#define ROWS 2  // float32 rows are twice as wide: 2 x 14336 x 4 bytes of shared memory
#else
typedef u16 src_t;
#define ROWS 4
#endif
#define NTHREADS 256

__device__ __forceinline__ u16 finish(src_t v, const u16* __restrict__ bias, int m, int has_bias) {
#ifdef FINISH
  float b = 0.f;
  u16 h;
#ifdef HALF
  if (has_bias) asm("cvt.f32.f16 %0, %1;\n" : "=f"(b) : "h"(bias[m]));
  asm("cvt.rn.f16.f32 %0, %1;\n" : "=h"(h) : "f"(v + b));
#else
  if (has_bias) b = __uint_as_float(((u32)bias[m]) << 16);
  asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(h) : "f"(v + b));
#endif
  return h;
#else
  return v;
#endif
}

extern "C" __global__ void __launch_bounds__(NTHREADS) shflbw_permute_cols(const src_t* __restrict__ src,
                                                                            const int* __restrict__ inv,
                                                                            u16* __restrict__ dst, int T, int P,
                                                                            int M, const u16* __restrict__ bias,
                                                                            int has_bias) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  src_t* rows = reinterpret_cast<src_t*>(smem_raw);  // [ROWS][P]
  const int t0 = blockIdx.x * ROWS;
  const int n = min(ROWS, T - t0);
  const int vec_per_row = P * (int)sizeof(src_t) / 16;  // P is a multiple of 64
  for (int i = threadIdx.x; i < n * vec_per_row; i += NTHREADS) {
    const int r = i / vec_per_row, v = i % vec_per_row;
    reinterpret_cast<uint4*>(rows + r * P)[v] = reinterpret_cast<const uint4*>(src + (size_t)(t0 + r) * P)[v];
  }
  __syncthreads();
  for (int m = threadIdx.x; m < M; m += NTHREADS) {
    const int p = inv[m];
    for (int r = 0; r < n; ++r) dst[(size_t)(t0 + r) * M + m] = finish(rows[r * P + p], bias, m, has_bias);
  }
}
