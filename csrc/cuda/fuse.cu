// fuse on the GPU: the rule of worldenv/kernels/fuse.py, with the same
// results as the CPU backends.
//
//  fuse_unproject   one thread per pixel: world point, radius, voxel key and
//                   its slot in the map as it was at the start of the frame.
//  fuse_first_pixel one thread per pixel: phase (a), a scratch hash per
//                   stream (atomicCAS on keys, atomicMin on the first pixel).
//  fuse_overwrite   one thread per pixel: the first pixel of a voxel already
//                   in the map overwrites it (phase b; slots are distinct),
//                   the first pixel of a new voxel is flagged.
//  fuse_clock       one thread per stream, raster order: phase (c), free
//                   slots then CLOCK eviction with backward-shift deletion,
//                   exactly as on the CPU; then the frame counter advances.
//
// Compiled by NVRTC (through CuPy) with --fmad=false; no standard headers.

typedef unsigned long long u64;
typedef long long i64;

#define EMPTY_KEY (-1LL)
#define INVALID_KEY (-2LL)
#define AXIS_OFFSET (1LL << 20)
#define AXIS_LIMIT 1048576.0f

__device__ __forceinline__ bool is_finite(float x) { return x - x == 0.0f; }

__device__ __forceinline__ i64 hash_home(i64 key, int bits) {
  u64 h = (u64)key;
  h ^= h >> 31;
  h *= 0x9E3779B97F4A7C15ull;
  return (i64)(h >> (64 - bits));
}

__device__ __forceinline__ i64 voxel_key(float x, float y, float z, float inv_voxel) {
  const float gx = floorf(x * inv_voxel);
  const float gy = floorf(y * inv_voxel);
  const float gz = floorf(z * inv_voxel);
  const bool in_range = gx >= -AXIS_LIMIT && gx < AXIS_LIMIT && gy >= -AXIS_LIMIT && gy < AXIS_LIMIT &&
                        gz >= -AXIS_LIMIT && gz < AXIS_LIMIT;
  if (!in_range) return INVALID_KEY;
  return (((i64)gx + AXIS_OFFSET) << 42) | (((i64)gy + AXIS_OFFSET) << 21) | ((i64)gz + AXIS_OFFSET);
}

extern "C" __global__ void fuse_unproject(const float* __restrict__ depth,      // (B, H, W)
                                          const float* __restrict__ c2w,        // (B, 4, 4)
                                          const float* __restrict__ K,          // (B, 3, 3)
                                          const float* __restrict__ rfac,       // (B,)
                                          const bool* __restrict__ active,      // (B,)
                                          const i64* __restrict__ hkeys,        // (B, T)
                                          const int* __restrict__ hvals,        // (B, T)
                                          float* __restrict__ px_pts,           // (B, HW, 4)
                                          i64* __restrict__ px_key,             // (B, HW)
                                          i64* __restrict__ px_slot,            // (B, HW)
                                          i64 B, i64 HW, i64 W, i64 T, int bits, float inv_voxel,
                                          float min_radius) {
  const i64 total = B * HW;
  for (i64 q = (i64)blockIdx.x * blockDim.x + threadIdx.x; q < total; q += (i64)gridDim.x * blockDim.x) {
    const i64 b = q / HW, p = q % HW;
    px_key[q] = INVALID_KEY;
    px_slot[q] = -1;
    if (!active[b]) continue;
    const float d = depth[q];
    if (!(is_finite(d) && d > 0.0f)) continue;
    const float* Kb = K + b * 9;
    const float* M = c2w + b * 16;
    const float fx = Kb[0], cx = Kb[2], fy = Kb[4], cy = Kb[5];
    const float ifx = 1.0f / fx, ify = 1.0f / fy;
    const float fj = (float)(p % W), fi = (float)(p / W);
    const float xc = (fj - cx) * ifx * d;
    const float yc = (fi - cy) * ify * d;
    const float zc = d;
    const float x = M[0] * xc + M[1] * yc + M[2] * zc + M[3];
    const float y = M[4] * xc + M[5] * yc + M[6] * zc + M[7];
    const float z = M[8] * xc + M[9] * yc + M[10] * zc + M[11];
    float* o = px_pts + q * 4;
    o[0] = x;
    o[1] = y;
    o[2] = z;
    o[3] = fmaxf(rfac[b] * d, min_radius);
    const i64 key = voxel_key(x, y, z, inv_voxel);
    px_key[q] = key;
    if (key == INVALID_KEY) continue;
    const i64* tk = hkeys + b * T;
    const i64 mask = T - 1;
    i64 pos = hash_home(key, bits);
    while (true) {
      const i64 k = tk[pos];
      if (k == key) {
        px_slot[q] = hvals[b * T + pos];
        break;
      }
      if (k == EMPTY_KEY) break;
      pos = (pos + 1) & mask;
    }
  }
}

