// fuse: unproject an RGB-D frame and insert it into a bounded voxel-hash
// point map (one map per batch item), on the CPU (OpenMP).
//
// Semantics (identical to `fuse_reference` in worldenv/kernels/fuse.py):
//  (a) within a frame, the first valid pixel in raster order wins each voxel;
//  (b) voxels already in the map are overwritten (xyz, feats, radius),
//      stamp = frame, ref = 1;
//  (c) new voxels, in the order of their first pixel, take the next free slot
//      (slot = count++) and, once the map is full, the slot the CLOCK picks:
//      at the hand, a slot with ref == 1 has it cleared and is passed over,
//      a slot with ref == 0 is evicted (its key leaves the hash by
//      backward-shift deletion) and reused; the hand advances past it.
//  Then the frame counter advances.
//
// Work: the unprojection, voxel keys and hash look-ups (read-only against the
// map as it was at the start of the frame, prefetched a block ahead) run over
// all pixels of all streams, in parallel when there are enough of them;
// phases a-c run sequentially per stream, streams in parallel. Phase (a) for
// voxels already in the map uses their stamps (a stamp equal to the frame
// being fused means "already written in this frame"), for new voxels a
// scratch set. Every stream's result depends only on its own inputs, so the
// output is identical for any number of threads.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace worldenv {
namespace {

constexpr int64_t kEmptyKey = -1;
constexpr int64_t kInvalid = -2;         // pixel without a valid point
constexpr int64_t kAxisOffset = int64_t(1) << 20;  // 21 bits per axis, signed range
constexpr float kAxisLimit = 1048576.0f;           // 2**20
constexpr int64_t kParallelPixels = int64_t(1) << 17;  // pixels per call worth a parallel region

// Fibonacci hashing of a voxel key into a table of 2**bits entries; the same
// function as `hash_home` in fuse.py and the CUDA kernel.
inline int64_t hash_home(int64_t key, int bits) {
  uint64_t h = uint64_t(key);
  h ^= h >> 31;
  h *= 0x9E3779B97F4A7C15ull;
  return int64_t(h >> (64 - bits));
}

// Voxel key of a world point: 21 bits per axis, floor(p / voxel) offset by
// 2**20, x in the high bits. Returns kInvalid outside [-2**20, 2**20) voxels
// per axis (or for non-finite points).
inline int64_t voxel_key(float x, float y, float z, float inv_voxel) {
  const float gx = std::floor(x * inv_voxel);
  const float gy = std::floor(y * inv_voxel);
  const float gz = std::floor(z * inv_voxel);
  const bool in_range = gx >= -kAxisLimit && gx < kAxisLimit && gy >= -kAxisLimit &&
                        gy < kAxisLimit && gz >= -kAxisLimit && gz < kAxisLimit;
  if (!in_range) return kInvalid;  // also NaN
  return ((int64_t(gx) + kAxisOffset) << 42) | ((int64_t(gy) + kAxisOffset) << 21) |
         (int64_t(gz) + kAxisOffset);
}

struct Table {
  int64_t* keys;
  int32_t* vals;
  int64_t mask;
  int bits;

  int64_t find(int64_t key) const {
    int64_t pos = hash_home(key, bits);
    while (true) {
      const int64_t k = keys[pos];
      if (k == key) return vals[pos];
      if (k == kEmptyKey) return -1;
      pos = (pos + 1) & mask;
    }
  }

  // `key` must be absent; the table is never more than half full.
  void insert(int64_t key, int32_t val) {
    int64_t pos = hash_home(key, bits);
    while (keys[pos] != kEmptyKey) pos = (pos + 1) & mask;
    keys[pos] = key;
    vals[pos] = val;
  }

