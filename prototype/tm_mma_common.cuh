// Shared by the token-major CUDA prototypes (tm_mma.cu, tm_mma_cluster.cu); tm_mma.py puts this text
// in front of each kernel's source before NVRTC compiles it.
//
// Tiling: a CTA of 2 * GPC warps covers BT = 128 tokens x GPC groups (GPC = 4: 256 permuted output
// rows; GPC = 2, four warps, two CTAs a multiprocessor, for token counts too small to fill the GPU);
// warp w takes tokens (w & 1) * 64 .. +64 of the tile and group w >> 1, so its accumulator is a
// 64 x 64 fp32 tile (128 registers a lane). Each group's kept columns inside a chunk of KC columns
// form k-steps of 16 (the last one padded with zero weights; with STRADDLE a step may run into the
// next chunk, padding only where the group's columns thin out): step_ptr[g * NC + c] .. [g * NC + c + 1]
// are the steps that start in chunk c.
// The weights come pre-arranged in mma.m16n8k16's B-fragment order (four 16-byte loads a lane per
// k-step) and the column offsets of each step in A-fragment order (tm_mma.py, prepare()).

#ifndef KC
#define KC 256
#endif
#ifndef NSTAGE
#define NSTAGE 2
#endif
#define BT 128
#ifndef GPC
#define GPC 4
#endif
#define NTHREADS (64 * GPC)
#define MIN_CTAS (256 / NTHREADS)  // CTAs a multiprocessor holds: 250 registers a thread fit 256 threads
#define VEC 64
#define STRIDE (KC + 8)  // row stride in elements: (KC + 8) / 2 words = 4 mod 32, so 8 tokens hit 8 bank quads

typedef unsigned short u16;
typedef unsigned int u32;

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

// The element type: bf16 unless built with -DHALF (fp16); both accumulate in fp32.
#ifdef HALF
#define MMA_TYPES "f16.f16"
#define CVT_TYPE "f16"
#else
#define MMA_TYPES "bf16.bf16"
#define CVT_TYPE "bf16"
#endif

__device__ __forceinline__ void mma_bf16(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32." MMA_TYPES ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u16 f32_to_bf16(float f) {
  u16 h;
  asm("cvt.rn." CVT_TYPE ".f32 %0, %1;\n" : "=h"(h) : "f"(f));
  return h;
}

__device__ __forceinline__ float bf16_to_f32(u16 h) {
#ifdef HALF
  float f;
  asm("cvt.f32.f16 %0, %1;\n" : "=f"(f) : "h"(h));
  return f;
#else
  return __uint_as_float(((u32)h) << 16);
#endif
}

// What one warp of the CTA does: its 64-token slab of the tile, its group, that group's k-steps.
struct WarpJob {
  int lane, warp, slab, g, t0;
  bool active;    // g < G (the last CTAs of a row may hold fewer groups)
  const int* sp;  // step_ptr of this group: its k-steps of chunk c are sp[c] .. sp[c + 1]
};

__device__ __forceinline__ WarpJob warp_job(const int* __restrict__ step_ptr, int G, int NC) {
  WarpJob j;
  j.lane = threadIdx.x & 31;
  j.warp = threadIdx.x >> 5;
  j.slab = j.warp & 1;
  j.g = blockIdx.x * GPC + (j.warp >> 1);
  j.t0 = blockIdx.y * BT;
  j.active = j.g < G;
  j.sp = step_ptr + (j.active ? j.g : 0) * NC;
  return j;
}

__device__ __forceinline__ void zero_acc(float (&acc)[4][8][4]) {
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][j][e] = 0.f;
}

// Where column offset `off` of a step lives: with STRADDLE a step's offsets run over two chunks
// (0 .. 2 * KC - 1: chunk c's buffer, then chunk c + 1's), else one (0 .. KC - 1).
__device__ __forceinline__ const u16* column(const u16* xw0, const u16* xw1, int off) {
#ifdef STRADDLE
  return off < KC ? xw0 + off : xw1 + (off - KC);
#else
  return xw0 + off;
#endif
}

