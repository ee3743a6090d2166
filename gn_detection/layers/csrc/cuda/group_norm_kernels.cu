// CUDA kernels of the gn_detection GroupNorm op and their host launchers.
//
// Every formula comes from group_norm_math.h, which the CPU kernels use too, so
// the arithmetic executed here is the one the CPU tests check. This file only
// decides how the work is spread over the GPU:
//
// Forward
//   1. Partial moments (Welford per thread, then Chan's combination across the
//      warp with shuffles and across the block in shared memory):
//      channels-first: a group is one contiguous span of D * HxW elements, split
//        into chunks; one block per (group, chunk).
//      channels-last: threads run along C (coalesced), a block covers a tile of
//        channels and a chunk of rows; one partial per (n, c, chunk).
//      Splitting the spatial extent keeps the GPU busy when N * G is small
//      (N = 1 with 32 groups is the common detection case).
//   2. finalize: one warp per (n, g) combines that group's partials into mean
//      and rstd, and writes a per-(n, c) table (mean, rstd * gamma_c, beta_c).
//   3. normalize: elementwise z = normalize(x, ...) (+ ReLU) over all elements,
//      grid-stride, 16-byte vector loads where the layout allows.
// Backward
//   1. Partial sums per (n, c, chunk) of dz and dz * (x - mean), where dz is dy
//      or, with the fused ReLU, dy masked by the recomputed pre-activation:
//      channels-first: one warp per (n, c) row chunk; channels-last: channel tiles.
//   2. grad_coefs: one warp per (n, g) sums its channels' partials, weights them
//      by gamma and forms the input-gradient coefficients; writes per-(n, c)
//      totals and a per-(n, c) table for the elementwise pass.
//   3. channel_grads: dgamma_c and dbeta_c, summed over n.
//   4. input_grad: elementwise dx.
// Inputs with HxW = 1 ((N, C), (N, C, 1, 1)): a group is D contiguous
// elements, in either layout. A segment of lanes (D rounded up to a power of
// two, at most a warp) owns a group and does the whole pass in one kernel:
// statistics then output (forward), or sums, coefficients then dx (backward,
// followed by channel_grads). The general kernels would give such inputs one
// warp per element in the channels-first backward, 31 lanes idle.
#include "group_norm_kernels.h"

#include <cuda_runtime.h>

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

#include "../group_norm_math.h"

namespace gn_detection {
namespace cuda_impl {
namespace {

using math::Moments;

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
// Threads of the tile, elementwise and largest reduction blocks.
constexpr int kBlockThreads = 256;
constexpr int kMaxWarps = kBlockThreads / kWarpSize;
// Threads of the warp-per-group kernels (finalize, grad_coefs).
constexpr int kWarpKernelThreads = 128;
// Bytes of one vector load; chunk lengths are multiples of kChunkAlign, the
// largest vector width in elements (8 halves), so chunks start on vectors.
constexpr int kPackBytes = 16;
constexpr int64_t kChunkAlign = 8;
// Splitting: aim at kTargetBlocksPerSm reduction blocks per SM, but give every
// block at least kMinBlockElems elements (every warp of the channels-first
// backward at least kMinWarpCols), and keep at most kMaxChunks chunks per row.
constexpr int kTargetBlocksPerSm = 4;
constexpr int64_t kMinBlockElems = 2048;
constexpr int64_t kMinWarpCols = 512;
constexpr int64_t kMaxChunks = 1024;
// Grid caps: blocks loop over the work items beyond the grid.
constexpr int kMaxBlocksPerSm = 16;
constexpr int kElementwiseBlocksPerSm = 8;

// ---------------------------------------------------------------------------
// Small device helpers
// ---------------------------------------------------------------------------

// Per-(n, c) sums of the backward: sum(dz) and sum(dz * (x - mean)).
template <typename T>
struct GradSums {
  T dz;
  T dzxc;
};

// What the forward's elementwise pass needs per (n, c).
template <typename T>
struct ChannelParams {
  T mean;
  T scale;  // channel_scale(rstd, gamma_c)
  T beta;
};

// What the backward's elementwise pass needs per (n, c): the forward's
// parameters (to recompute the fused ReLU's mask) and the gradient coefficients.
template <typename T>
struct GradParams {
  T mean;
  T scale;  // channel_scale(rstd, gamma_c), also the c1 of input_grad
  T beta;
  math::InputGradCoefs<T> k;
};

C10_HOST_DEVICE inline int64_t imin(int64_t a, int64_t b) {
  return a < b ? a : b;
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

inline int64_t round_up(int64_t a, int64_t b) {
  return ceil_div(a, b) * b;
}

inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return std::max(lo, std::min(v, hi));
}

// Division by a run-time constant as a multiply-high and a shift
// (Granlund & Montgomery), exact for every n < 2^63. The elementwise kernels
// use it to find an element's (n, c) row without a 64-bit division per element.
struct FastDivider {
  uint64_t divisor;
  uint64_t magic;
  unsigned shift;