  // Backward-shift deletion: later entries of the probe run move back into
  // the hole unless that would put them before their home position.
  void erase(int64_t key) {
    int64_t i = hash_home(key, bits);
    while (keys[i] != key) i = (i + 1) & mask;
    int64_t j = i;
    while (true) {
      j = (j + 1) & mask;
      const int64_t kj = keys[j];
      if (kj == kEmptyKey) break;
      const int64_t home = hash_home(kj, bits);
      const bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
      if (stays) continue;
      keys[i] = kj;
      vals[i] = vals[j];
      i = j;
    }
    keys[i] = kEmptyKey;
  }
};

struct FuseArgs {
  // Point map, one per stream (modified in place).
  float* xyz;        // (B, cap, 3)
  float* feats;      // (B, cap, C)
  float* radius;     // (B, cap)
  int64_t* stamp;    // (B, cap)
  uint8_t* ref;      // (B, cap)
  int64_t* slot_key; // (B, cap)
  int64_t* hkeys;    // (B, T)
  int32_t* hvals;    // (B, T)
  int64_t* count;    // (B,)
  int64_t* hand;     // (B,)
  int64_t* frame;    // (B,)
  // Frame.
  const float* img;    // (B, H, W, C)
  const float* depth;  // (B, H, W)
  const float* c2w;    // (B, 4, 4)
  const float* K;      // (B, 3, 3)
  const float* rfac;   // (B,)  radius = max(rfac * depth, min_radius)
  const bool* active;  // (B,)
  int64_t B, cap, C, T, H, W;
  int bits;
  float inv_voxel;
  float min_radius;
};

// Per-pixel results of the parallel pass.
struct Pixel {
  float x, y, z, r;
  int64_t key;   // kInvalid when the pixel has no point
  int64_t slot;  // slot of the voxel at the start of the frame, -1 if new
};

void unproject_and_lookup(const FuseArgs& a, const std::vector<int64_t>& streams, Pixel* px) {
  // Blocks of pixels: a first loop computes points and keys and prefetches
  // their home entries, a second one probes, so the cache misses of a
  // block's look-ups overlap instead of queueing one after another.
  constexpr int64_t kPixBlock = 64;
  const int64_t HW = a.H * a.W;
  const int64_t per_stream = (HW + kPixBlock - 1) / kPixBlock;
  const int64_t total = int64_t(streams.size()) * per_stream;
  // Dynamic chunks: each pixel's result is independent of the schedule.
  // Below kParallelPixels a parallel region costs more than it saves (and,
  // on a busy machine, a waiting thread competes with the one that works).
#pragma omp parallel for schedule(dynamic, 16) if (total * kPixBlock >= kParallelPixels)
  for (int64_t blk = 0; blk < total; ++blk) {
    const int64_t k = blk / per_stream;
    const int64_t b = streams[size_t(k)];
    const int64_t p0 = (blk % per_stream) * kPixBlock;
    const int64_t p1 = std::min(HW, p0 + kPixBlock);
    const float* K = a.K + b * 9;
    const float* T = a.c2w + b * 16;
    const float fx = K[0], cx = K[2], fy = K[4], cy = K[5];
    const float ifx = 1.0f / fx, ify = 1.0f / fy;
    const float rf = a.rfac[b];
    const float* depth = a.depth + b * HW;
    const Table table{a.hkeys + b * a.T, a.hvals + b * a.T, a.T - 1, a.bits};
    Pixel* out = px + k * HW;
    for (int64_t p = p0; p < p1; ++p) {
      Pixel& o = out[p];
      const float d = depth[p];
      o.key = kInvalid;
      o.slot = -1;
      if (!(finite(d) && d > 0.0f)) continue;
      const float fj = float(p % a.W), fi = float(p / a.W);
      const float xc = (fj - cx) * ifx * d;
      const float yc = (fi - cy) * ify * d;
      const float zc = d;
      o.x = T[0] * xc + T[1] * yc + T[2] * zc + T[3];
      o.y = T[4] * xc + T[5] * yc + T[6] * zc + T[7];
      o.z = T[8] * xc + T[9] * yc + T[10] * zc + T[11];
      o.r = std::max(rf * d, a.min_radius);
      o.key = voxel_key(o.x, o.y, o.z, a.inv_voxel);
      if (o.key == kInvalid) continue;
      const int64_t home = hash_home(o.key, a.bits);
      __builtin_prefetch(table.keys + home);
      __builtin_prefetch(table.vals + home);
    }
    for (int64_t p = p0; p < p1; ++p) {
      Pixel& o = out[p];
      if (o.key != kInvalid) o.slot = table.find(o.key);
    }
  }
}

// Scratch buffers kept per thread across calls: no allocation, zeroing or
// page faults on the per-frame path.
struct Scratch {
  std::vector<int64_t> seen;   // keys seen this frame (phase a)
  std::vector<int64_t> fresh;    // first pixels of new voxels, raster order
  std::vector<int64_t> slots;    // slot of each new voxel
  std::vector<int64_t> victims;  // key evicted for it (kEmptyKey: a free slot)
};

Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

// Phases a-c for one stream; `px` holds its H*W pixels.
void insert_stream(const FuseArgs& a, int64_t b, const Pixel* px) {
  const int64_t HW = a.H * a.W;
  const int64_t cap = a.cap, C = a.C;
  Table table{a.hkeys + b * a.T, a.hvals + b * a.T, a.T - 1, a.bits};
  float* xyz = a.xyz + b * cap * 3;
  float* feats = a.feats + b * cap * C;
  float* radius = a.radius + b * cap;
  int64_t* stamp = a.stamp + b * cap;
  uint8_t* ref = a.ref + b * cap;
  int64_t* slot_key = a.slot_key + b * cap;
  const float* img = a.img + b * HW * C;
  const int64_t now = a.frame[b];

  auto write = [&](int64_t s, int64_t p) {
    const Pixel& o = px[p];
    xyz[s * 3 + 0] = o.x;
    xyz[s * 3 + 1] = o.y;
    xyz[s * 3 + 2] = o.z;
    std::memcpy(feats + s * C, img + p * C, size_t(C) * sizeof(float));
    radius[s] = o.r;
    stamp[s] = now;
    ref[s] = 1;
  };

  // (a) + (b) in one raster-order scan. A voxel already in the map is
  // claimed by its first pixel through its stamp: stamps only ever take the
  // number of the frame being fused, so before this frame every stamp is
  // below `now` and `stamp != now` means "not written yet in this frame".
  Scratch& scr = scratch();
  std::vector<int64_t>& fresh = scr.fresh;
  std::vector<int64_t>& seen = scr.seen;
  fresh.clear();
  for (int64_t p = 0; p < HW; ++p) {
    const int64_t key = px[p].key;
    if (key == kInvalid) continue;
    const int64_t s = px[p].slot;
    if (s < 0) {
      fresh.push_back(p);  // a new voxel, maybe seen before in this frame
    } else if (stamp[s] != now) {
      write(s, p);  // (b) the first pixel of a voxel in the map overwrites it
    }
  }
  // New voxels: keep the first pixel of each, with a scratch set of keys
  // (open addressing, a power-of-two table at most half full).
  int sbits = 1;
  while ((int64_t(1) << sbits) < 2 * int64_t(fresh.size())) ++sbits;
  const int64_t smask = (int64_t(1) << sbits) - 1;
  seen.assign(size_t(smask + 1), kEmptyKey);
  size_t kept = 0;
  for (size_t f = 0; f < fresh.size(); ++f) {
    const int64_t key = px[fresh[f]].key;
    int64_t pos = hash_home(key, sbits);
    bool first = true;
    while (seen[size_t(pos)] != kEmptyKey) {
      if (seen[size_t(pos)] == key) {
        first = false;
        break;
      }
      pos = (pos + 1) & smask;
    }
    if (!first) continue;
    seen[size_t(pos)] = key;
    fresh[kept++] = fresh[f];
  }
  fresh.resize(kept);

  // (c) new voxels take free slots, then CLOCK victims. First the slots are
  // chosen and written in order (the clock reads and sets only ref bits),
  // recording each victim's key; then the hash is updated with the same
  // erase/insert sequence, prefetching a few voxels ahead so that the
  // table's cache misses overlap.
  std::vector<int64_t>& slots = scr.slots;
  std::vector<int64_t>& victims = scr.victims;
  const size_t nf = fresh.size();
  slots.resize(nf);
  victims.resize(nf);
  int64_t n = a.count[b];
  int64_t h = a.hand[b];
  for (size_t f = 0; f < nf; ++f) {
    int64_t s;
    int64_t victim = kEmptyKey;
    if (n < cap) {
      s = n++;
    } else {
      while (ref[h]) {
        ref[h] = 0;
        h = h + 1 == cap ? 0 : h + 1;
      }
      s = h;
      h = h + 1 == cap ? 0 : h + 1;
      victim = slot_key[s];
    }
    slot_key[s] = px[fresh[f]].key;
    write(s, fresh[f]);
    slots[f] = s;
    victims[f] = victim;
  }
  constexpr size_t kAhead = 8;
  for (size_t f = 0; f < nf; ++f) {
    if (f + kAhead < nf) {
      const int64_t key = px[fresh[f + kAhead]].key;
      __builtin_prefetch(table.keys + hash_home(key, table.bits));
      const int64_t victim = victims[f + kAhead];
      if (victim != kEmptyKey) {
        const int64_t home = hash_home(victim, table.bits);
        __builtin_prefetch(table.keys + home);
        __builtin_prefetch(table.vals + home);
      }
    }
    if (victims[f] != kEmptyKey) table.erase(victims[f]);
    table.insert(px[fresh[f]].key, int32_t(slots[f]));
  }
  a.count[b] = n;
  a.hand[b] = h;
  a.frame[b] = now + 1;
}

void fuse_cpu(const FuseArgs& a) {
  std::vector<int64_t> streams;
  for (int64_t b = 0; b < a.B; ++b) {
    if (a.active[b]) streams.push_back(b);
  }
  if (streams.empty()) return;
  const int64_t HW = a.H * a.W;
  // Kept across calls (see Scratch); the calling thread owns it.
  static thread_local std::vector<Pixel> px;
  if (px.size() < streams.size() * size_t(HW)) px.resize(streams.size() * size_t(HW));
  unproject_and_lookup(a, streams, px.data());
  // A plain pointer: inside a parallel region `px` would name each worker
  // thread's own (empty) thread_local vector.
  const Pixel* pixels = px.data();
  const int64_t ns = int64_t(streams.size());
  if (ns == 1) {
    insert_stream(a, streams[0], pixels);  // no parallel region for one stream
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < ns; ++k) {
    insert_stream(a, streams[size_t(k)], pixels + k * HW);
  }
}

template <class T>
T* writable(Array<T>& a) {
  return a.mutable_data();
}

void fuse_binding(Array<float>& xyz, Array<float>& feats, Array<float>& radius,
                  Array<int64_t>& stamp, Array<uint8_t>& ref, Array<int64_t>& slot_key,
                  Array<int64_t>& hash_keys, Array<int32_t>& hash_vals, Array<int64_t>& count,
                  Array<int64_t>& hand, Array<int64_t>& frame, const Array<float>& feats_img,
                  const Array<float>& depth, const Array<float>& c2w, const Array<float>& K,
                  const Array<float>& radius_factor, const Array<bool>& batch_mask,
                  float inv_voxel, float min_radius) {
  const char* k = "fuse";
  expect_shape(k, "xyz", xyz, {kAny, kAny, 3});
  const int64_t B = xyz.shape(0), cap = xyz.shape(1);
  expect_shape(k, "feats", feats, {B, cap, kAny});
  const int64_t C = feats.shape(2);
  expect_shape(k, "radius", radius, {B, cap});
  expect_shape(k, "stamp", stamp, {B, cap});
  expect_shape(k, "ref", ref, {B, cap});
  expect_shape(k, "slot_key", slot_key, {B, cap});
  expect_shape(k, "hash_keys", hash_keys, {B, kAny});
  const int64_t T = hash_keys.shape(1);
  expect_shape(k, "hash_vals", hash_vals, {B, T});
  expect_shape(k, "count", count, {B});
  expect_shape(k, "hand", hand, {B});
  expect_shape(k, "frame", frame, {B});
  expect_shape(k, "feats_img", feats_img, {B, kAny, kAny, C});
  const int64_t H = feats_img.shape(1), W = feats_img.shape(2);
  expect_shape(k, "depth", depth, {B, H, W});
  expect_shape(k, "c2w", c2w, {B, 4, 4});
  expect_shape(k, "K", K, {B, 3, 3});
  expect_shape(k, "radius_factor", radius_factor, {B});
  expect_shape(k, "batch_mask", batch_mask, {B});
  if (cap < 1 || cap > (int64_t(1) << 30)) {
    throw std::invalid_argument("fuse: Expect a capacity in [1, 2**30], actually: " + std::to_string(cap));
  }
  if (T < 2 * cap || (T & (T - 1)) != 0) {
    throw std::invalid_argument("fuse: Expect `hash_keys` to have a power-of-two size >= 2 * capacity (" +
                                std::to_string(2 * cap) + "), actually: " + std::to_string(T));
  }
  if (C < 1) throw std::invalid_argument("fuse: Expect `feats` to have at least one channel, actually: 0");
  if (H < 1 || W < 1) throw std::invalid_argument("fuse: Expect a non-empty frame");
  if (!(inv_voxel > 0.0f) || !finite(inv_voxel)) {
    throw std::invalid_argument("fuse: Expect `inv_voxel` to be finite and positive");
  }
  if (!(min_radius >= 0.0f) || !finite(min_radius)) {
    throw std::invalid_argument("fuse: Expect `min_radius` to be finite and non-negative");
  }
  const int64_t* cnt = count.data();
  const int64_t* hnd = hand.data();
  for (int64_t b = 0; b < B; ++b) {
    if (cnt[b] < 0 || cnt[b] > cap || hnd[b] < 0 || hnd[b] >= cap) {
      throw std::invalid_argument("fuse: Expect `count` in [0, capacity] and `hand` in [0, capacity), actually: " +
                                  std::to_string(cnt[b]) + " and " + std::to_string(hnd[b]) +
                                  " at batch " + std::to_string(b));
    }
  }
  int bits = 0;
  while ((int64_t(1) << bits) < T) ++bits;
  FuseArgs a{writable(xyz), writable(feats), writable(radius), writable(stamp), writable(ref),
             writable(slot_key), writable(hash_keys), writable(hash_vals), writable(count),
             writable(hand), writable(frame), feats_img.data(), depth.data(), c2w.data(), K.data(),
             radius_factor.data(), batch_mask.data(), B, cap, C, T, H, W, bits, inv_voxel, min_radius};
  py::gil_scoped_release nogil;
  fuse_cpu(a);
}

// Touch: set the reference bit of every map voxel a valid pixel falls in
// (the same unprojection and keys as fuse); nothing else is written.
void touch_binding(Array<uint8_t>& ref, Array<int64_t>& hash_keys, Array<int32_t>& hash_vals,
                   const Array<float>& depth, const Array<float>& c2w, const Array<float>& K,
                   const Array<bool>& batch_mask, float inv_voxel) {
  const char* k = "touch";
  expect_shape(k, "ref", ref, {kAny, kAny});
  const int64_t B = ref.shape(0), cap = ref.shape(1);
  expect_shape(k, "hash_keys", hash_keys, {B, kAny});
  const int64_t T = hash_keys.shape(1);
  expect_shape(k, "hash_vals", hash_vals, {B, T});
  expect_shape(k, "depth", depth, {B, kAny, kAny});
  const int64_t H = depth.shape(1), W = depth.shape(2);
  expect_shape(k, "c2w", c2w, {B, 4, 4});
  expect_shape(k, "K", K, {B, 3, 3});
  expect_shape(k, "batch_mask", batch_mask, {B});
  if (cap < 1 || T < 2 * cap || (T & (T - 1)) != 0) {
    throw std::invalid_argument("touch: Expect `hash_keys` to have a power-of-two size >= 2 * capacity (" +
                                std::to_string(2 * cap) + "), actually: " + std::to_string(T));
  }
  if (!(inv_voxel > 0.0f) || !finite(inv_voxel)) {
    throw std::invalid_argument("touch: Expect `inv_voxel` to be finite and positive");
  }
  int bits = 0;
  while ((int64_t(1) << bits) < T) ++bits;
  const std::vector<float> no_radius(size_t(B), 0.0f);
  FuseArgs a{nullptr, nullptr, nullptr, nullptr, writable(ref), nullptr, writable(hash_keys),
             writable(hash_vals), nullptr, nullptr, nullptr, nullptr, depth.data(), c2w.data(), K.data(),
             no_radius.data(), batch_mask.data(), B, cap, 1, T, H, W, bits, inv_voxel, 0.0f};
  py::gil_scoped_release nogil;
  std::vector<int64_t> streams;
  for (int64_t b = 0; b < B; ++b) {
    if (a.active[b]) streams.push_back(b);
  }
  if (streams.empty() || H * W == 0) return;
  const int64_t HW = H * W;
  std::vector<Pixel> px(streams.size() * size_t(HW));
  unproject_and_lookup(a, streams, px.data());
  const Pixel* pixels = px.data();
  const int64_t ns = int64_t(streams.size());
#pragma omp parallel for schedule(static) if (ns * HW >= kParallelPixels)
  for (int64_t i = 0; i < ns; ++i) {
    uint8_t* r = a.ref + streams[size_t(i)] * cap;
    const Pixel* q = pixels + i * HW;
    for (int64_t p = 0; p < HW; ++p) {
      if (q[p].slot >= 0) r[q[p].slot] = 1;
    }
  }
}

}  // namespace

