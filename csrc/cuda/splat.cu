// splat on the GPU: the rule of worldenv/kernels/splat.py, op for op.
//
// Pass 1 (splat_points): one thread per point transforms, projects and walks
// its footprint, lowering each covered pixel's packed key
// (float_bits(z) << 32) | index with a 64-bit atomicMin. Pass 2
// (splat_resolve): one thread per pixel gathers the winner. Compiled by
// NVRTC (through CuPy) with --fmad=false, so no multiply-add is fused and
// the float results match the CPU backends. No standard headers: NVRTC has
// none by default.

typedef unsigned long long u64;
typedef long long i64;

#define EMPTY_KEY 0xffffffffffffffffull

__device__ __forceinline__ bool is_finite(float x) { return x - x == 0.0f; }

extern "C" __global__ void splat_points(const float* __restrict__ xyz,     // (B, N, 3)
                                        const float* __restrict__ radius,  // (B, N)
                                        const i64* __restrict__ counts,    // (B,)
                                        const float* __restrict__ w2c,     // (B, 4, 4)
                                        const float* __restrict__ K,       // (B, 3, 3)
                                        u64* __restrict__ zbuf,            // (B, H, W)
                                        i64 B, i64 N, i64 H, i64 W, float near, float max_r) {
  const i64 total = B * N;
  const float w_max = (float)(W - 1), h_max = (float)(H - 1);
  for (i64 q = (i64)blockIdx.x * blockDim.x + threadIdx.x; q < total; q += (i64)gridDim.x * blockDim.x) {
    const i64 b = q / N, n = q % N;
    if (n >= counts[b]) continue;
    const float* T = w2c + b * 16;
    const float* Kb = K + b * 9;
    const float* p = xyz + q * 3;
    const float x = p[0], y = p[1], z = p[2];
    const float r = radius[q];
    const float xc = T[0] * x + T[1] * y + T[2] * z + T[3];
    const float yc = T[4] * x + T[5] * y + T[6] * z + T[7];
    const float zc = T[8] * x + T[9] * y + T[10] * z + T[11];
    if (!(zc > near)) continue;
    if (!(is_finite(xc) && is_finite(yc) && is_finite(zc) && is_finite(r) && r >= 0.0f)) continue;
    const float fx = Kb[0], cx = Kb[2], fy = Kb[4], cy = Kb[5];
    const float iz = 1.0f / zc;
    const float u = fx * xc * iz + cx;
    const float v = fy * yc * iz + cy;
    if (!(is_finite(u) && is_finite(v))) continue;
    float rx = fx * r * iz;
    float ry = fy * r * iz;
    rx = rx < max_r ? rx : max_r;
    ry = ry < max_r ? ry : max_r;
    const u64 key = ((u64)__float_as_uint(zc) << 32) | (u64)n;
    const float jn = floorf(u + 0.5f);
    const float in = floorf(v + 0.5f);
    u64* img = zbuf + b * H * W;
    if (rx < 0.5f && ry < 0.5f) {
      if (jn >= 0.0f && jn <= w_max && in >= 0.0f && in <= h_max) {
        u64* cell = img + (i64)in * W + (i64)jn;
        if (key < *cell) atomicMin(cell, key);
      }
      continue;
    }
    float j0 = ceilf(u - rx), j1 = floorf(u + rx);
    float i0 = ceilf(v - ry), i1 = floorf(v + ry);
    j0 = fmaxf(fminf(j0, jn), 0.0f);
    j1 = fminf(fmaxf(j1, jn), w_max);
    i0 = fmaxf(fminf(i0, in), 0.0f);
    i1 = fminf(fmaxf(i1, in), h_max);
    if (!(j0 <= j1 && i0 <= i1)) continue;
    const float irx = 1.0f / rx;
    const float iry = 1.0f / ry;
    const i64 ja = (i64)j0, jb = (i64)j1, ia = (i64)i0, ib = (i64)i1;
    for (i64 i = ia; i <= ib; ++i) {
      const float fi = (float)i;
      const float s = (fi - v) * iry;
      const float ss = s * s;
      const bool row_n = fi == in;
      u64* row = img + i * W;
      for (i64 j = ja; j <= jb; ++j) {
        const float fj = (float)j;
        const float t = (fj - u) * irx;
        const bool cover = t * t + ss <= 1.0f || (row_n && fj == jn);
        // The plain read skips most atomics; atomicMin keeps it exact.
        if (cover && key < row[j]) atomicMin(row + j, key);
      }
    }
  }
}

extern "C" __global__ void splat_resolve(const u64* __restrict__ zbuf,     // (B, H, W)
                                         const float* __restrict__ feats,  // (B, N, C)
                                         float* __restrict__ image,        // (B, H, W, C)
                                         float* __restrict__ depth,        // (B, H, W)
                                         bool* __restrict__ mask,          // (B, H, W)
                                         i64 B, i64 N, i64 C, i64 HW) {
  const i64 total = B * HW;
  for (i64 q = (i64)blockIdx.x * blockDim.x + threadIdx.x; q < total; q += (i64)gridDim.x * blockDim.x) {
    const u64 best = zbuf[q];
    float* px = image + q * C;
    if (best == EMPTY_KEY) {
      depth[q] = 0.0f;
      mask[q] = false;
      for (i64 c = 0; c < C; ++c) px[c] = 0.0f;
    } else {
      const i64 b = q / HW;
      const i64 idx = (i64)(best & 0xffffffffull);
      depth[q] = __uint_as_float((unsigned int)(best >> 32));
      mask[q] = true;
      const float* f = feats + (b * N + idx) * C;
      for (i64 c = 0; c < C; ++c) px[c] = f[c];
    }
  }
}