  C10_HOST_DEVICE uint64_t div(uint64_t n) const {
#if defined(__CUDA_ARCH__)
    const uint64_t high = __umul64hi(n, magic);
#else
    const uint64_t high = static_cast<uint64_t>((static_cast<unsigned __int128>(n) * magic) >> 64);
#endif
    return (high + n) >> shift;
  }
};

// shift = ceil(log2(d)), magic = floor(2^64 * (2^shift - d) / d) + 1, so that
// n / d = (mulhi(n, magic) + n) >> shift. A zero divisor (never used to divide)
// is treated as 1.
FastDivider make_divider(int64_t divisor) {
  const uint64_t d = divisor > 0 ? static_cast<uint64_t>(divisor) : 1;
  unsigned shift = 0;
  while (shift < 63 && (uint64_t{1} << shift) < d) {
    ++shift;
  }
  const unsigned __int128 numerator = static_cast<unsigned __int128>((uint64_t{1} << shift) - d) << 64;
  const uint64_t magic = static_cast<uint64_t>(numerator / d + 1);
  return FastDivider{d, magic, shift};
}

template <typename T>
__device__ __forceinline__ Moments<T> combine(const Moments<T>& a, const Moments<T>& b) {
  return math::moments_combine(a, b);
}

template <typename T>
__device__ __forceinline__ GradSums<T> combine(const GradSums<T>& a, const GradSums<T>& b) {
  return GradSums<T>{a.dz + b.dz, a.dzxc + b.dzxc};
}

template <typename T>
__device__ __forceinline__ Moments<T> shfl_down(const Moments<T>& m, int offset) {
  return Moments<T>{
      __shfl_down_sync(kFullMask, m.count, offset),
      __shfl_down_sync(kFullMask, m.mean, offset),
      __shfl_down_sync(kFullMask, m.m2, offset)};
}

template <typename T>
__device__ __forceinline__ GradSums<T> shfl_down(const GradSums<T>& s, int offset) {
  return GradSums<T>{
      __shfl_down_sync(kFullMask, s.dz, offset), __shfl_down_sync(kFullMask, s.dzxc, offset)};
}

// The value of lane `src` (each lane may name its own). Every lane must call.
template <typename T>
__device__ __forceinline__ Moments<T> shfl_from(const Moments<T>& m, int src) {
  return Moments<T>{
      __shfl_sync(kFullMask, m.count, src), __shfl_sync(kFullMask, m.mean, src),
      __shfl_sync(kFullMask, m.m2, src)};
}

template <typename T>
__device__ __forceinline__ GradSums<T> shfl_from(const GradSums<T>& s, int src) {
  return GradSums<T>{__shfl_sync(kFullMask, s.dz, src), __shfl_sync(kFullMask, s.dzxc, src)};
}

// Combines, within a warp, the values of lanes that are equal modulo `width`
// (a power of two, 1..32) as a tree: afterwards lane l < width holds the
// combination of lanes l, l + width, l + 2 * width, ... Every lane must call.
template <typename R>
__device__ __forceinline__ R warp_reduce(R v, int width) {
  for (int offset = kWarpSize / 2; offset >= width; offset >>= 1) {
    v = combine(v, shfl_down(v, offset));
  }
  return v;
}

// Combines, within each segment of `seg` consecutive lanes (a power of two,
// 1..32, segments aligned to multiples of seg), the segment's values as a
// tree, then gives every lane its segment's result. Every lane must call.
template <typename R>
__device__ __forceinline__ R segment_reduce(R v, int seg) {
  for (int offset = seg / 2; offset >= 1; offset >>= 1) {
    v = combine(v, shfl_down(v, offset));
  }
  const int lane = threadIdx.x % kWarpSize;
  return shfl_from(v, lane - lane % seg);
}

// Combines the values of all threads of a 1-D block (a multiple of 32 threads,
// at most kBlockThreads): warp shuffles, then one warp over the warps' results
// in shared memory. The result is valid in thread 0. Every thread must call;
// `shared` holds kMaxWarps values and may be reused right after the return.
template <typename R>
__device__ R block_reduce(R v, R identity, R* shared) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  v = warp_reduce(v, 1);
  if (lane == 0) {
    shared[warp] = v;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? shared[lane] : identity;
    v = warp_reduce(v, 1);
  }
  __syncthreads();
  return v;
}

// Reduction of a tile block: thread t is channel lane t % tc of row lane
// t / tc (tc a power of two, 1..32). Combines each channel lane's values over
// all row lanes: shuffles within the warp, then shared memory across warps.
// The result for channel lane t is valid in thread t < tc. Every thread must
// call; `shared` holds kMaxWarps * kWarpSize values.
template <typename R>
__device__ R tile_reduce(R v, int tc, R* shared) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  v = warp_reduce(v, tc);
  if (lane < tc) {
    shared[warp * kWarpSize + lane] = v;
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < tc) {
    for (int w = 1; w < warps; ++w) {
      v = combine(v, shared[w * kWarpSize + threadIdx.x]);
    }
  }
  __syncthreads();
  return v;
}

// VEC consecutive elements loaded or stored with one instruction.
template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) Pack {
  scalar_t v[VEC];
};

template <typename scalar_t>
constexpr int pack_width() {
  return kPackBytes / static_cast<int>(sizeof(scalar_t));
}

template <int VEC, typename scalar_t>
__device__ __forceinline__ Pack<scalar_t, VEC> load_pack(const scalar_t* p, int64_t i) {
  return reinterpret_cast<const Pack<scalar_t, VEC>*>(p)[i];
}

template <int VEC, typename scalar_t>
__device__ __forceinline__ void store_pack(scalar_t* p, int64_t i, const Pack<scalar_t, VEC>& v) {
  reinterpret_cast<Pack<scalar_t, VEC>*>(p)[i] = v;
}

// gamma_c or beta_c in the accumulation type, or `absent` without the parameter.
template <typename acc_t, typename param_t>
__device__ __forceinline__ acc_t param_or(const param_t* p, int64_t c, acc_t absent) {
  return p == nullptr ? absent : static_cast<acc_t>(p[c]);
}

// dz: dy, or with the fused ReLU dy where the recomputed pre-activation
// z = normalize(x, mean, scale, beta) is positive (exactly the forward's z).
template <typename acc_t>
__device__ __forceinline__ acc_t output_grad(
    acc_t dy, acc_t x, acc_t mean, acc_t scale, acc_t beta, bool relu) {
  return relu ? math::relu_grad(dy, math::normalize(x, mean, scale, beta)) : dy;
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Index maps of the elementwise kernels, in units of VEC-element vectors.
// channels-first: `per_row` = vectors per (n, c) row (HxW / VEC); a vector
//   lies in one row, its row is v / per_row.
// channels-last: `per_row` = vectors per pixel (C / VEC), `per_sample` =
//   pixels per sample (HxW); vector v holds channels cv * VEC ... of pixel
//   v / per_row, whose sample is pixel / per_sample.
struct ElementwiseMap {
  FastDivider per_row;
  FastDivider per_sample;
  int64_t C;
};

// Row n * C + c of the vector's first element; in channels-last the vector's
// element j is in row (first + j), in channels-first all share the first's.
template <bool kChannelsLast, int VEC>
__device__ __forceinline__ int64_t first_row_of(int64_t v, const ElementwiseMap& map) {
  const int64_t row = static_cast<int64_t>(map.per_row.div(static_cast<uint64_t>(v)));
  if (!kChannelsLast) {
    return row;
  }
  const int64_t cv = v - row * static_cast<int64_t>(map.per_row.divisor);
  const int64_t n = static_cast<int64_t>(map.per_sample.div(static_cast<uint64_t>(row)));
  return n * map.C + cv * VEC;
}

// ---------------------------------------------------------------------------
// Forward kernels
// ---------------------------------------------------------------------------

// Channels-first partial moments: work item = (group, chunk) of the group's
// contiguous span of `group_elems` elements; writes partial[item].
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kBlockThreads) cf_moments_kernel(
    const scalar_t* __restrict__ x,
    int64_t group_elems,
    int64_t chunk_len,
    int64_t chunks,
    int64_t items,
    Moments<acc_type<scalar_t>>* __restrict__ partial) {
  using acc_t = acc_type<scalar_t>;
  __shared__ Moments<acc_t> shared[kMaxWarps];
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t group = item / chunks;
    const int64_t begin = (item - group * chunks) * chunk_len;
    const int64_t end = imin(begin + chunk_len, group_elems);
    const scalar_t* span = x + group * group_elems;
    Moments<acc_t> m = math::empty_moments<acc_t>();
    for (int64_t i = begin / VEC + threadIdx.x; i < end / VEC; i += blockDim.x) {
      const Pack<scalar_t, VEC> pack = load_pack<VEC>(span, i);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        m = math::moments_push(m, static_cast<acc_t>(pack.v[j]));
      }
    }
    m = block_reduce(m, math::empty_moments<acc_t>(), shared);
    if (threadIdx.x == 0) {
      partial[item] = m;
    }
  }
}

// A channels-last work item = (n, channel tile, row chunk), decoded for the
// thread in channel lane `lane_c`: its sample, channel, chunk and row range.
struct ClItem {
  int64_t n;
  int64_t c;
  int64_t chunk;
  int64_t begin;
  int64_t end;
};

__device__ __forceinline__ ClItem cl_item(
    int64_t item, int64_t chunks, int64_t ctiles, int tc, int lane_c, int64_t chunk_rows, int64_t HxW) {
  const int64_t chunk = item % chunks;
  const int64_t rest = item / chunks;
  const int64_t n = rest / ctiles;
  const int64_t begin = chunk * chunk_rows;
  return ClItem{n, (rest - n * ctiles) * tc + lane_c, chunk, begin, imin(begin + chunk_rows, HxW)};
}