extern "C" __global__ void fuse_first_pixel(const i64* __restrict__ px_key,  // (B, HW)
                                            i64* __restrict__ seen_keys,     // (B, S), -1 = empty
                                            int* __restrict__ seen_first,    // (B, S), INT_MAX
                                            i64 B, i64 HW, i64 W, int sbits) {
  const i64 total = B * HW;
  const i64 S = 1LL << sbits, smask = S - 1;
  for (i64 q = (i64)blockIdx.x * blockDim.x + threadIdx.x; q < total; q += (i64)gridDim.x * blockDim.x) {
    const i64 key = px_key[q];
    if (key < 0) continue;
    const i64 b = q / HW, p = q % HW;
    u64* keys = (u64*)(seen_keys + b * S);
    i64 pos = hash_home(key, sbits);
    while (true) {
      const u64 prev = atomicCAS(keys + pos, (u64)EMPTY_KEY, (u64)key);
      if (prev == (u64)EMPTY_KEY || prev == (u64)key) {
        atomicMin(seen_first + b * S + pos, (int)p);
        break;
      }
      pos = (pos + 1) & smask;
    }
  }
}

extern "C" __global__ void fuse_overwrite(const float* __restrict__ px_pts,     // (B, HW, 4)
                                          const i64* __restrict__ px_key,       // (B, HW)
                                          const i64* __restrict__ px_slot,      // (B, HW)
                                          const i64* __restrict__ seen_keys,    // (B, S)
                                          const int* __restrict__ seen_first,   // (B, S)
                                          const float* __restrict__ img,        // (B, HW, C)
                                          float* __restrict__ xyz,              // (B, cap, 3)
                                          float* __restrict__ feats,            // (B, cap, C)
                                          float* __restrict__ radius,           // (B, cap)
                                          i64* __restrict__ stamp,              // (B, cap)
                                          unsigned char* __restrict__ ref,      // (B, cap)
                                          const i64* __restrict__ frame,        // (B,)
                                          unsigned char* __restrict__ px_new,   // (B, HW)
                                          i64 B, i64 HW, i64 W, i64 C, i64 cap, int sbits) {
  const i64 total = B * HW;
  const i64 S = 1LL << sbits, smask = S - 1;
  for (i64 q = (i64)blockIdx.x * blockDim.x + threadIdx.x; q < total; q += (i64)gridDim.x * blockDim.x) {
    const i64 key = px_key[q];
    if (key < 0) continue;
    const i64 b = q / HW, p = q % HW;
    const i64* keys = seen_keys + b * S;
    i64 pos = hash_home(key, sbits);
    while (keys[pos] != key) pos = (pos + 1) & smask;
    if (seen_first[b * S + pos] != (int)p) continue;  // not the voxel's first pixel
    const i64 s = px_slot[q];
    if (s < 0) {
      px_new[q] = 1;
      continue;
    }
    const i64 o = b * cap + s;
    const float* src = px_pts + q * 4;
    xyz[o * 3 + 0] = src[0];
    xyz[o * 3 + 1] = src[1];
    xyz[o * 3 + 2] = src[2];
    radius[o] = src[3];
    for (i64 c = 0; c < C; ++c) feats[o * C + c] = img[q * C + c];
    stamp[o] = frame[b];
    ref[o] = 1;
  }
}

