// splat: z-buffered point splatting on the CPU (OpenMP).
//
// Each point is transformed to the camera, projected, and written into every
// pixel its footprint covers as a packed key (float_bits(z) << 32) | index.
// z > 0, so the IEEE bits of z order like z and a plain 64-bit min picks the
// nearest point, ties going to the lower index. Every thread owns a z-buffer
// of H*W keys (128 KiB at 128x128, so it stays in L2) and takes chunks of
// the points; the buffers are then merged by min, which is associative and
// commutative, so the result is bit-identical for any number of threads and
// any schedule. A resolve pass gathers the winner's features and depth.
//
// The float operations and their order are the ones of the torch reference
// (worldenv/kernels/splat.py, `splat_reference`), and the build uses
// -ffp-contract=off, so the results are bit-identical to it.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace worldenv {
namespace {

constexpr uint64_t kEmpty = ~uint64_t(0);
constexpr int64_t kMaxPoints = int64_t(1) << 32;  // the index has 32 bits in a key

// One camera: world-to-camera rotation/translation and pinhole intrinsics.
struct Camera {
  float r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2;
  float fx, fy, cx, cy;
};

Camera load_camera(const float* w2c, const float* K) {
  Camera c;
  c.r00 = w2c[0], c.r01 = w2c[1], c.r02 = w2c[2], c.t0 = w2c[3];
  c.r10 = w2c[4], c.r11 = w2c[5], c.r12 = w2c[6], c.t1 = w2c[7];
  c.r20 = w2c[8], c.r21 = w2c[9], c.r22 = w2c[10], c.t2 = w2c[11];
  c.fx = K[0], c.cx = K[2], c.fy = K[4], c.cy = K[5];
  return c;
}

struct Raster {
  int64_t stride;      // W + 2: z-buffers have two padding columns and rows
  float w_max, h_max;  // W - 1, H - 1 as floats, for clipping before int conversion
  float near, max_r;
};

// Points are processed in blocks of kBlock. A branch-free pass computes
// every point's projection, footprint box, path and, for boxes up to 3x3
// pixels, the coverage mask of a 3x3 window at the box corner (this pass
// vectorises). A scalar pass then lowers the z-buffer cells with predicated
// updates (a min with the key or with kEmpty), so the cost of a point does
// not hinge on data-dependent branches. Larger footprints take a plain loop.
constexpr int kBlock = 256;
constexpr int64_t kChunk = 64 * kBlock;  // points per scheduling unit
constexpr int64_t kParallelPoints = int64_t(1) << 16;  // points per call worth a thread team

enum Path : int32_t { kSkip = 0, kOne = 1, kWin2 = 2, kWin3 = 3, kLoop = 4 };

struct Block {
  alignas(64) uint32_t zbits[kBlock];
  alignas(64) int32_t path[kBlock];
  alignas(64) int32_t offset[kBlock];  // z-buffer cell of the box corner (j0, i0)
  alignas(64) uint32_t mask[kBlock];   // bit 3*b + a: window pixel (j0 + a, i0 + b) covered
};

// One point's projection and footprint box.
struct Footprint {
  float u, v, jn, in, j0, j1, i0, i1, irx, iry, zc;
  bool valid, small;
};

// The rule and the order of float operations are those of `splat_reference`.
// Written with selects and bitwise logic so that a loop over points has no
// branches and vectorises.
inline Footprint project_point(float x, float y, float z, float r, const Camera& c, const Raster& q) {
  Footprint o;
  const float xc = c.r00 * x + c.r01 * y + c.r02 * z + c.t0;
  const float yc = c.r10 * x + c.r11 * y + c.r12 * z + c.t1;
  const float zc = c.r20 * x + c.r21 * y + c.r22 * z + c.t2;
  const float iz = 1.0f / zc;
  const float u = c.fx * xc * iz + c.cx;
  const float v = c.fy * yc * iz + c.cy;
  float rx = c.fx * r * iz;
  float ry = c.fy * r * iz;
  rx = rx < q.max_r ? rx : q.max_r;
  ry = ry < q.max_r ? ry : q.max_r;
  // Nearest pixel, rounding halves up; always covered.
  const float jn = std::floor(u + 0.5f);
  const float in = std::floor(v + 0.5f);
  // Sub-pixel footprint: only the nearest pixel (a disc of radius < 0.5
  // holds at most one pixel centre; the rule makes that exact).
  const bool small = (rx < 0.5f) & (ry < 0.5f);
  // Box of the ellipse joined with the nearest pixel, clipped to the image
  // while still in float (u may be far outside; no int overflow).
  float j0 = small ? jn : std::min(std::ceil(u - rx), jn);
  float j1 = small ? jn : std::max(std::floor(u + rx), jn);
  float i0 = small ? in : std::min(std::ceil(v - ry), in);
  float i1 = small ? in : std::max(std::floor(v + ry), in);
  o.j0 = std::max(j0, 0.0f);
  o.j1 = std::min(j1, q.w_max);
  o.i0 = std::max(i0, 0.0f);
  o.i1 = std::min(i1, q.h_max);
  // `zc > near` also rejects NaN.
  o.valid = (zc > q.near) & finite(xc) & finite(yc) & finite(zc) & finite(r) & (r >= 0.0f) &
            finite(u) & finite(v) & (o.j0 <= o.j1) & (o.i0 <= o.i1);
  o.small = small;
  o.u = u, o.v = v, o.jn = jn, o.in = in, o.zc = zc;
  o.irx = 1.0f / rx;
  o.iry = 1.0f / ry;
  return o;
}

// Wider vectors where the CPU has them, chosen once at load time (an ifunc);
// the build itself targets x86-64-v2 so that it runs on any x86-64 machine.
// Vector width does not change a float result (no FMA: -ffp-contract=off).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define WORLDENV_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define WORLDENV_VECTOR_CLONES
#endif

// Path, z-buffer offset and 3x3 window mask of points [0, n) of a block.
WORLDENV_VECTOR_CLONES void project_block(
    const float* __restrict xyz, const float* __restrict radius, int n, const Camera& c,
    const Raster& q, Block& out) {
  const int32_t stride = int32_t(q.stride);
  for (int k = 0; k < n; ++k) {
    const Footprint o = project_point(xyz[3 * k], xyz[3 * k + 1], xyz[3 * k + 2], radius[k], c, q);
    const float dj = o.j1 - o.j0, di = o.i1 - o.i0;
    const int32_t win2 = int32_t((dj <= 1.0f) & (di <= 1.0f));
    const int32_t win3 = int32_t((dj <= 2.0f) & (di <= 2.0f));
    // kLoop - win3 - win2 is kWin2 (2) for a box within 2x2, kWin3 (3) within 3x3.
    const int32_t path = o.valid ? (o.small ? int32_t(kOne) : int32_t(kLoop) - win3 - win2) : int32_t(kSkip);
    // Window mask: covered = inside the box and (inside the ellipse or the
    // nearest pixel); t and s exactly as in the reference.
    uint32_t mask = 0;
    for (int b = 0; b < 3; ++b) {
      const float fi = o.i0 + float(b);
      const float s = (fi - o.v) * o.iry;
      const float ss = s * s;
      const uint32_t rowi = fi <= o.i1;
      const uint32_t rown = fi == o.in;
      for (int a = 0; a < 3; ++a) {
        const float fj = o.j0 + float(a);
        const float t = (fj - o.u) * o.irx;
        const uint32_t cover =
            rowi & uint32_t(fj <= o.j1) & (uint32_t(t * t + ss <= 1.0f) | (rown & uint32_t(fj == o.jn)));
        mask |= cover << (3 * b + a);
      }
    }
    // Only valid points are converted to integers (no out-of-range
    // conversion); the offset is integer arithmetic (a float product would
    // lose exactness past 2**24 cells).
    const int32_t ci = int32_t(o.valid ? o.i0 : 0.0f);
    const int32_t cj = int32_t(o.valid ? o.j0 : 0.0f);
    out.zbits[k] = float_bits(o.zc);
    out.path[k] = path;
    out.offset[k] = ci * stride + cj;
    out.mask[k] = mask;
  }
}

// Lowers `*cell` to `key` when `cover` (0 or 1), without a branch: the
// candidate is `key` or all ones (kEmpty), then a min.
inline void lower(uint64_t* cell, uint64_t key, uint32_t cover) {
  const uint64_t cand = key | (uint64_t(cover) - 1);
  const uint64_t old = *cell;
  *cell = cand < old ? cand : old;
}

// Any box (large footprints, up to the max_radius_px clamp): the point is
// projected again (the same operations, so the same values) and its box
// walked with the same per-pixel test.
void splat_loop(const float* p, float r, uint64_t key, const Camera& c, const Raster& q,
                uint64_t* zbuf) {
  const Footprint o = project_point(p[0], p[1], p[2], r, c, q);
  const int64_t stride = q.stride;
  const int64_t ja = int64_t(o.j0), jb = int64_t(o.j1);
  const int64_t ia = int64_t(o.i0), ib = int64_t(o.i1);
  for (int64_t i = ia; i <= ib; ++i) {
    const float fi = float(i);
    const float s = (fi - o.v) * o.iry;
    const float ss = s * s;
    const uint32_t rown = fi == o.in;
    uint64_t* row = zbuf + i * stride;
    for (int64_t j = ja; j <= jb; ++j) {
      const float fj = float(j);
      const float t = (fj - o.u) * o.irx;
      lower(row + j, key, uint32_t(t * t + ss <= 1.0f) | (rown & uint32_t(fj == o.jn)));
    }
  }
}

// Splats points [begin, end) of one camera into `zbuf`, (H + 2) x (W + 2)
// keys: the two padding columns and rows keep a 3x3 window at any box
// corner in bounds (masked-out cells are rewritten with their own value).
void splat_range(const float* xyz, const float* radius, int64_t begin, int64_t end,
                 const Camera& cam, const Raster& q, uint64_t* zbuf) {
  // A local copy: stores through zbuf (uint64) could alias q.stride (int64).
  const int64_t stride = q.stride;
  Block bk;
  for (int64_t start = begin; start < end; start += kBlock) {
    const int n = int(std::min<int64_t>(kBlock, end - start));
    project_block(xyz + start * 3, radius + start, n, cam, q, bk);
    for (int k = 0; k < n; ++k) {
      const int32_t path = bk.path[k];
      if (path == kSkip) continue;
      const uint64_t key = (uint64_t(bk.zbits[k]) << 32) | uint64_t(start + k);
      uint64_t* w = zbuf + bk.offset[k];
      const uint32_t m = bk.mask[k];
      switch (path) {
        case kOne:
          lower(w, key, 1);
          break;
        case kWin2:
          lower(w, key, m & 1);
          lower(w + 1, key, (m >> 1) & 1);
          lower(w + stride, key, (m >> 3) & 1);
          lower(w + stride + 1, key, (m >> 4) & 1);
          break;
        case kWin3:
          for (int b = 0; b < 3; ++b) {
            for (int a = 0; a < 3; ++a) lower(w + b * stride + a, key, (m >> (3 * b + a)) & 1);
          }
          break;
        default:
          splat_loop(xyz + (start + k) * 3, radius[start + k], key, cam, q, zbuf);
      }
    }
  }
}

struct SplatArgs {
  const float* xyz;      // (B, N, 3)
  const float* feats;    // (B, N, C)
  const float* radius;   // (B, N)
  const int64_t* counts; // (B,)
  const float* w2c;      // (B, 4, 4)
  const float* K;        // (B, 3, 3)
  float* image;          // (B, H, W, C)
  float* depth;          // (B, H, W)
  bool* mask;            // (B, H, W)
  int64_t B, N, C, H, W;
  float near, max_r;
};

void splat_cpu(const SplatArgs& a) {
  const int64_t HW = a.H * a.W;
  const int64_t stride = a.W + 2;
  const int64_t cells = (a.H + 2) * stride;  // per-thread z-buffer, padded
  int64_t total = 0;
  for (int64_t b = 0; b < a.B; ++b) total += a.counts[b];
  // A small call runs on the calling thread alone: waking a team (and, on a
  // busy machine, waiting for it to be scheduled) would cost more than it saves.
  const int team = total >= kParallelPoints ? std::max(1, omp_get_max_threads()) : 1;
  // The z-buffers are kept per calling thread between calls, all kEmpty:
  // the merge empties every image cell it reads and no write ever lowers a
  // padding cell (boxes are clipped to the image), so a call leaves them as
  // it found them and there is nothing to allocate or fill per call.
  static thread_local std::vector<uint64_t> cache;
  const size_t need = size_t(team) * size_t(cells);
  if (cache.size() < need) cache.assign(need, kEmpty);
  uint64_t* zbufs = cache.data();
  const Raster q{stride, float(a.W - 1), float(a.H - 1), a.near, a.max_r};

#pragma omp parallel num_threads(team)
  {
    const int tid = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    uint64_t* mine = zbufs + int64_t(tid) * cells;
    for (int64_t b = 0; b < a.B; ++b) {
      const Camera cam = load_camera(a.w2c + b * 16, a.K + b * 9);
      const float* xyz = a.xyz + b * a.N * 3;
      const float* rad = a.radius + b * a.N;
      const int64_t n_b = a.counts[b];
      // Chunks of kChunk blocks handed out dynamically: the result does not
      // depend on which thread takes which point (min is order-free), and on
      // a shared machine a descheduled thread then does not hold up the call.
      const int64_t chunks = (n_b + kChunk - 1) / kChunk;
#pragma omp for schedule(dynamic, 1)
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t lo = ch * kChunk;
        splat_range(xyz, rad, lo, std::min(n_b, lo + kChunk), cam, q, mine);
      }
      const float* feats = a.feats + b * a.N * a.C;
      float* image = a.image + b * HW * a.C;
      float* depth = a.depth + b * HW;
      bool* mask = a.mask + b * HW;
#pragma omp for schedule(static)
      for (int64_t p = 0; p < HW; ++p) {
        const int64_t cell = (p / a.W) * stride + (p % a.W);
        uint64_t best = kEmpty;
        for (int t = 0; t < nt; ++t) {
          uint64_t& c = zbufs[size_t(t) * size_t(cells) + size_t(cell)];
          best = std::min(best, c);
          c = kEmpty;  // ready for the next batch item
        }
        float* px = image + p * a.C;
        if (best == kEmpty) {
          depth[p] = 0.0f;
          mask[p] = false;
          std::fill(px, px + a.C, 0.0f);
        } else {
          const int64_t idx = int64_t(best & 0xffffffffu);
          depth[p] = bits_float(uint32_t(best >> 32));
          mask[p] = true;
          std::memcpy(px, feats + idx * a.C, size_t(a.C) * sizeof(float));
        }
      }
    }
  }
}