// Channels-last partial moments: work item = (n, channel tile, row chunk);
// thread (row lane, channel lane) pushes every row_lanes-th row of its channel.
// Writes partial[(n * C + c) * chunks + chunk].
template <typename scalar_t>
__global__ void __launch_bounds__(kBlockThreads) cl_moments_kernel(
    const scalar_t* __restrict__ x,
    int64_t HxW,
    int64_t C,
    int tc,
    int64_t ctiles,
    int64_t chunk_rows,
    int64_t chunks,
    int64_t items,
    Moments<acc_type<scalar_t>>* __restrict__ partial) {
  using acc_t = acc_type<scalar_t>;
  __shared__ Moments<acc_t> shared[kMaxWarps * kWarpSize];
  const int lane_c = threadIdx.x % tc;
  const int lane_r = threadIdx.x / tc;
  const int row_lanes = blockDim.x / tc;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const ClItem it = cl_item(item, chunks, ctiles, tc, lane_c, chunk_rows, HxW);
    const int64_t chunk = it.chunk, n = it.n, c = it.c, begin = it.begin, end = it.end;
    Moments<acc_t> m = math::empty_moments<acc_t>();
    if (c < C) {
      const scalar_t* column = x + n * HxW * C + c;
      for (int64_t s = begin + lane_r; s < end; s += row_lanes) {
        m = math::moments_push(m, static_cast<acc_t>(column[s * C]));
      }
    }
    m = tile_reduce(m, tc, shared);
    if (static_cast<int>(threadIdx.x) < tc && c < C) {
      partial[(n * C + c) * chunks + chunk] = m;
    }
  }
}

// One warp per group (n, g): combines the group's `parts` partials (contiguous
// at partial + group * parts), writes mean and rstd, and the group's rows of
// the per-(n, c) table. parts == 0 (an empty input) gives the NaN statistics
// of an empty group.
template <typename acc_t, typename param_t>
__global__ void __launch_bounds__(kWarpKernelThreads) finalize_moments_kernel(
    const Moments<acc_t>* __restrict__ partial,
    int64_t parts,
    int64_t N,
    int64_t C,
    int64_t G,
    acc_t eps,
    const param_t* __restrict__ gamma,
    const param_t* __restrict__ beta,
    acc_t* __restrict__ mean_out,
    acc_t* __restrict__ rstd_out,
    ChannelParams<acc_t>* __restrict__ table) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t first_warp = global_thread() / kWarpSize;
  const int64_t warps = grid_threads() / kWarpSize;
  const int64_t D = C / G;
  for (int64_t group = first_warp; group < N * G; group += warps) {
    Moments<acc_t> m = math::empty_moments<acc_t>();
    for (int64_t j = lane; j < parts; j += kWarpSize) {
      m = combine(m, partial[group * parts + j]);
    }
    m = shfl_from(warp_reduce(m, 1), 0);
    const acc_t mean = math::mean_from_moments(m);
    const acc_t rstd = math::rstd_from_moments(m, eps);
    if (lane == 0) {
      mean_out[group] = mean;
      rstd_out[group] = rstd;
    }
    const int64_t n = group / G;
    const int64_t first_c = (group - n * G) * D;
    for (int64_t j = lane; j < D; j += kWarpSize) {
      const int64_t c = first_c + j;
      table[n * C + c] = ChannelParams<acc_t>{
          mean, math::channel_scale(rstd, param_or(gamma, c, acc_t(1))),
          param_or(beta, c, acc_t(0))};
    }
  }
}

// y = normalize(x) (+ ReLU) for every element, VEC elements per step.
template <typename scalar_t, int VEC, bool kChannelsLast>
__global__ void __launch_bounds__(kBlockThreads) normalize_kernel(
    const scalar_t* __restrict__ x,
    const ChannelParams<acc_type<scalar_t>>* __restrict__ table,
    ElementwiseMap map,
    int64_t num_vecs,
    bool relu,
    scalar_t* __restrict__ y) {
  using acc_t = acc_type<scalar_t>;
  for (int64_t v = global_thread(); v < num_vecs; v += grid_threads()) {
    const int64_t row = first_row_of<kChannelsLast, VEC>(v, map);
    const Pack<scalar_t, VEC> in = load_pack<VEC>(x, v);
    Pack<scalar_t, VEC> out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const ChannelParams<acc_t> p = table[kChannelsLast ? row + j : row];
      acc_t z = math::normalize(static_cast<acc_t>(in.v[j]), p.mean, p.scale, p.beta);
      if (relu) {
        z = math::relu(z);
      }
      out.v[j] = static_cast<scalar_t>(z);
    }
    store_pack<VEC>(y, v, out);
  }
}

// ---------------------------------------------------------------------------
// Backward kernels
// ---------------------------------------------------------------------------


// Sums of one thread's share of a row: dz and dz * (x - mean), with dz from
// output_grad. `mean`, `scale`, `beta` are the row's forward parameters.
template <typename acc_t>
__device__ __forceinline__ void accumulate_grad(
    GradSums<acc_t>& sums, acc_t dy, acc_t x, acc_t mean, acc_t scale, acc_t beta, bool relu) {
  const acc_t dz = output_grad(dy, x, mean, scale, beta, relu);
  sums.dz += dz;
  sums.dzxc += dz * (x - mean);
}

// Channels-first partial sums: one warp per (n, c) row and column chunk; work
// item = (tile of `warps` consecutive rows, chunk). Writes
// partial[row * chunks + chunk] for row = n * C + c.
template <typename scalar_t, typename param_t, int VEC>
__global__ void __launch_bounds__(kBlockThreads) cf_grad_sums_kernel(
    const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ x,
    const acc_type<scalar_t>* __restrict__ mean,
    const acc_type<scalar_t>* __restrict__ rstd,
    const param_t* __restrict__ gamma,
    const param_t* __restrict__ beta,
    bool relu,
    int64_t rows,
    int64_t C,
    int64_t G,
    int64_t HxW,
    int64_t chunk_cols,
    int64_t chunks,
    int64_t items,
    GradSums<acc_type<scalar_t>>* __restrict__ partial) {
  using acc_t = acc_type<scalar_t>;
  const int lane = threadIdx.x % kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  const int64_t D = C / G;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t tile = item / chunks;
    const int64_t chunk = item - tile * chunks;
    const int64_t row = tile * warps + threadIdx.x / kWarpSize;
    if (row >= rows) {
      continue;  // the whole warp skips: the reduction below is per warp
    }
    const int64_t n = row / C;
    const int64_t c = row - n * C;
    const int64_t stat = n * G + c / D;
    const acc_t mu = mean[stat];
    const acc_t scale = math::channel_scale(rstd[stat], param_or(gamma, c, acc_t(1)));
    const acc_t b = param_or(beta, c, acc_t(0));
    const int64_t begin = chunk * chunk_cols;
    const int64_t end = imin(begin + chunk_cols, HxW);
    const scalar_t* x_row = x + row * HxW;
    const scalar_t* dy_row = dy + row * HxW;
    GradSums<acc_t> sums{acc_t(0), acc_t(0)};
    for (int64_t i = begin / VEC + lane; i < end / VEC; i += kWarpSize) {
      const Pack<scalar_t, VEC> xs = load_pack<VEC>(x_row, i);
      const Pack<scalar_t, VEC> dys = load_pack<VEC>(dy_row, i);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        accumulate_grad(
            sums, static_cast<acc_t>(dys.v[j]), static_cast<acc_t>(xs.v[j]), mu, scale, b, relu);
      }
    }
    sums = warp_reduce(sums, 1);
    if (lane == 0) {
      partial[row * chunks + chunk] = sums;
    }
  }
}