__device__ void table_insert(i64* keys, int* vals, i64 mask, int bits, i64 key, int val) {
  i64 pos = hash_home(key, bits);
  while (keys[pos] != EMPTY_KEY) pos = (pos + 1) & mask;
  keys[pos] = key;
  vals[pos] = val;
}

// Backward-shift deletion, as in csrc/fuse.cpp.
__device__ void table_erase(i64* keys, int* vals, i64 mask, int bits, i64 key) {
  i64 i = hash_home(key, bits);
  while (keys[i] != key) i = (i + 1) & mask;
  i64 j = i;
  while (true) {
    j = (j + 1) & mask;
    const i64 kj = keys[j];
    if (kj == EMPTY_KEY) break;
    const i64 home = hash_home(kj, bits);
    const bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    keys[i] = kj;
    vals[i] = vals[j];
    i = j;
  }
  keys[i] = EMPTY_KEY;
}

extern "C" __global__ void fuse_clock(const float* __restrict__ px_pts,        // (B, HW, 4)
                                      const i64* __restrict__ px_key,          // (B, HW)
                                      const unsigned char* __restrict__ px_new,// (B, HW)
                                      const float* __restrict__ img,           // (B, HW, C)
                                      const bool* __restrict__ active,         // (B,)
                                      float* __restrict__ xyz,                 // (B, cap, 3)
                                      float* __restrict__ feats,               // (B, cap, C)
                                      float* __restrict__ radius,              // (B, cap)
                                      i64* __restrict__ stamp,                 // (B, cap)
                                      unsigned char* __restrict__ ref,         // (B, cap)
                                      i64* __restrict__ slot_key,              // (B, cap)
                                      i64* __restrict__ hkeys,                 // (B, T)
                                      int* __restrict__ hvals,                 // (B, T)
                                      i64* __restrict__ count,                 // (B,)
                                      i64* __restrict__ hand,                  // (B,)
                                      i64* __restrict__ frame,                 // (B,)
                                      i64 B, i64 HW, i64 W, i64 C, i64 cap, i64 T, int bits) {
  const i64 b = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B || !active[b]) return;
  i64* tk = hkeys + b * T;
  int* tv = hvals + b * T;
  unsigned char* rb = ref + b * cap;
  i64* sk = slot_key + b * cap;
  const i64 now = frame[b];
  i64 n = count[b], h = hand[b];
  for (i64 p = 0; p < HW; ++p) {
    const i64 q = b * HW + p;
    if (!px_new[q]) continue;
    i64 s;
    if (n < cap) {
      s = n++;
    } else {
      while (rb[h]) {
        rb[h] = 0;
        h = h + 1 == cap ? 0 : h + 1;
      }
      s = h;
      h = h + 1 == cap ? 0 : h + 1;
      table_erase(tk, tv, T - 1, bits, sk[s]);
    }
    const i64 key = px_key[q];
    table_insert(tk, tv, T - 1, bits, key, (int)s);
    sk[s] = key;
    const i64 o = b * cap + s;
    const float* src = px_pts + q * 4;
    xyz[o * 3 + 0] = src[0];
    xyz[o * 3 + 1] = src[1];
    xyz[o * 3 + 2] = src[2];
    radius[o] = src[3];
    for (i64 c = 0; c < C; ++c) feats[o * C + c] = img[q * C + c];
    stamp[o] = now;
    rb[s] = 1;
  }
  count[b] = n;
  hand[b] = h;
  frame[b] = now + 1;
}