// One warp's k-steps s_begin .. s_end of its group on the staged tiles xw0 (chunk c) and xw1
// (chunk c + 1, read by straddling steps only), both at the warp's first token row:
// the kept columns gathered with 2-byte shared loads into A fragments, 32 MMAs a step.
__device__ __forceinline__ void compute_steps(float (&acc)[4][8][4], const u16* xw0, const u16* xw1,
                                              const uint4* __restrict__ wfrag, const uint2* __restrict__ cfrag,
                                              int s_begin, int s_end, int lane) {
  const int q = lane & 3, r8 = lane >> 2;
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
    // this lane's four columns (slots 2q, 2q + 1, 2q + 8, 2q + 9) at its token row r8
    const u16* p0 = column(xw0, xw1, cc.x & 0xffff) + r8 * STRIDE;
    const u16* p1 = column(xw0, xw1, cc.x >> 16) + r8 * STRIDE;
    const u16* p2 = column(xw0, xw1, cc.y & 0xffff) + r8 * STRIDE;
    const u16* p3 = column(xw0, xw1, cc.y >> 16) + r8 * STRIDE;
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
      const int r0 = mt * 16 * STRIDE, r1 = r0 + 8 * STRIDE;  // token rows r8 and r8 + 8 of m-tile mt
      const u32 a0 = (u32)p0[r0] | ((u32)p1[r0] << 16);
      const u32 a1 = (u32)p0[r1] | ((u32)p1[r1] << 16);
      const u32 a2 = (u32)p2[r0] | ((u32)p3[r0] << 16);
      const u32 a3 = (u32)p2[r1] | ((u32)p3[r1] << 16);
#pragma unroll
      for (int j = 0; j < 8; ++j) mma_bf16(acc[mt][j], a0, a1, a2, a3, b[2 * j], b[2 * j + 1]);
    }
  }
}

// The epilogue's activation: GELU's tanh form through the hardware tanh with -DGELU (as the Triton
// kernels run it: within 4.7e-4 of the erf form, kernels/spmm.py), else none.
__device__ __forceinline__ float act(float x) {
#ifdef GELU
  float t;
  const float u = 0.7978845608f * (x + 0.044715f * x * x * x);
  asm("tanh.approx.f32 %0, %1;\n" : "=f"(t) : "f"(u));
  return 0.5f * x * (1.f + t);
#else
  return x;
#endif
}

// Accumulator (token, permuted row 8j + 2q + e of group g) -> out, act(. + bias of the original row):
// - default: out[token, perm[row]], the F.linear layout. Each 2-byte store lands in its own 32-byte
//   sector (the rows of a group are scattered); the Triton kernel storing this way ran at 0.69x of
//   dense against 1.57x in group order (4096^2, T = 4096, 75 %, linear.py's docstring).
// - GROUP_OUT: out[token, g * 64 + row] (ld = G * 64), rows in group order, two columns a 4-byte
//   store; a separate pass (shflbw_permute_cols) or a consumer that reads group order restores it.
// - SPLITK: float32 partial sums added (atomically) into out[token, g * 64 + row] of a zeroed float32
//   buffer in group order; no bias, no activation: the finishing pass (tm_permute.cu, FINISH) adds
//   the bias, casts and restores F.linear's order.
__device__ __forceinline__ void store_tile(const float (&acc)[4][8][4], const int* __restrict__ perm,
                                           const u16* __restrict__ bias, u16* __restrict__ out, int g, int tok0,
                                           int T, int M, int G, int has_bias, int lane) {
  const int q = lane & 3, r8 = lane >> 2;
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
      const int tok = tok0 + mt * 16 + r8 + 8 * h;
      if (tok >= T) continue;
#if defined(SPLITK)
      float* orow_ptr = reinterpret_cast<float*>(out) + (size_t)tok * G * VEC + g * VEC + 2 * q;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        atomicAdd(orow_ptr + 8 * j, acc[mt][j][2 * h]);
        atomicAdd(orow_ptr + 8 * j + 1, acc[mt][j][2 * h + 1]);
      }
#elif defined(GROUP_OUT)
      u16* orow_ptr = out + (size_t)tok * G * VEC + g * VEC + 2 * q;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        *reinterpret_cast<u32*>(orow_ptr + 8 * j) = (u32)f32_to_bf16(act(acc[mt][j][2 * h] + bv[j][0])) |
                                                    ((u32)f32_to_bf16(act(acc[mt][j][2 * h + 1] + bv[j][1])) << 16);
#else
      u16* orow_ptr = out + (size_t)tok * M;
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          if (orow[j][e] >= 0) orow_ptr[orow[j][e]] = f32_to_bf16(act(acc[mt][j][2 * h + e] + bv[j][e]));
#endif
    }
}