// Channels-last partial sums: tiles of channels x row chunks as in
// cl_moments_kernel. Writes partial[(n * C + c) * chunks + chunk].
template <typename scalar_t, typename param_t>
__global__ void __launch_bounds__(kBlockThreads) cl_grad_sums_kernel(
    const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ x,
    const acc_type<scalar_t>* __restrict__ mean,
    const acc_type<scalar_t>* __restrict__ rstd,
    const param_t* __restrict__ gamma,
    const param_t* __restrict__ beta,
    bool relu,
    int64_t HxW,
    int64_t C,
    int64_t G,
    int tc,
    int64_t ctiles,
    int64_t chunk_rows,
    int64_t chunks,
    int64_t items,
    GradSums<acc_type<scalar_t>>* __restrict__ partial) {
  using acc_t = acc_type<scalar_t>;
  __shared__ GradSums<acc_t> shared[kMaxWarps * kWarpSize];
  const int lane_c = static_cast<int>(threadIdx.x) % tc;
  const int lane_r = static_cast<int>(threadIdx.x) / tc;
  const int row_lanes = blockDim.x / tc;
  const int64_t D = C / G;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const ClItem it = cl_item(item, chunks, ctiles, tc, lane_c, chunk_rows, HxW);
    const int64_t chunk = it.chunk, n = it.n, c = it.c, begin = it.begin, end = it.end;
    GradSums<acc_t> sums{acc_t(0), acc_t(0)};
    if (c < C) {
      const int64_t stat = n * G + c / D;
      const acc_t mu = mean[stat];
      const acc_t scale = math::channel_scale(rstd[stat], param_or(gamma, c, acc_t(1)));
      const acc_t b = param_or(beta, c, acc_t(0));
      const int64_t column = n * HxW * C + c;
      for (int64_t s = begin + lane_r; s < end; s += row_lanes) {
        const int64_t i = column + s * C;
        accumulate_grad(
            sums, static_cast<acc_t>(dy[i]), static_cast<acc_t>(x[i]), mu, scale, b, relu);
      }
    }
    sums = tile_reduce(sums, tc, shared);
    if (static_cast<int>(threadIdx.x) < tc && c < C) {
      partial[(n * C + c) * chunks + chunk] = sums;
    }
  }
}

// One warp per group (n, g): totals of each channel over its `chunks`
// partials (written to totals[n * C + c] for channel_grads_kernel), their
// gamma-weighted sums over the group, the input-gradient coefficients, and the
// group's rows of the per-(n, c) table of input_grad_kernel.
template <typename acc_t, typename param_t>
__global__ void __launch_bounds__(kWarpKernelThreads) grad_coefs_kernel(
    const GradSums<acc_t>* __restrict__ partial,
    int64_t chunks,
    const acc_t* __restrict__ mean,
    const acc_t* __restrict__ rstd,
    const param_t* __restrict__ gamma,
    const param_t* __restrict__ beta,
    int64_t N,
    int64_t C,
    int64_t G,
    int64_t HxW,
    GradSums<acc_t>* __restrict__ totals,
    GradParams<acc_t>* __restrict__ table) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t first_warp = global_thread() / kWarpSize;
  const int64_t warps = grid_threads() / kWarpSize;
  const int64_t D = C / G;
  const acc_t count = static_cast<acc_t>(D * HxW);
  for (int64_t group = first_warp; group < N * G; group += warps) {
    const int64_t n = group / G;
    const int64_t first_c = (group - n * G) * D;
    GradSums<acc_t> weighted{acc_t(0), acc_t(0)};
    for (int64_t j = lane; j < D; j += kWarpSize) {
      const int64_t c = first_c + j;
      const int64_t row = n * C + c;
      GradSums<acc_t> total{acc_t(0), acc_t(0)};
      for (int64_t k = 0; k < chunks; ++k) {
        total = combine(total, partial[row * chunks + k]);
      }
      totals[row] = total;
      const acc_t g = param_or(gamma, c, acc_t(1));
      weighted.dz += g * total.dz;
      weighted.dzxc += g * total.dzxc;
    }
    weighted = shfl_from(warp_reduce(weighted, 1), 0);
    const acc_t mu = mean[group];
    const acc_t r = rstd[group];
    const math::InputGradCoefs<acc_t> k = math::input_grad_coefs(weighted.dz, weighted.dzxc, r, count);
    for (int64_t j = lane; j < D; j += kWarpSize) {
      const int64_t c = first_c + j;
      table[n * C + c] = GradParams<acc_t>{
          mu, math::channel_scale(r, param_or(gamma, c, acc_t(1))), param_or(beta, c, acc_t(0)), k};
    }
  }
}

// dgamma_c = sum_n weight_grad_term(sum_dzxc[n, c], rstd[n, g]) and
// dbeta_c = sum_n sum_dz[n, c]: tiles of 32 channels (coalesced over c) with
// the block's row lanes running over n.
template <typename acc_t, typename param_t>
__global__ void __launch_bounds__(kBlockThreads) channel_grads_kernel(
    const GradSums<acc_t>* __restrict__ totals,
    const acc_t* __restrict__ rstd,
    int64_t N,
    int64_t C,
    int64_t G,
    param_t* __restrict__ dgamma,
    param_t* __restrict__ dbeta) {
  __shared__ GradSums<acc_t> shared[kMaxWarps * kWarpSize];
  const int lane_c = threadIdx.x % kWarpSize;
  const int lane_n = threadIdx.x / kWarpSize;
  const int n_lanes = blockDim.x / kWarpSize;
  const int64_t D = C / G;
  const int64_t ctiles = (C + kWarpSize - 1) / kWarpSize;
  for (int64_t tile = blockIdx.x; tile < ctiles; tile += gridDim.x) {
    const int64_t c = tile * kWarpSize + lane_c;
    // .dz accumulates dbeta, .dzxc dgamma.
    GradSums<acc_t> sums{acc_t(0), acc_t(0)};
    if (c < C) {
      const int64_t g = c / D;
      for (int64_t n = lane_n; n < N; n += n_lanes) {
        const GradSums<acc_t> t = totals[n * C + c];
        sums.dz += t.dz;
        sums.dzxc += math::weight_grad_term(t.dzxc, rstd[n * G + g]);
      }
    }
    sums = tile_reduce(sums, kWarpSize, shared);
    if (static_cast<int>(threadIdx.x) < kWarpSize && c < C) {
      dgamma[c] = static_cast<param_t>(sums.dzxc);
      dbeta[c] = static_cast<param_t>(sums.dz);
    }
  }
}