void splat_binding(const Array<float>& xyz, const Array<float>& feats, const Array<float>& radius,
                   const Array<int64_t>& counts, const Array<float>& w2c, const Array<float>& K,
                   float near, float max_radius_px, Array<float>& image, Array<float>& depth,
                   Array<bool>& mask) {
  const char* k = "splat";
  expect_shape(k, "xyz", xyz, {kAny, kAny, 3});
  const int64_t B = xyz.shape(0), N = xyz.shape(1);
  expect_shape(k, "feats", feats, {B, N, kAny});
  const int64_t C = feats.shape(2);
  expect_shape(k, "radius", radius, {B, N});
  expect_shape(k, "counts", counts, {B});
  expect_shape(k, "w2c", w2c, {B, 4, 4});
  expect_shape(k, "K", K, {B, 3, 3});
  expect_shape(k, "image", image, {B, kAny, kAny, C});
  const int64_t H = image.shape(1), W = image.shape(2);
  expect_shape(k, "depth", depth, {B, H, W});
  expect_shape(k, "mask", mask, {B, H, W});
  if (C < 1) throw std::invalid_argument("splat: Expect `feats` to have at least one channel, actually: 0");
  if (H < 1 || W < 1) throw std::invalid_argument("splat: Expect a non-empty image");
  if (N >= kMaxPoints) throw std::invalid_argument("splat: Expect fewer than 2**32 points per camera");
  if (!(near > 0.0f)) throw std::invalid_argument("splat: Expect `near` to be positive");
  if (!(max_radius_px >= 0.5f) || !finite(max_radius_px)) {
    throw std::invalid_argument("splat: Expect `max_radius_px` to be finite and >= 0.5");
  }
  const int64_t* cnt = counts.data();
  for (int64_t b = 0; b < B; ++b) {
    if (cnt[b] < 0 || cnt[b] > N) {
      throw std::invalid_argument("splat: Expect `counts` in [0, " + std::to_string(N) +
                                  "], actually: " + std::to_string(cnt[b]) + " at batch " +
                                  std::to_string(b));
    }
  }
  SplatArgs a{xyz.data(), feats.data(), radius.data(), cnt, w2c.data(), K.data(),
              image.mutable_data(), depth.mutable_data(), mask.mutable_data(),
              B, N, C, H, W, near, max_radius_px};
  py::gil_scoped_release nogil;
  splat_cpu(a);
}

}  // namespace

void bind_splat(py::module_& m) {
  m.def("splat", &splat_binding, py::arg("xyz").noconvert(), py::arg("feats").noconvert(),
        py::arg("radius").noconvert(), py::arg("counts").noconvert(), py::arg("w2c").noconvert(),
        py::arg("K").noconvert(), py::arg("near"), py::arg("max_radius_px"),
        py::arg("image").noconvert(), py::arg("depth").noconvert(), py::arg("mask").noconvert(),
        R"doc(Z-buffered point splatting into preallocated outputs (in place).

Arrays are C-contiguous NumPy views (no copies are made; a wrong dtype or
layout is refused): xyz (B, N, 3) f32, feats (B, N, C) f32, radius (B, N) f32,
counts (B,) i64, w2c (B, 4, 4) f32, K (B, 3, 3) f32; outputs image
(B, H, W, C) f32, depth (B, H, W) f32, mask (B, H, W) bool. The rule is the
one of worldenv.kernels.splat; inconsistent sizes raise ValueError.)doc");
}

}  // namespace worldenv
