// Experiment (session 18): a token-major Shfl-BW SpMM in CUDA, with no layout transposes.
//
//   out[T, M] = X[T, K] @ W^T,  W pruned in Shfl-BW with V = 64, bf16, fp32 accumulation.
//
// Why CUDA: the token-major input must be gathered along K, its contiguous axis, so each gathered
// element is 2 bytes. Gathering from global memory ran at 0.1-0.3x of cuBLAS, and Triton offers no
// indexed load from a staged shared-memory tile into the tensor-core operand (tl.gather measured
// 0.1-0.44x; CONTEXT.md). Here each CTA stages a dense X tile [BT tokens, KC columns] in shared memory
// with cp.async (16-byte copies, every X element read once per CTA) and each warp gathers its group's
// kept columns from it with 2-byte shared loads straight into mma.sync's A fragments. The weights
// come pre-arranged in fragment order (tm_mma.py), so each lane reads its B fragments with four
// 16-byte loads per k-step.
//
// Tiling: a CTA of 8 warps covers BT = 128 tokens x GPC = 4 groups (256 permuted output rows);
// warp w takes tokens (w & 1) * 64 .. +64 of the tile and group w >> 1, so its accumulator is a
// 64 x 64 fp32 tile (128 registers a lane). Each group's kept columns inside a chunk form k-steps of
// 16 (the last one padded with zero weights), precomputed in step_ptr[g * NC + c].
//
// Built by NVRTC at run time (torch.cuda._compile_kernel); KC and NSTAGE come in as -D options.

#ifndef KC
#define KC 256
#endif
#ifndef NSTAGE
#define NSTAGE 2
#endif
#define BT 128
#define GPC 4
#define VEC 64
#define STRIDE (KC + 8)  // row stride in elements: (KC + 8) / 2 words = 4 mod 32, so 8 tokens hit 8 bank quads

typedef unsigned short u16;
typedef unsigned int u32;

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
  // src_bytes = 0 fills the 16 bytes with zeros (token or column tails)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }

__device__ __forceinline__ void cp_wait_stages() { asm volatile("cp.async.wait_group %0;\n" ::"n"(NSTAGE - 2)); }

__device__ __forceinline__ void mma_bf16(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u16 f32_to_bf16(float f) {
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(h) : "f"(f));
  return h;
}

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

// Stage X[t0 : t0 + BT, c * KC : (c + 1) * KC] into one shared-memory buffer (zeros past T and K).
__device__ __forceinline__ void load_chunk(const u16* __restrict__ X, u16* xs, int t0, int c, int T, int K, int tid) {
  const int pieces_per_row = KC / 8;
#pragma unroll
  for (int i = 0; i < BT * KC / 8 / 256; ++i) {
    const int p = tid + i * 256;
    const int row = p / pieces_per_row, pc = p % pieces_per_row;
    const int tok = t0 + row, col = c * KC + pc * 8;
    const bool ok = tok < T && col < K;
    const u16* src = ok ? X + (size_t)tok * K + col : X;
    cp_async16(smem_addr(xs + row * STRIDE + pc * 8), src, ok ? 16 : 0);
  }
}

extern "C" __global__ void __launch_bounds__(256, 1)
    shflbw_tm_mma(const u16* __restrict__ X, const uint4* __restrict__ wfrag, const uint2* __restrict__ cfrag,
                  const int* __restrict__ step_ptr, const int* __restrict__ perm, const u16* __restrict__ bias,
                  u16* __restrict__ out, int T, int K, int M, int G, int NC, int has_bias) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  u16* xs = reinterpret_cast<u16*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int slab = warp & 1;
  const int g = blockIdx.x * GPC + (warp >> 1);
  const int t0 = blockIdx.y * BT;
  const int q = lane & 3, r8 = lane >> 2;
  const bool active = g < G;
  const int* sp = step_ptr + (active ? g : 0) * NC;

  float acc[4][8][4];
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < NSTAGE - 1; ++s) {
    if (s < NC) load_chunk(X, xs + s * BT * STRIDE, t0, s, T, K, tid);
    cp_commit();
  }

  for (int c = 0; c < NC; ++c) {
    cp_wait_stages();
    __syncthreads();  // chunk c is in; every warp is done with the buffer refilled below
    const int cn = c + NSTAGE - 1;
    if (cn < NC) load_chunk(X, xs + (cn % NSTAGE) * BT * STRIDE, t0, cn, T, K, tid);
    cp_commit();

    const u16* xw = xs + (c % NSTAGE) * BT * STRIDE + slab * 64 * STRIDE;
    const int s_begin = active ? sp[c] : 0, s_end = active ? sp[c + 1] : 0;
    uint4 nb0, nb1, nb2, nb3;
    uint2 ncc;
    if (s_begin < s_end) {
      const uint4* wp = wfrag + ((size_t)s_begin * 32 + lane) * 4;
      nb0 = wp[0]; nb1 = wp[1]; nb2 = wp[2]; nb3 = wp[3];
      ncc = cfrag[s_begin * 4 + q];
    }
    for (int st = s_begin; st < s_end; ++st) {
      const u32 b[16] = {nb0.x, nb0.y, nb0.z, nb0.w, nb1.x, nb1.y, nb1.z, nb1.w,
                         nb2.x, nb2.y, nb2.z, nb2.w, nb3.x, nb3.y, nb3.z, nb3.w};
      const uint2 cc = ncc;
      if (st + 1 < s_end) {  // the next k-step's fragments, in flight while this one multiplies
        const uint4* wp = wfrag + ((size_t)(st + 1) * 32 + lane) * 4;
        nb0 = wp[0]; nb1 = wp[1]; nb2 = wp[2]; nb3 = wp[3];
        ncc = cfrag[(st + 1) * 4 + q];
      }
      const int c0 = cc.x & 0xffff, c1 = cc.x >> 16, c2 = cc.y & 0xffff, c3 = cc.y >> 16;
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const u16* row0 = xw + (mt * 16 + r8) * STRIDE;
        const u16* row1 = row0 + 8 * STRIDE;
        const u32 a0 = (u32)row0[c0] | ((u32)row0[c1] << 16);
        const u32 a1 = (u32)row1[c0] | ((u32)row1[c1] << 16);
        const u32 a2 = (u32)row0[c2] | ((u32)row0[c3] << 16);
        const u32 a3 = (u32)row1[c2] | ((u32)row1[c3] << 16);
#pragma unroll
        for (int j = 0; j < 8; ++j) mma_bf16(acc[mt][j], a0, a1, a2, a3, b[2 * j], b[2 * j + 1]);
      }
    }
  }
  if (!active) return;

  // Epilogue: accumulator (token, permuted row 8j + 2q + e) -> out[token, perm[row]] (+ bias).
  int orow[8][2];
  float bv[8][2];
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int p = g * VEC + 8 * j + 2 * q + e;
      orow[j][e] = p < M ? perm[p] : -1;
      bv[j][e] = (has_bias && p < M) ? bf16_to_f32(bias[orow[j][e]]) : 0.f;
    }
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int tok = t0 + slab * 64 + mt * 16 + r8 + 8 * h;
      if (tok >= T) continue;
      u16* orow_ptr = out + (size_t)tok * M;
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          if (orow[j][e] >= 0) orow_ptr[orow[j][e]] = f32_to_bf16(acc[mt][j][2 * h + e] + bv[j][e]);
    }
}