// dx = input_grad(dz, x, ...) for every element, VEC elements per step.
template <typename scalar_t, int VEC, bool kChannelsLast>
__global__ void __launch_bounds__(kBlockThreads) input_grad_kernel(
    const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ x,
    const GradParams<acc_type<scalar_t>>* __restrict__ table,
    ElementwiseMap map,
    int64_t num_vecs,
    bool relu,
    scalar_t* __restrict__ dx) {
  using acc_t = acc_type<scalar_t>;
  for (int64_t v = global_thread(); v < num_vecs; v += grid_threads()) {
    const int64_t row = first_row_of<kChannelsLast, VEC>(v, map);
    const Pack<scalar_t, VEC> xs = load_pack<VEC>(x, v);
    const Pack<scalar_t, VEC> dys = load_pack<VEC>(dy, v);
    Pack<scalar_t, VEC> out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const GradParams<acc_t> p = table[kChannelsLast ? row + j : row];
      const acc_t xv = static_cast<acc_t>(xs.v[j]);
      const acc_t dz = output_grad(static_cast<acc_t>(dys.v[j]), xv, p.mean, p.scale, p.beta, relu);
      out.v[j] = static_cast<scalar_t>(math::input_grad(dz, xv, p.mean, p.scale, p.k));
    }
    store_pack<VEC>(dx, v, out);
  }
}

// ---------------------------------------------------------------------------
// Inputs with HxW = 1
// ---------------------------------------------------------------------------

// Where a lane of an HxW = 1 kernel works: its segment owns group
// `first + lane / seg` (of `groups`), and the lane takes that group's elements
// j = lane % seg, + seg, ... < D. `first` is the same for the whole warp, so
// loops over it keep every lane of the warp together for the shuffles.
struct SegmentLane {
  int offset;        // lane % seg
  int64_t per_warp;  // groups per warp: 32 / seg
};

__device__ __forceinline__ SegmentLane segment_lane(int seg) {
  const int lane = threadIdx.x % kWarpSize;
  return SegmentLane{lane % seg, kWarpSize / seg};
}

// Forward of an input with HxW = 1: group (n, g) is x[group * D, (group + 1) * D)
// (group = n * G + g, channel c = g * D + j). Writes y, mean and rstd.
template <typename scalar_t, typename param_t>
__global__ void __launch_bounds__(kBlockThreads) nc_forward_kernel(
    const scalar_t* __restrict__ x,
    const param_t* __restrict__ gamma,
    const param_t* __restrict__ beta,
    int64_t groups,
    int64_t G,
    int64_t D,
    int seg,
    acc_type<scalar_t> eps,
    bool relu,
    scalar_t* __restrict__ y,
    acc_type<scalar_t>* __restrict__ mean_out,
    acc_type<scalar_t>* __restrict__ rstd_out) {
  using acc_t = acc_type<scalar_t>;
  const SegmentLane sl = segment_lane(seg);
  const int64_t warps = grid_threads() / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t first = global_thread() / kWarpSize * sl.per_warp; first < groups; first += warps * sl.per_warp) {
    const int64_t group = first + lane / seg;
    const bool active = group < groups;
    const scalar_t* xg = x + group * D;
    Moments<acc_t> m = math::empty_moments<acc_t>();
    if (active) {
      for (int64_t j = sl.offset; j < D; j += seg) {
        m = math::moments_push(m, static_cast<acc_t>(xg[j]));
      }
    }
    m = segment_reduce(m, seg);
    if (!active) {
      continue;
    }
    const acc_t mean = math::mean_from_moments(m);
    const acc_t rstd = math::rstd_from_moments(m, eps);
    if (sl.offset == 0) {
      mean_out[group] = mean;
      rstd_out[group] = rstd;
    }
    const int64_t c0 = (group % G) * D;
    for (int64_t j = sl.offset; j < D; j += seg) {
      const int64_t c = c0 + j;
      const acc_t scale = math::channel_scale(rstd, param_or(gamma, c, acc_t(1)));
      acc_t z = math::normalize(static_cast<acc_t>(xg[j]), mean, scale, param_or(beta, c, acc_t(0)));
      if (relu) {
        z = math::relu(z);
      }
      y[group * D + j] = static_cast<scalar_t>(z);
    }
  }
}

// Backward of an input with HxW = 1 (layout as in nc_forward_kernel): dx, and
// each element's own sums dz and dz * (x - mean) in totals[n * C + c] for
// channel_grads_kernel.
template <typename scalar_t, typename param_t>
__global__ void __launch_bounds__(kBlockThreads) nc_backward_kernel(
    const scalar_t* __restrict__ dy,
    const scalar_t* __restrict__ x,
    const acc_type<scalar_t>* __restrict__ mean,
    const acc_type<scalar_t>* __restrict__ rstd,
    const param_t* __restrict__ gamma,
    const param_t* __restrict__ beta,
    bool relu,
    int64_t groups,
    int64_t G,
    int64_t D,
    int seg,
    scalar_t* __restrict__ dx,
    GradSums<acc_type<scalar_t>>* __restrict__ totals) {
  using acc_t = acc_type<scalar_t>;
  const SegmentLane sl = segment_lane(seg);
  const int64_t warps = grid_threads() / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t first = global_thread() / kWarpSize * sl.per_warp; first < groups; first += warps * sl.per_warp) {
    const int64_t group = first + lane / seg;
    const bool active = group < groups;
    const int64_t c0 = (group % G) * D;
    const acc_t mu = active ? mean[group] : acc_t(0);
    const acc_t r = active ? rstd[group] : acc_t(0);
    GradSums<acc_t> weighted{acc_t(0), acc_t(0)};
    if (active) {
      for (int64_t j = sl.offset; j < D; j += seg) {
        const int64_t c = c0 + j;
        const int64_t i = group * D + j;
        const acc_t g = param_or(gamma, c, acc_t(1));
        const acc_t xv = static_cast<acc_t>(x[i]);
        const acc_t dz = output_grad(
            static_cast<acc_t>(dy[i]), xv, mu, math::channel_scale(r, g), param_or(beta, c, acc_t(0)), relu);
        const GradSums<acc_t> own{dz, dz * (xv - mu)};
        totals[i] = own;
        weighted.dz += g * own.dz;
        weighted.dzxc += g * own.dzxc;
      }
    }
    weighted = segment_reduce(weighted, seg);
    if (!active) {
      continue;
    }
    const math::InputGradCoefs<acc_t> k =
        math::input_grad_coefs(weighted.dz, weighted.dzxc, r, static_cast<acc_t>(D));
    for (int64_t j = sl.offset; j < D; j += seg) {
      const int64_t c = c0 + j;
      const int64_t i = group * D + j;
      const acc_t scale = math::channel_scale(r, param_or(gamma, c, acc_t(1)));
      const acc_t xv = static_cast<acc_t>(x[i]);
      const acc_t dz = output_grad(static_cast<acc_t>(dy[i]), xv, mu, scale, param_or(beta, c, acc_t(0)), relu);
      dx[i] = static_cast<scalar_t>(math::input_grad(dz, xv, mu, scale, k));
    }
  }
}

// ---------------------------------------------------------------------------
// Host side: splitting plans, workspace, launches
// ---------------------------------------------------------------------------

// Raises a c10::Error naming `kernel` if its launch failed.
void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(
      err == cudaSuccess, "gn_detection GroupNorm: CUDA kernel ", kernel,
      " failed to launch: ", cudaGetErrorString(err));
}