void bind_fuse(py::module_& m) {
  m.def("touch", &touch_binding, py::arg("ref").noconvert(), py::arg("hash_keys").noconvert(),
        py::arg("hash_vals").noconvert(), py::arg("depth").noconvert(), py::arg("c2w").noconvert(),
        py::arg("K").noconvert(), py::arg("batch_mask").noconvert(), py::arg("inv_voxel"),
        R"doc(Set ref = 1 for the map voxels that valid pixels of one view per stream fall in.

ref (B, cap) u8 (modified in place), hash_keys (B, T) i64, hash_vals (B, T)
i32, depth (B, H, W) f32, c2w (B, 4, 4) f32, K (B, 3, 3) f32, batch_mask (B,)
bool. Keys as worldenv.kernels.fuse; nothing else is written.)doc");
  m.def("fuse", &fuse_binding, py::arg("xyz").noconvert(), py::arg("feats").noconvert(),
        py::arg("radius").noconvert(), py::arg("stamp").noconvert(), py::arg("ref").noconvert(),
        py::arg("slot_key").noconvert(), py::arg("hash_keys").noconvert(),
        py::arg("hash_vals").noconvert(), py::arg("count").noconvert(), py::arg("hand").noconvert(),
        py::arg("frame").noconvert(), py::arg("feats_img").noconvert(), py::arg("depth").noconvert(),
        py::arg("c2w").noconvert(), py::arg("K").noconvert(), py::arg("radius_factor").noconvert(),
        py::arg("batch_mask").noconvert(), py::arg("inv_voxel"), py::arg("min_radius"),
        R"doc(Fuse one frame per stream into a voxel-hash point map (in place).

Map arrays (modified in place): xyz (B, cap, 3) f32, feats (B, cap, C) f32,
radius (B, cap) f32, stamp (B, cap) i64, ref (B, cap) u8, slot_key (B, cap)
i64, hash_keys (B, T) i64, hash_vals (B, T) i32, count/hand/frame (B,) i64.
Frame arrays: feats_img (B, H, W, C) f32, depth (B, H, W) f32, c2w (B, 4, 4)
f32, K (B, 3, 3) f32, radius_factor (B,) f32, batch_mask (B,) bool. The rule
is the one of worldenv.kernels.fuse; inconsistent sizes raise ValueError.)doc");
}

}  // namespace worldenv