// Raises a c10::Error naming `what` if a CUDA runtime call failed.
void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(
      err == cudaSuccess, "gn_detection GroupNorm: ", what, " failed: ", cudaGetErrorString(err));
}

bool is_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kPackBytes == 0;
}

int64_t element_count(const GroupNormSizes& s) {
  return s.N * s.C * s.HxW;
}

int sm_count(const LaunchTarget& t) {
  return std::max(t.num_sms, 1);
}

// Grid of a kernel whose blocks loop over `work` items: at most `per_sm`
// blocks per SM, at least one.
int grid_for(int64_t work, const LaunchTarget& t, int per_sm) {
  return static_cast<int>(clamp64(work, 1, static_cast<int64_t>(sm_count(t)) * per_sm));
}

// How a reduction pass splits its work. Its partials are laid out so that a
// group's are contiguous: partial[group * parts_per_group + j].
struct ReductionPlan {
  int64_t items = 0;            // work items the blocks loop over
  int64_t chunks = 0;           // spatial chunks per group (cf forward) or per (n, c)
  int64_t chunk_len = 0;        // elements (cf forward), columns (cf backward) or rows (cl) per chunk
  int threads = kBlockThreads;  // block size (cf forward only; others use kBlockThreads)
  int tc = 1;                   // channels-last: channel lanes per block (power of two <= 32)
  int64_t ctiles = 0;           // channels-last: channel tiles per sample
  int64_t parts_per_group = 0;  // partials per (n, g)
  int64_t num_partials = 0;
};

// Chunks to split an extent of `extent` into, given `rows` independent rows of
// work: enough for kTargetBlocksPerSm blocks per SM, none shorter than
// `min_len`, at most kMaxChunks.
int64_t choose_chunks(int64_t rows, int64_t extent, int64_t min_len, int num_sms) {
  const int64_t target = static_cast<int64_t>(num_sms) * kTargetBlocksPerSm;
  const int64_t most = clamp64(extent / min_len, 1, kMaxChunks);
  return clamp64(ceil_div(target, rows), 1, most);
}

// Channels-first forward: chunks of each group's contiguous span.
ReductionPlan plan_cf_moments(const GroupNormSizes& s, int num_sms) {
  ReductionPlan p;
  const int64_t groups = s.N * s.G;
  const int64_t group_elems = s.C / s.G * s.HxW;
  if (groups == 0 || group_elems == 0) {
    return p;
  }
  const int64_t chunks = choose_chunks(groups, group_elems, kMinBlockElems, num_sms);
  p.chunk_len = round_up(ceil_div(group_elems, chunks), kChunkAlign);
  p.chunks = ceil_div(group_elems, p.chunk_len);
  // Small spans get small blocks (about 8 elements per thread at least).
  p.threads = p.chunk_len >= 8 * 256 ? 256 : (p.chunk_len >= 8 * 128 ? 128 : 64);
  p.items = groups * p.chunks;
  p.parts_per_group = p.chunks;
  p.num_partials = p.items;
  return p;
}

// Channels-last, forward and backward: tiles of tc channels x chunks of rows.
ReductionPlan plan_cl_tiles(const GroupNormSizes& s, int num_sms) {
  ReductionPlan p;
  if (element_count(s) == 0) {
    return p;
  }
  while (p.tc < kWarpSize && p.tc < s.C) {
    p.tc *= 2;
  }
  p.ctiles = ceil_div(s.C, p.tc);
  const int64_t chunks = choose_chunks(s.N * p.ctiles, s.HxW, kMinBlockElems / p.tc, num_sms);
  p.chunk_len = ceil_div(s.HxW, chunks);
  p.chunks = ceil_div(s.HxW, p.chunk_len);
  p.items = s.N * p.ctiles * p.chunks;
  p.parts_per_group = s.C / s.G * p.chunks;
  p.num_partials = s.N * s.C * p.chunks;
  return p;
}

// Channels-first backward: tiles of kMaxWarps rows (one warp each) x column chunks.
ReductionPlan plan_cf_grad_sums(const GroupNormSizes& s, int num_sms) {
  ReductionPlan p;
  if (element_count(s) == 0) {
    return p;
  }
  const int64_t tiles = ceil_div(s.N * s.C, kMaxWarps);
  const int64_t chunks = choose_chunks(tiles, s.HxW, kMinWarpCols, num_sms);
  p.chunk_len = round_up(ceil_div(s.HxW, chunks), kChunkAlign);
  p.chunks = ceil_div(s.HxW, p.chunk_len);
  p.items = tiles * p.chunks;
  p.parts_per_group = s.C / s.G * p.chunks;
  p.num_partials = s.N * s.C * p.chunks;
  return p;
}

// Inputs with HxW = 1 take the nc_* kernels, which need no partials.
bool is_nc(const GroupNormSizes& s) {
  return s.HxW == 1;
}

ReductionPlan plan_forward(const GroupNormSizes& s, int num_sms) {
  if (is_nc(s)) {
    return ReductionPlan{};
  }
  return s.channels_last ? plan_cl_tiles(s, num_sms) : plan_cf_moments(s, num_sms);
}

ReductionPlan plan_backward(const GroupNormSizes& s, int num_sms) {
  if (is_nc(s)) {
    return ReductionPlan{};
  }
  return s.channels_last ? plan_cl_tiles(s, num_sms) : plan_cf_grad_sums(s, num_sms);
}

// Hands out consecutive, 256-byte aligned pieces of a workspace; with a null
// base it only counts the bytes (workspace size queries).
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}

  template <typename T>
  T* take(int64_t count) {
    offset_ = round_up(offset_, 256);
    T* piece = base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + offset_);
    offset_ += count * static_cast<int64_t>(sizeof(T));
    return piece;
  }

  int64_t bytes() const {
    return offset_;
  }

 private:
  char* base_;
  int64_t offset_ = 0;
};

template <typename acc_t>
struct ForwardBuffers {
  Moments<acc_t>* partial;
  ChannelParams<acc_t>* table;
};

template <typename acc_t>
ForwardBuffers<acc_t> carve_forward(Carver& carver, const GroupNormSizes& s, const ReductionPlan& plan) {
  ForwardBuffers<acc_t> b;
  b.partial = carver.take<Moments<acc_t>>(plan.num_partials);
  b.table = carver.take<ChannelParams<acc_t>>(is_nc(s) ? 0 : s.N * s.C);
  return b;
}

template <typename acc_t>
struct BackwardBuffers {
  GradSums<acc_t>* partial;
  GradSums<acc_t>* totals;
  GradParams<acc_t>* table;
};

template <typename acc_t>
BackwardBuffers<acc_t> carve_backward(Carver& carver, const GroupNormSizes& s, const ReductionPlan& plan) {
  BackwardBuffers<acc_t> b;
  b.partial = carver.take<GradSums<acc_t>>(plan.num_partials);
  b.totals = carver.take<GradSums<acc_t>>(s.N * s.C);
  b.table = carver.take<GradParams<acc_t>>(is_nc(s) ? 0 : s.N * s.C);
  return b;
}

// Launch shape of an elementwise pass: vectors of pack_width elements where
// rows are whole vectors and the pointers are 16-byte aligned, else scalars.
struct ElementwisePlan {
  bool vectorized;
  int64_t num_vecs;
  ElementwiseMap map;
  int blocks;
};

template <typename scalar_t>
ElementwisePlan plan_elementwise(const GroupNormSizes& s, bool aligned, const LaunchTarget& t) {
  constexpr int kVec = pack_width<scalar_t>();
  const int64_t row_len = s.channels_last ? s.C : s.HxW;
  ElementwisePlan e;
  e.vectorized = aligned && row_len % kVec == 0;
  const int64_t width = e.vectorized ? kVec : 1;
  e.num_vecs = element_count(s) / width;
  e.map.per_row = make_divider(row_len / width);
  e.map.per_sample = make_divider(s.channels_last ? s.HxW : 1);
  e.map.C = s.C;
  e.blocks = grid_for(ceil_div(e.num_vecs, kBlockThreads), t, kElementwiseBlocksPerSm);
  return e;
}

template <typename scalar_t>
void launch_moments(
    const GroupNormSizes& s, const ReductionPlan& plan, const scalar_t* x,
    Moments<acc_type<scalar_t>>* partial, const LaunchTarget& t) {
  if (plan.items == 0) {
    return;
  }
  const int blocks = grid_for(plan.items, t, kMaxBlocksPerSm);
  if (s.channels_last) {
    cl_moments_kernel<scalar_t><<<blocks, kBlockThreads, 0, t.stream>>>(
        x, s.HxW, s.C, plan.tc, plan.ctiles, plan.chunk_len, plan.chunks, plan.items, partial);
    check_launch("cl_moments_kernel");
    return;
  }
  constexpr int kVec = pack_width<scalar_t>();
  const int64_t group_elems = s.C / s.G * s.HxW;
  if (group_elems % kVec == 0 && is_aligned(x)) {
    cf_moments_kernel<scalar_t, kVec><<<blocks, plan.threads, 0, t.stream>>>(
        x, group_elems, plan.chunk_len, plan.chunks, plan.items, partial);
  } else {
    cf_moments_kernel<scalar_t, 1><<<blocks, plan.threads, 0, t.stream>>>(
        x, group_elems, plan.chunk_len, plan.chunks, plan.items, partial);
  }
  check_launch("cf_moments_kernel");
}

template <typename scalar_t>
void launch_normalize(
    const GroupNormSizes& s, const scalar_t* x, const ChannelParams<acc_type<scalar_t>>* table,
    bool relu, scalar_t* y, const LaunchTarget& t) {
  constexpr int kVec = pack_width<scalar_t>();
  const ElementwisePlan e = plan_elementwise<scalar_t>(s, is_aligned(x) && is_aligned(y), t);
  if (s.channels_last) {
    if (e.vectorized) {
      normalize_kernel<scalar_t, kVec, true>
          <<<e.blocks, kBlockThreads, 0, t.stream>>>(x, table, e.map, e.num_vecs, relu, y);
    } else {
      normalize_kernel<scalar_t, 1, true>
          <<<e.blocks, kBlockThreads, 0, t.stream>>>(x, table, e.map, e.num_vecs, relu, y);
    }
  } else {
    if (e.vectorized) {
      normalize_kernel<scalar_t, kVec, false>
          <<<e.blocks, kBlockThreads, 0, t.stream>>>(x, table, e.map, e.num_vecs, relu, y);
    } else {
      normalize_kernel<scalar_t, 1, false>
          <<<e.blocks, kBlockThreads, 0, t.stream>>>(x, table, e.map, e.num_vecs, relu, y);
    }
  }
  check_launch("normalize_kernel");
}

template <typename scalar_t, typename param_t>
void launch_grad_sums(
    const GroupNormSizes& s, const ReductionPlan& plan, const scalar_t* dy, const scalar_t* x,
    const acc_type<scalar_t>* mean, const acc_type<scalar_t>* rstd, const param_t* gamma,
    const param_t* beta, bool relu, GradSums<acc_type<scalar_t>>* partial, const LaunchTarget& t) {
  const int blocks = grid_for(plan.items, t, kMaxBlocksPerSm);
  if (s.channels_last) {
    cl_grad_sums_kernel<scalar_t, param_t><<<blocks, kBlockThreads, 0, t.stream>>>(
        dy, x, mean, rstd, gamma, beta, relu, s.HxW, s.C, s.G, plan.tc, plan.ctiles,
        plan.chunk_len, plan.chunks, plan.items, partial);
    check_launch("cl_grad_sums_kernel");
    return;
  }
  constexpr int kVec = pack_width<scalar_t>();
  if (s.HxW % kVec == 0 && is_aligned(x) && is_aligned(dy)) {
    cf_grad_sums_kernel<scalar_t, param_t, kVec><<<blocks, kBlockThreads, 0, t.stream>>>(
        dy, x, mean, rstd, gamma, beta, relu, s.N * s.C, s.C, s.G, s.HxW, plan.chunk_len,
        plan.chunks, plan.items, partial);
  } else {
    cf_grad_sums_kernel<scalar_t, param_t, 1><<<blocks, kBlockThreads, 0, t.stream>>>(
        dy, x, mean, rstd, gamma, beta, relu, s.N * s.C, s.C, s.G, s.HxW, plan.chunk_len,
        plan.chunks, plan.items, partial);
  }
  check_launch("cf_grad_sums_kernel");
}

template <typename scalar_t>
void launch_input_grad(
    const GroupNormSizes& s, const scalar_t* dy, const scalar_t* x,
    const GradParams<acc_type<scalar_t>>* table, bool relu, scalar_t* dx, const LaunchTarget& t) {
  constexpr int kVec = pack_width<scalar_t>();
  const ElementwisePlan e =
      plan_elementwise<scalar_t>(s, is_aligned(dy) && is_aligned(x) && is_aligned(dx), t);
  if (s.channels_last) {
    if (e.vectorized) {
      input_grad_kernel<scalar_t, kVec, true>
          <<<e.blocks, kBlockThreads, 0, t.stream>>>(dy, x, table, e.map, e.num_vecs, relu, dx);
    } else {
      input_grad_kernel<scalar_t, 1, true>
          <<<e.blocks, kBlockThreads, 0, t.stream>>>(dy, x, table, e.map, e.num_vecs, relu, dx);
    }
  } else {
    if (e.vectorized) {
      input_grad_kernel<scalar_t, kVec, false>
          <<<e.blocks, kBlockThreads, 0, t.stream>>>(dy, x, table, e.map, e.num_vecs, relu, dx);
    } else {
      input_grad_kernel<scalar_t, 1, false>
          <<<e.blocks, kBlockThreads, 0, t.stream>>>(dy, x, table, e.map, e.num_vecs, relu, dx);
    }
  }
  check_launch("input_grad_kernel");
}

// Lanes per group of the nc_* kernels: D rounded up to a power of two, at most
// a warp; and the grid that gives every group a segment (blocks loop beyond it).
int nc_segment(int64_t D) {
  int seg = 1;
  while (seg < kWarpSize && seg < D) {
    seg *= 2;
  }
  return seg;
}

int nc_blocks(int64_t groups, int seg, const LaunchTarget& t) {
  const int64_t groups_per_block = static_cast<int64_t>(kBlockThreads / kWarpSize) * (kWarpSize / seg);
  return grid_for(ceil_div(groups, groups_per_block), t, kMaxBlocksPerSm);
}

}  // namespace

// ---------------------------------------------------------------------------
// Entry points (group_norm_kernels.h)
// ---------------------------------------------------------------------------

template <typename acc_t>
int64_t group_norm_forward_workspace_bytes(const GroupNormSizes& sizes, int num_sms) {
  Carver carver(nullptr);
  carve_forward<acc_t>(carver, sizes, plan_forward(sizes, std::max(num_sms, 1)));
  return carver.bytes();
}

template <typename acc_t>
int64_t group_norm_backward_workspace_bytes(const GroupNormSizes& sizes, int num_sms) {
  Carver carver(nullptr);
  carve_backward<acc_t>(carver, sizes, plan_backward(sizes, std::max(num_sms, 1)));
  return carver.bytes();
}

template <typename scalar_t, typename param_t>
void launch_group_norm_forward(
    const GroupNormSizes& sizes,
    const scalar_t* x,
    const param_t* gamma,
    const param_t* beta,
    double eps,
    bool relu,
    scalar_t* y,
    acc_type<scalar_t>* mean,
    acc_type<scalar_t>* rstd,
    void* workspace,
    const LaunchTarget& target) {
  using acc_t = acc_type<scalar_t>;
  const int64_t groups = sizes.N * sizes.G;
  if (groups == 0) {
    return;
  }
  if (is_nc(sizes)) {
    const int64_t D = sizes.C / sizes.G;
    const int seg = nc_segment(D);
    nc_forward_kernel<scalar_t, param_t><<<nc_blocks(groups, seg, target), kBlockThreads, 0, target.stream>>>(
        x, gamma, beta, groups, sizes.G, D, seg, static_cast<acc_t>(eps), relu, y, mean, rstd);
    check_launch("nc_forward_kernel");
    return;
  }
  const ReductionPlan plan = plan_forward(sizes, sm_count(target));
  Carver carver(workspace);
  const ForwardBuffers<acc_t> buffers = carve_forward<acc_t>(carver, sizes, plan);

  launch_moments<scalar_t>(sizes, plan, x, buffers.partial, target);

  finalize_moments_kernel<acc_t, param_t>
      <<<grid_for(ceil_div(groups, kWarpKernelThreads / kWarpSize), target, kMaxBlocksPerSm),
         kWarpKernelThreads, 0, target.stream>>>(
          buffers.partial, plan.parts_per_group, sizes.N, sizes.C, sizes.G,
          static_cast<acc_t>(eps), gamma, beta, mean, rstd, buffers.table);
  check_launch("finalize_moments_kernel");

  if (element_count(sizes) > 0) {
    launch_normalize<scalar_t>(sizes, x, buffers.table, relu, y, target);
  }
}

template <typename scalar_t, typename param_t>
void launch_group_norm_backward(
    const GroupNormSizes& sizes,
    const scalar_t* dy,
    const scalar_t* x,
    const acc_type<scalar_t>* mean,
    const acc_type<scalar_t>* rstd,
    const param_t* gamma,
    const param_t* beta,
    bool relu,
    scalar_t* dx,
    param_t* dgamma,
    param_t* dbeta,
    void* workspace,
    const LaunchTarget& target) {
  using acc_t = acc_type<scalar_t>;
  if (element_count(sizes) == 0) {
    // Sums over nothing: zero gradients for weight and bias (all-zero bits are
    // 0.0 in every floating type).
    if (sizes.C > 0) {
      const size_t bytes = static_cast<size_t>(sizes.C) * sizeof(param_t);
      check_cuda(cudaMemsetAsync(dgamma, 0, bytes, target.stream), "cudaMemsetAsync of grad_weight");
      check_cuda(cudaMemsetAsync(dbeta, 0, bytes, target.stream), "cudaMemsetAsync of grad_bias");
    }
    return;
  }
  const ReductionPlan plan = plan_backward(sizes, sm_count(target));
  Carver carver(workspace);
  const BackwardBuffers<acc_t> buffers = carve_backward<acc_t>(carver, sizes, plan);
  const int64_t groups = sizes.N * sizes.G;

  if (is_nc(sizes)) {
    const int64_t D = sizes.C / sizes.G;
    const int seg = nc_segment(D);
    nc_backward_kernel<scalar_t, param_t><<<nc_blocks(groups, seg, target), kBlockThreads, 0, target.stream>>>(
        dy, x, mean, rstd, gamma, beta, relu, groups, sizes.G, D, seg, dx, buffers.totals);
    check_launch("nc_backward_kernel");
  } else {
    launch_grad_sums<scalar_t, param_t>(
        sizes, plan, dy, x, mean, rstd, gamma, beta, relu, buffers.partial, target);
    grad_coefs_kernel<acc_t, param_t>
        <<<grid_for(ceil_div(groups, kWarpKernelThreads / kWarpSize), target, kMaxBlocksPerSm),
           kWarpKernelThreads, 0, target.stream>>>(
            buffers.partial, plan.chunks, mean, rstd, gamma, beta, sizes.N, sizes.C, sizes.G,
            sizes.HxW, buffers.totals, buffers.table);
    check_launch("grad_coefs_kernel");
  }

  channel_grads_kernel<acc_t, param_t>
      <<<grid_for(ceil_div(sizes.C, kWarpSize), target, kMaxBlocksPerSm), kBlockThreads, 0,
         target.stream>>>(buffers.totals, rstd, sizes.N, sizes.C, sizes.G, dgamma, dbeta);
  check_launch("channel_grads_kernel");

  if (!is_nc(sizes)) {
    launch_input_grad<scalar_t>(sizes, dy, x, buffers.table, relu, dx, target);
  }
}

// Instantiations: the (input, parameter) type pairs of the op.
template int64_t group_norm_forward_workspace_bytes<float>(const GroupNormSizes&, int);
template int64_t group_norm_forward_workspace_bytes<double>(const GroupNormSizes&, int);
template int64_t group_norm_backward_workspace_bytes<float>(const GroupNormSizes&, int);
template int64_t group_norm_backward_workspace_bytes<double>(const GroupNormSizes&, int);

#define GN_INSTANTIATE_LAUNCHERS(scalar_t, param_t)                                    \
  template void launch_group_norm_forward<scalar_t, param_t>(                          \
      const GroupNormSizes&, const scalar_t*, const param_t*, const param_t*, double,  \
      bool, scalar_t*, acc_type<scalar_t>*, acc_type<scalar_t>*, void*,                \
      const LaunchTarget&);                                                            \
  template void launch_group_norm_backward<scalar_t, param_t>(                         \
      const GroupNormSizes&, const scalar_t*, const scalar_t*, const acc_type<scalar_t>*, \
      const acc_type<scalar_t>*, const param_t*, const param_t*, bool, scalar_t*,      \
      param_t*, param_t*, void*, const LaunchTarget&);

GN_INSTANTIATE_LAUNCHERS(float, float)
GN_INSTANTIATE_LAUNCHERS(double, double)
GN_INSTANTIATE_LAUNCHERS(c10::Half, c10::Half)
GN_INSTANTIATE_LAUNCHERS(c10::Half, float)
GN_INSTANTIATE_LAUNCHERS(c10::BFloat16, c10::BFloat16)
GN_INSTANTIATE_LAUNCHERS(c10::BFloat16, float)

#undef GN_INSTANTIATE_LAUNCHERS

}  // namespace cuda_impl
}  // namespace gn_detection
