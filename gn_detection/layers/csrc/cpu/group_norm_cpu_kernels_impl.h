// CPU kernels of the GroupNorm op. Included by kernels_{baseline,avx2,avx512}.cpp,
// each of which defines GN_CPU_CAPABILITY (the namespace of its build) and may
// set a target instruction set before including this file.
//
// Vectorization uses GCC vector types as wide as the build's registers
// (GN_VEC_BYTES: 64 for AVX-512, 32 for AVX2, 16 for the baseline), so the
// same source compiles to each instruction set; vectors wider than the target's
// registers would be lowered through memory.
//
// Statistics: a group (channels-first) or a block of rows (channels-last) is
// cut into chunks that stay in L1/L2; each chunk's moments come from sums
// of deviations from a value of the group (math::moments_from_shifted_sums),
// in one pass while that value lies near the chunk's mean and in a corrected
// second pass otherwise, and chunks are merged pairwise in a tree
// (MomentsTree), so rounding grows with the log of the number of chunks and
// an input like 1e4 + randn loses nothing to cancellation.
//
// Work is split with at::parallel_for, so the kernels use the threads that
// torch.set_num_threads sets, like ATen's own ops.
//
// Channels-first (memory (N, C, HxW)): one task per (n, g); a group's D*HxW
// elements are contiguous, so the statistics pass and the normalize pass (and
// the two backward passes) of a task run back to back on data still in cache.
// While a small group is written, the groups a few KiB ahead are read ahead,
// so that memory reads and writes overlap instead of taking turns. A task
// writes its range of the output in aligned whole vectors (SpanWriter),
// whatever HxW is.
//
// Channels-last (memory (N, HxW, C)): vectorized along C. Samples whose data
// fits in L2 are one task each (statistics, then normalize, in cache); larger
// samples are cut into row blocks processed in parallel, with the per-group
// statistics merged between the two passes.
//
// Outputs too large to stay in cache (y, dx of kStreamBytes or more) are written
// with streaming (non-temporal) stores: a plain store first reads
// the line it writes (read-for-ownership), so streaming saves one of the two
// memory transfers per output line.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../group_norm_math.h"
#include "group_norm_cpu_kernels.h"

#ifndef GN_CPU_CAPABILITY
#error "GN_CPU_CAPABILITY must name the build of the CPU kernels"
#endif
#ifndef GN_VEC_BYTES
#error "GN_VEC_BYTES must give the vector width of the build of the CPU kernels"
#endif

// Everything below is compiled for GN_CPU_TARGET (headers above are not, so
// their inline functions stay baseline code in every build).
#define GN_STRINGIFY(x) #x
#define GN_PRAGMA(x) _Pragma(GN_STRINGIFY(x))
#ifdef GN_CPU_TARGET
#pragma GCC push_options
GN_PRAGMA(GCC target(GN_CPU_TARGET))
#endif

namespace gn_detection {
namespace cpu {
namespace GN_CPU_CAPABILITY {
namespace {

using math::Moments;

// For the statistics of one group, which run once per group: GCC would call
// them, and with groups of a few hundred elements (the RoI heads) the call, its
// stack frame and the moments returned through memory took a fifth of the
// forward's time.
#define GN_INLINE_PER_GROUP inline __attribute__((always_inline))

// ---------------------------------------------------------------------------
// Vectors and conversions.

constexpr int kVecBytes = GN_VEC_BYTES;

template <typename A>
struct VecTraits;
template <>
struct VecTraits<float> {
  typedef float type __attribute__((vector_size(kVecBytes)));
};
template <>
struct VecTraits<double> {
  typedef double type __attribute__((vector_size(kVecBytes)));
};
template <typename A>
using Vec = typename VecTraits<A>::type;
template <typename A>
constexpr int64_t kLanes = kVecBytes / sizeof(A);

// 16-bit storage of a float vector, and its 32-bit widening.
typedef uint16_t VecU16 __attribute__((vector_size(kVecBytes / 2)));
typedef uint32_t VecU32 __attribute__((vector_size(kVecBytes)));
typedef _Float16 VecF16 __attribute__((vector_size(kVecBytes / 2)));

// Loads and stores of a storage type S as its accumulation type A.
template <typename S, typename A>
struct Access {
  static_assert(sizeof(S) == sizeof(A), "plain access needs S == A");
  static inline Vec<A> load(const S* p) {
    Vec<A> v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static inline void store(S* p, Vec<A> v) {
    std::memcpy(p, &v, sizeof(v));
  }
  // Streaming store of a whole vector; p must be aligned to kVecBytes.
  static inline void stream(S* p, Vec<A> v) {
#if defined(__x86_64__)
    if constexpr (sizeof(A) == 4 && kVecBytes == 64) {
      _mm512_stream_ps(reinterpret_cast<float*>(p), reinterpret_cast<__m512>(v));
    } else if constexpr (sizeof(A) == 8 && kVecBytes == 64) {
      _mm512_stream_pd(reinterpret_cast<double*>(p), reinterpret_cast<__m512d>(v));
    } else if constexpr (sizeof(A) == 4 && kVecBytes == 32) {
      _mm256_stream_ps(reinterpret_cast<float*>(p), reinterpret_cast<__m256>(v));
    } else if constexpr (sizeof(A) == 8 && kVecBytes == 32) {
      _mm256_stream_pd(reinterpret_cast<double*>(p), reinterpret_cast<__m256d>(v));
    } else if constexpr (sizeof(A) == 4) {
      _mm_stream_ps(reinterpret_cast<float*>(p), reinterpret_cast<__m128>(v));
    } else {
      _mm_stream_pd(reinterpret_cast<double*>(p), reinterpret_cast<__m128d>(v));
    }
#else
    store(p, v);
#endif
  }
  static inline A load1(const S* p) {
    return *p;
  }
  static inline void store1(S* p, A v) {
    *p = v;
  }
};

template <>
struct Access<c10::BFloat16, float> {
  static inline Vec<float> load(const c10::BFloat16* p) {
    VecU16 bits;
    std::memcpy(&bits, p, sizeof(bits));
    const VecU32 wide = __builtin_convertvector(bits, VecU32) << 16;
    Vec<float> v;
    std::memcpy(&v, &wide, sizeof(v));
    return v;
  }
  // Round to nearest even, NaN to the canonical quiet NaN: bit for bit what
  // c10::BFloat16's conversion does.
  static inline void store(c10::BFloat16* p, Vec<float> v) {
    VecU32 bits;
    std::memcpy(&bits, &v, sizeof(bits));
    const VecU32 rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    const VecU32 nan = VecU32{} + 0x7FC0u;
    const VecU32 result = (v != v) ? nan : rounded;
    const VecU16 narrow = __builtin_convertvector(result, VecU16);
    std::memcpy(p, &narrow, sizeof(narrow));
  }
  static inline void stream(c10::BFloat16* p, Vec<float> v) {  // half a vector: not worth streaming
    store(p, v);
  }
  static inline float load1(const c10::BFloat16* p) {
    return static_cast<float>(*p);
  }
  static inline void store1(c10::BFloat16* p, float v) {
    *p = c10::BFloat16(v);
  }
};

template <>
struct Access<c10::Half, float> {
  static inline Vec<float> load(const c10::Half* p) {
    VecF16 h;
    std::memcpy(&h, p, sizeof(h));
    return __builtin_convertvector(h, Vec<float>);
  }
  static inline void store(c10::Half* p, Vec<float> v) {
    const VecF16 h = __builtin_convertvector(v, VecF16);
    std::memcpy(p, &h, sizeof(h));
  }
  static inline void stream(c10::Half* p, Vec<float> v) {
    store(p, v);
  }
  static inline float load1(const c10::Half* p) {
    return static_cast<float>(*p);
  }
  static inline void store1(c10::Half* p, float v) {
    *p = c10::Half(v);
  }
};

// Lanes `offset`, offset + 1, ... of v as a vector of sizeof...(I) lanes.
template <size_t offset, typename V, size_t... I>
inline auto lanes_of(V v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, (offset + I)...);
}

// Sum of the lanes of v (a vector of `lanes` lanes), pairwise: the upper half
// of the lanes is added onto the lower half until one lane is left. Vectors
// wider than 16 bytes halve by an extract and a vector add in registers; the
// last 16 bytes by lane reads (narrower vector types would go through memory).
template <size_t lanes, typename V>
inline auto sum_of_lanes(V v) {
  if constexpr (sizeof(V) > 16) {
    constexpr std::make_index_sequence<lanes / 2> half{};
    return sum_of_lanes<lanes / 2>(lanes_of<0>(v, half) + lanes_of<lanes / 2>(v, half));
  } else if constexpr (lanes == 4) {
    return (v[0] + v[2]) + (v[1] + v[3]);
  } else {
    static_assert(lanes == 2, "16 bytes hold 4 floats or 2 doubles");
    return v[0] + v[1];
  }
}

template <typename A>
inline A horizontal_sum(Vec<A> v) {
  return sum_of_lanes<kLanes<A>>(v);
}

// Channels-last accumulation loops take this many rows per pass over C.
constexpr int64_t kRowsTogether = 4;

// Channels-last loops walk rows of C values, kRowsTogether rows at a time; the
// hardware prefetcher alone leaves their loads waiting on memory, so they ask
// for the same columns of the rows they take next: at least a few KiB ahead,
// and never inside the rows taken together (wide rows: C of 1024 and more).
constexpr int64_t kPrefetchBytes = 4096;

// Elements between a load of a channels-last loop and the one it prefetches.
template <typename S>
inline int64_t prefetch_distance(int64_t C) {
  return std::max<int64_t>(kPrefetchBytes / static_cast<int64_t>(sizeof(S)), kRowsTogether * C);
}

// The prefetch of a channels-last second pass at p: the same place in the next
// sample (into L2) when the pass's own sample is in cache (next_sample != 0),
// else the rows taken next.
template <typename S>
inline void prefetch_second_pass(const S* p, int64_t next_sample, int64_t ahead) {
  if (next_sample != 0) {
    __builtin_prefetch(p + next_sample, 0, 2);
  } else {
    __builtin_prefetch(p + ahead);
  }
}

// Outputs of at least this many bytes are streamed (see the top of this file):
// half the last-level cache of the machines measured, so the output would be
// evicted before the next op reads it anyway.
constexpr int64_t kStreamBytes = int64_t{16} << 20;

// Whether the output `out` of `bytes` bytes is streamed: large, S as wide as A
// (16-bit outputs are written half a vector at a time), and aligned.
template <typename S, typename A>
inline bool streams(const void* out, int64_t bytes) {
  return sizeof(S) == sizeof(A) && bytes >= kStreamBytes && reinterpret_cast<uintptr_t>(out) % kVecBytes == 0;
}

// Orders this thread's streaming stores before whatever follows (they are
// weakly ordered); called at the end of each task that streamed.
inline void stream_fence(bool streamed) {
#if defined(__x86_64__)
  if (streamed) {
    _mm_sfence();
  }
#endif
}

// Stores v at p (one vector), streaming when asked and p is aligned.
template <typename S, typename A>
inline void store_out(S* p, Vec<A> v, bool stream, bool aligned) {
  if (stream && aligned) {
    Access<S, A>::stream(p, v);
  } else {
    Access<S, A>::store(p, v);
  }
}

// {0, 1, 2, ...} as a vector.
template <typename A>
inline Vec<A> lane_index() {
  Vec<A> v;
  for (int64_t i = 0; i < kLanes<A>; ++i) {
    v[i] = static_cast<A>(i);
  }
  return v;
}

// A span's short tail (the last `left` < L elements, after its vector loop)
// is summed as the span's last full vector: this mask keeps the lanes that the
// loop has not counted yet.
template <typename A>
inline auto uncounted_tail(int64_t left) {
  return lane_index<A>() >= static_cast<A>(kLanes<A> - left);
}

// ---------------------------------------------------------------------------
// Statistics.

// Pairwise merging of a stream of moments (a binary counter of partial trees).
template <typename A>
class MomentsTree {
 public:
  void push(Moments<A> m) {
    int level = 0;
    while (filled_ & (uint64_t{1} << level)) {
      m = math::moments_combine(levels_[level], m);
      filled_ &= ~(uint64_t{1} << level);
      ++level;
    }
    levels_[level] = m;
    filled_ |= uint64_t{1} << level;
  }

  Moments<A> result() const {
    Moments<A> total = math::empty_moments<A>();
    for (int level = 0; level < 64; ++level) {
      if (filled_ & (uint64_t{1} << level)) {
        total = math::moments_combine(levels_[level], total);
      }
    }
    return total;
  }

 private:
  Moments<A> levels_[64];
  uint64_t filled_ = 0;
};

// Elements per chunk of a contiguous span (16 KiB of float): small enough for
// the second pass over it to hit L1.
constexpr int64_t kSpanChunk = 4096;

// One-pass moments are kept when sum((x - ref)^2) <= kOnePassMargin * M2: their
// rounding error is then at most ~kOnePassMargin ulps of M2.
constexpr int kOnePassMargin = 16;

// sum(v) and sum(v * v) of v = x - ref - shift over a contiguous span, four
// accumulators per sum so that the adds of one iteration do not wait on those
// of the last (a span in L1 is summed at load speed).
template <typename S, typename A>
GN_INLINE_PER_GROUP void shifted_sums(const S* x, int64_t n, A ref, A shift, A* sum, A* sum2) {
  using Acc = Access<S, A>;
  constexpr int64_t L = kLanes<A>;
  Vec<A> d0{}, d1{}, d2{}, d3{}, q0{}, q1{}, q2{}, q3{};
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    const Vec<A> v0 = (Acc::load(x + i) - ref) - shift;
    const Vec<A> v1 = (Acc::load(x + i + L) - ref) - shift;
    const Vec<A> v2 = (Acc::load(x + i + 2 * L) - ref) - shift;
    const Vec<A> v3 = (Acc::load(x + i + 3 * L) - ref) - shift;
    d0 += v0;
    d1 += v1;
    d2 += v2;
    d3 += v3;
    q0 += v0 * v0;
    q1 += v1 * v1;
    q2 += v2 * v2;
    q3 += v3 * v3;
  }
  for (; i + L <= n; i += L) {
    const Vec<A> v0 = (Acc::load(x + i) - ref) - shift;
    d0 += v0;
    q0 += v0 * v0;
  }
  if (i < n && n >= L) {  // the short tail (see uncounted_tail)
    const Vec<A> v = (Acc::load(x + n - L) - ref) - shift;
    const Vec<A> v1 = uncounted_tail<A>(n - i) ? v : Vec<A>{};
    d1 += v1;
    q1 += v1 * v1;
    i = n;
  }
  A s = horizontal_sum<A>((d0 + d1) + (d2 + d3));
  A s2 = horizontal_sum<A>((q0 + q1) + (q2 + q3));
  for (; i < n; ++i) {
    const A v = (Acc::load1(x + i) - ref) - shift;
    s += v;
    s2 += v * v;
  }
  *sum = s;
  *sum2 = s2;
}

// Moments of x - ref over a contiguous span of at most kSpanChunk elements.
// One pass of sums relative to ref (a value of the group, so the group's
// offset is gone) suffices unless ref lies far out in the distribution
// (sum((x - ref)^2) > kOnePassMargin * M2, ~4 standard deviations): only then
// is a second pass, relative to the mean just found, made (the corrected
// two-pass sum), so cancellation never costs more than kOnePassMargin ulps.
// NaN and inf fail the test and take the second pass, which propagates them.
template <typename S, typename A>
GN_INLINE_PER_GROUP Moments<A> chunk_moments(const S* x, int64_t n, A ref) {
  const A count = static_cast<A>(n);
  const A inv_n = A(1) / count;  // ahead of the sums: no division waits on them
  A dev, dev2;
  shifted_sums<S, A>(x, n, ref, A(0), &dev, &dev2);
  const Moments<A> one_pass = math::moments_from_shifted_sums<A>(count, inv_n, A(0), dev, dev2);
  if (dev2 <= static_cast<A>(kOnePassMargin) * one_pass.m2) {
    return one_pass;
  }
  const A shift = one_pass.mean;
  shifted_sums<S, A>(x, n, ref, shift, &dev, &dev2);
  return math::moments_from_shifted_sums<A>(count, inv_n, shift, dev, dev2);
}

// Moments of a contiguous span of n > 0 elements. They are gathered relative
// to the span's first element, so the chunk means merged in the tree are
// deviations (small numbers) whose rounding scales with the spread of the data,
// not its offset; the offset is added back once at the end.
template <typename S, typename A>
GN_INLINE_PER_GROUP Moments<A> span_moments(const S* x, int64_t n) {
  const A ref = Access<S, A>::load1(x);
  Moments<A> m;
  if (n <= kSpanChunk) {  // one chunk, e.g. every group of the RoI heads: no tree
    m = chunk_moments<S, A>(x, n, ref);
  } else {
    MomentsTree<A> tree;
    for (int64_t begin = 0; begin < n; begin += kSpanChunk) {
      tree.push(chunk_moments<S, A>(x + begin, std::min(kSpanChunk, n - begin), ref));
    }
    m = tree.result();
  }
  m.mean += ref;
  return m;
}

// Merges moments[0 .. count) pairwise, in place; returns the total.
template <typename A>
Moments<A> combine_pairwise(Moments<A>* moments, int64_t count, int64_t stride) {
  if (count == 0) {
    return math::empty_moments<A>();
  }
  for (int64_t step = 1; step < count; step *= 2) {
    for (int64_t i = 0; i + step < count; i += 2 * step) {
      moments[i * stride] = math::moments_combine(moments[i * stride], moments[(i + step) * stride]);
    }
  }
  return moments[0];
}

// ---------------------------------------------------------------------------
// Element loops.

// Writes a task's range [begin, end) of a channels-first output span after
// span (one channel's HxW elements, each span with its own coefficients) in
// whole vectors aligned to the output's address. A vector that spans share is
// assembled lane by lane in a register and stored once, so every line inside
// the range is written by full vector stores and can be streamed; only the
// range's unaligned ends are written element by element.
template <typename S, typename A>
class SpanWriter {
 public:
  static constexpr int64_t L = kLanes<A>;

  SpanWriter(S* out, int64_t begin, int64_t end, bool stream) : out_(out), pos_(begin), stream_(stream) {
    constexpr uintptr_t kStoreBytes = L * sizeof(S);  // one vector in S
    const auto address = reinterpret_cast<uintptr_t>(out + begin);
    int64_t head = static_cast<int64_t>(((kStoreBytes - address % kStoreBytes) % kStoreBytes) / sizeof(S));
    if (address % sizeof(S) != 0) {  // not even element-aligned: no vector is, store them unaligned
      head = 0;
    }
    body_begin_ = std::min(end, begin + head);
    body_end_ = body_begin_ + (end - body_begin_) / L * L;
  }

  // Writes out[pos, pos + n) and moves pos past it. vec(i) gives elements
  // [i, i + L) as this span computes them (lanes outside the span are
  // discarded, so vec may read past the span, never past the range) and
  // scalar(i) element i.
  template <typename VecAt, typename ScalarAt>
  void span(int64_t n, const VecAt& vec, const ScalarAt& scalar) {
    const int64_t stop = pos_ + n;
    int64_t i = pos_;
    for (; i < std::min(stop, body_begin_); ++i) {
      Access<S, A>::store1(out_ + i, scalar(i));
    }
    const int64_t body_stop = std::min(stop, body_end_);
    if (i < body_stop) {
      const int64_t filled = (i - body_begin_) % L;
      if (filled != 0) {  // complete the vector that earlier spans began
        const int64_t p = i - filled;
        const Vec<A> lane = lane_index<A>();
        const auto mine = (lane >= static_cast<A>(filled)) & (lane < static_cast<A>(body_stop - p));
        carry_ = mine ? vec(p) : carry_;
        if (body_stop < p + L) {
          i = body_stop;
        } else {
          put(p, carry_);
          i = p + L;
        }
      }
      for (; i + L <= body_stop; i += L) {
        put(i, vec(i));
      }
      if (i < body_stop) {  // begin a vector that the next spans complete
        carry_ = vec(i);
        i = body_stop;
      }
    }
    for (; i < stop; ++i) {
      Access<S, A>::store1(out_ + i, scalar(i));
    }
    pos_ = stop;
  }

 private:
  void put(int64_t i, Vec<A> v) {
    if (stream_) {
      Access<S, A>::stream(out_ + i, v);
    } else {
      Access<S, A>::store(out_ + i, v);
    }
  }

  S* out_;
  int64_t pos_;
  int64_t body_begin_ = 0;  // [body_begin_, body_end_): whole aligned vectors
  int64_t body_end_ = 0;
  bool stream_;
  Vec<A> carry_{};
};

// Channels-last rows: y[r, c] = normalize(x[r, c]) with per-channel mean,
// scale and beta (arrays of C). `stream`: y's rows are aligned, so are its
// full vectors, and they are streamed.
// `next_sample`: elements to the same place in the next sample, read ahead
// into L2 while this one is written (0: none).
// Unstreamed, y is asked for `ahead` elements early, for writing: a plain
// store to a line out of cache waits for that line to be read first, and
// stores waiting in turn stall the loop; asked early, those reads overlap.
template <typename S, typename A, bool kRelu>
void normalize_rows(
    const S* x, S* y, int64_t rows, int64_t C, const A* mean, const A* scale, const A* beta, bool stream,
    int64_t next_sample) {
  using Acc = Access<S, A>;
  using Own = Access<A, A>;
  constexpr int64_t L = kLanes<A>;
  const int64_t ahead = prefetch_distance<S>(C);
  // kRowsTogether rows per pass over C: the per-channel vectors load once per pass.
  for (int64_t r = 0; r < rows; r += kRowsTogether) {
    const int64_t count = std::min(kRowsTogether, rows - r);
    const S* xr = x + r * C;
    S* yr = y + r * C;
    int64_t c = 0;
    for (; c + L <= C; c += L) {
      const Vec<A> m = Own::load(mean + c);
      const Vec<A> sc = Own::load(scale + c);
      const Vec<A> b = Own::load(beta + c);
      for (int64_t k = 0; k < count; ++k) {
        prefetch_second_pass(xr + k * C + c, next_sample, ahead);
        if (!stream) {
          __builtin_prefetch(yr + k * C + c + ahead, 1);
        }
        const Vec<A> z = math::normalize(Acc::load(xr + k * C + c), m, sc, b);
        store_out<S, A>(yr + k * C + c, kRelu ? math::relu(z) : z, stream, true);
      }
    }
    for (; c < C; ++c) {
      for (int64_t k = 0; k < count; ++k) {
        const A z = math::normalize(Acc::load1(xr + k * C + c), mean[c], scale[c], beta[c]);
        Acc::store1(yr + k * C + c, kRelu ? math::relu(z) : z);
      }
    }
  }
}

// `v`, hidden from the optimizer. Without it GCC folds the load of dy into the
// ReLU's select as a masked load (AVX-512), which the processor cannot issue
// ahead like a plain load: the fused backward then waits on memory for dy.
template <typename V>
inline V loaded(V v) {
#if GN_VEC_BYTES == 64
  __asm__("" : "+v"(v));
#else
  __asm__("" : "+x"(v));
#endif
  return v;
}

// The gradient reaching the normalization: dy, or through the fused ReLU.
template <bool kRelu, typename V, typename T>
inline V pre_activation_grad(V dy, V x, T mean, T scale, T beta) {
  if constexpr (kRelu && sizeof(V) == kVecBytes) {
    return math::relu_grad(loaded(dy), math::normalize(x, mean, scale, beta));
  }
  return kRelu ? math::relu_grad(dy, math::normalize(x, mean, scale, beta)) : dy;
}

// Per-channel sums of one channel-first span: sum(dz) and sum(dz * (x - mean)),
// reading `ahead` elements ahead (see read_ahead; 0: no prefetch).
template <typename S, typename A, bool kRelu>
void span_grad_sums(
    const S* dy, const S* x, int64_t n, A mean, A scale, A beta, A* sum_dz, A* sum_dzxc, int64_t ahead) {
  using Acc = Access<S, A>;
  constexpr int64_t L = kLanes<A>;
  Vec<A> s0{}, s1{}, sx0{}, sx1{};
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    if (ahead != 0) {
      __builtin_prefetch(dy + i + ahead);
      __builtin_prefetch(x + i + ahead);
      __builtin_prefetch(dy + i + L + ahead);
      __builtin_prefetch(x + i + L + ahead);
    }
    const Vec<A> x0 = Acc::load(x + i);
    const Vec<A> x1 = Acc::load(x + i + L);
    const Vec<A> dz0 = pre_activation_grad<kRelu>(Acc::load(dy + i), x0, mean, scale, beta);
    const Vec<A> dz1 = pre_activation_grad<kRelu>(Acc::load(dy + i + L), x1, mean, scale, beta);
    s0 += dz0;
    s1 += dz1;
    sx0 += dz0 * (x0 - mean);
    sx1 += dz1 * (x1 - mean);
  }
  for (; i + L <= n; i += L) {
    const Vec<A> xv = Acc::load(x + i);
    const Vec<A> dz = pre_activation_grad<kRelu>(Acc::load(dy + i), xv, mean, scale, beta);
    s0 += dz;
    sx0 += dz * (xv - mean);
  }
  if (i < n && n >= L) {  // the short tail (see uncounted_tail)
    const Vec<A> xv = Acc::load(x + n - L);
    const Vec<A> dz = pre_activation_grad<kRelu>(Acc::load(dy + n - L), xv, mean, scale, beta);
    const auto fresh = uncounted_tail<A>(n - i);
    s1 += fresh ? dz : Vec<A>{};
    sx1 += fresh ? dz * (xv - mean) : Vec<A>{};
    i = n;
  }
  A total = horizontal_sum<A>(s0 + s1);
  A total_x = horizontal_sum<A>(sx0 + sx1);
  for (; i < n; ++i) {
    const A xv = Acc::load1(x + i);
    const A dz = pre_activation_grad<kRelu>(Acc::load1(dy + i), xv, mean, scale, beta);
    total += dz;
    total_x += dz * (xv - mean);
  }
  *sum_dz = total;
  *sum_dzxc = total_x;
}

// Channels-last rows: adds per-channel sum(dz) and sum(dz * (x - mean)) into
// sum_dz[C] and sum_dzxc[C].
template <typename S, typename A, bool kRelu>
void rows_grad_sums(
    const S* dy, const S* x, int64_t rows, int64_t C, const A* mean, const A* scale, const A* beta, A* sum_dz,
    A* sum_dzxc) {
  using Acc = Access<S, A>;
  using Own = Access<A, A>;
  constexpr int64_t L = kLanes<A>;
  const int64_t ahead = prefetch_distance<S>(C);
  for (int64_t r = 0; r < rows; r += kRowsTogether) {  // as in block_group_moments
    const int64_t count = std::min(kRowsTogether, rows - r);
    const S* xr = x + r * C;
    const S* dyr = dy + r * C;
    int64_t c = 0;
    for (; c + L <= C; c += L) {
      const Vec<A> m = Own::load(mean + c);
      const Vec<A> sc = Own::load(scale + c);
      const Vec<A> b = Own::load(beta + c);
      Vec<A> s = Own::load(sum_dz + c);
      Vec<A> sx = Own::load(sum_dzxc + c);
      for (int64_t k = 0; k < count; ++k) {
        __builtin_prefetch(xr + k * C + c + ahead);
        __builtin_prefetch(dyr + k * C + c + ahead);
        const Vec<A> xv = Acc::load(xr + k * C + c);
        const Vec<A> dz = pre_activation_grad<kRelu>(Acc::load(dyr + k * C + c), xv, m, sc, b);
        s += dz;
        sx += dz * (xv - m);
      }
      Own::store(sum_dz + c, s);
      Own::store(sum_dzxc + c, sx);
    }
    for (; c < C; ++c) {
      for (int64_t k = 0; k < count; ++k) {
        const A xv = Acc::load1(xr + k * C + c);
        const A dz = pre_activation_grad<kRelu>(Acc::load1(dyr + k * C + c), xv, mean[c], scale[c], beta[c]);
        sum_dz[c] += dz;
        sum_dzxc[c] += dz * (xv - mean[c]);
      }
    }
  }
}

// Per-channel coefficients of the channels-last input gradient of one sample.
template <typename A>
struct ChannelGradCoefs {
  const A* mean;
  const A* scale;
  const A* beta;
  const A* c1;
  const A* a;
  const A* b;
};

// Channels-last rows: dx from dy and x with the coefficients of k;
// `next_sample` as in normalize_rows (dy and x of the next sample).
template <typename S, typename A, bool kRelu>
void rows_input_grad(
    const S* dy, const S* x, S* dx, int64_t rows, int64_t C, const ChannelGradCoefs<A>& k, bool stream,
    int64_t next_sample) {
  using Acc = Access<S, A>;
  using Own = Access<A, A>;
  constexpr int64_t L = kLanes<A>;
  const int64_t ahead = prefetch_distance<S>(C);
  for (int64_t r = 0; r < rows; r += kRowsTogether) {  // as in normalize_rows
    const int64_t count = std::min(kRowsTogether, rows - r);
    const S* xr = x + r * C;
    const S* dyr = dy + r * C;
    S* dxr = dx + r * C;
    int64_t c = 0;
    for (; c + L <= C; c += L) {
      const Vec<A> m = Own::load(k.mean + c);
      const Vec<A> sc = Own::load(k.scale + c);
      const Vec<A> b = Own::load(k.beta + c);
      const Vec<A> c1 = Own::load(k.c1 + c);
      const math::InputGradCoefs<Vec<A>> coefs{Own::load(k.a + c), Own::load(k.b + c)};
      for (int64_t j = 0; j < count; ++j) {
        const int64_t o = j * C + c;
        prefetch_second_pass(xr + o, next_sample, ahead);
        prefetch_second_pass(dyr + o, next_sample, ahead);
        const Vec<A> xv = Acc::load(xr + o);
        const Vec<A> dz = pre_activation_grad<kRelu>(Acc::load(dyr + o), xv, m, sc, b);
        store_out<S, A>(dxr + o, math::input_grad(dz, xv, m, c1, coefs), stream, true);
      }
    }
    for (; c < C; ++c) {
      const math::InputGradCoefs<A> coefs{k.a[c], k.b[c]};
      for (int64_t j = 0; j < count; ++j) {
        const int64_t o = j * C + c;
        const A xv = Acc::load1(xr + o);
        const A dz = pre_activation_grad<kRelu>(Acc::load1(dyr + o), xv, k.mean[c], k.scale[c], k.beta[c]);
        Acc::store1(dxr + o, math::input_grad(dz, xv, k.mean[c], k.c1[c], coefs));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Shared set-up.

// Affine parameters as accumulation-type arrays of C (1 and 0 when absent).
template <typename P, typename A>
struct AffineParams {
  std::vector<A> gamma;
  std::vector<A> beta;
  AffineParams(const void* gamma_ptr, const void* beta_ptr, int64_t C) : gamma(C, A(1)), beta(C, A(0)) {
    const P* g = static_cast<const P*>(gamma_ptr);
    const P* b = static_cast<const P*>(beta_ptr);
    for (int64_t c = 0; c < C; ++c) {
      if (g != nullptr) {
        gamma[c] = static_cast<A>(g[c]);
      }
      if (b != nullptr) {
        beta[c] = static_cast<A>(b[c]);
      }
    }
  }
};

// Tasks per parallel chunk so that each thread gets at least ~32K elements.
inline int64_t grain_for(int64_t elements_per_task) {
  constexpr int64_t kMinElementsPerChunk = 32768;
  return std::max<int64_t>(1, kMinElementsPerChunk / std::max<int64_t>(1, elements_per_task));
}

// Channels-last samples up to this many elements are one task each.
constexpr int64_t kSampleInCache = 262144;
// Rows of a channels-last block: the unit of parallel work. Each block costs
// O(C) divisions to turn its sums into moments, so blocks are long; the row
// count also bounds the error of block_group_moments (rows * epsilon).
constexpr int64_t kRowsPerBlock = 256;

// Rows per block for a sample of HxW rows: at most kRowsPerBlock, with the
// block count a multiple of the thread count so that threads share a sample
// evenly.
inline int64_t rows_per_block(int64_t HxW) {
  const int64_t threads = at::get_num_threads();
  int64_t blocks = (HxW + kRowsPerBlock - 1) / kRowsPerBlock;
  blocks = (blocks + threads - 1) / threads * threads;
  return std::max<int64_t>(1, (HxW + blocks - 1) / blocks);
}

inline bool one_task_per_sample(int64_t N, int64_t sample_elements) {
  return sample_elements <= kSampleInCache && N >= at::get_num_threads();
}

// Groups of at most this many elements are read ahead (software prefetch,
// whole groups, while earlier groups are written), so reading and writing
// overlap; larger groups are long streams that the hardware prefetcher follows.
constexpr int64_t kReadAheadGroup = kSpanChunk;

// Elements from group ng (of a task ending at `end`) to the group `groups`
// after it, when that one is read ahead; else 0, and the loops prefetch nothing.
inline int64_t read_ahead(int64_t ng, int64_t end, int64_t group_size, int64_t groups) {
  return ng + groups < end && group_size <= kReadAheadGroup ? groups * group_size : 0;
}

// How far ahead small groups are read: whole groups making at least this many
// bytes. One group is not enough: a thread finishes a RoI-head group (1.5-6 KiB)
// in less time than memory takes to answer, so the next group's loads waited.
// The backward reads two inputs per group and needs half the distance. When
// that distance is the next group (groups of 4 KiB and more), its
// input-gradient pass asks again for the lines its sums pass asked for; when
// the sums pass reads several groups ahead, asking again only costs
// instructions. Measured side by side at ~100 GB/s: the forward 1.17-1.23x
// faster 16 KiB ahead than one group ahead, and 8 KiB another 1.00-1.06x; the
// box-head backward 1.14-1.16x faster 4 KiB ahead than one group ahead, and
// 1.06-1.12x without asking again; the mask-head backward 1.07-1.15x faster
// asking again for the same group than for the group after, and 1.12-1.13x than
// asking for nothing.
constexpr int64_t kForwardReadAheadBytes = 8192;
constexpr int64_t kBackwardReadAheadBytes = 4096;

// Groups of `group_bytes` bytes that make at least `bytes` (at least one).
inline int64_t groups_for_bytes(int64_t bytes, int64_t group_bytes) {
  return std::max<int64_t>(1, (bytes + group_bytes - 1) / std::max<int64_t>(1, group_bytes));
}

// Whether channels-last output `out` (N * HxW rows of C) is streamed: needs
// rows whose every full vector is aligned.
template <typename S, typename A>
inline bool streams_channels_last(const void* out, int64_t N, int64_t C, int64_t HxW) {
  return C * static_cast<int64_t>(sizeof(S)) % kVecBytes == 0 && streams<S, A>(out, N * C * HxW * sizeof(S));
}

// ---------------------------------------------------------------------------
// Forward.

template <typename S, typename P, typename A, bool kRelu>
void forward_channels_first(const ForwardArgs& args, const AffineParams<P, A>& params) {
  const S* X = static_cast<const S*>(args.x);
  S* Y = static_cast<S*>(args.y);
  A* mean_out = static_cast<A*>(args.mean);
  A* rstd_out = static_cast<A*>(args.rstd);
  const int64_t G = args.G;
  const int64_t D = args.C / G;
  const int64_t group_size = D * args.HxW;
  const A eps = static_cast<A>(args.eps);
  const A inv_group_size = A(1) / static_cast<A>(group_size);
  const int64_t HxW = args.HxW;
  const bool stream = streams<S, A>(Y, args.N * args.C * HxW * static_cast<int64_t>(sizeof(S)));
  const int64_t groups_ahead = groups_for_bytes(kForwardReadAheadBytes, group_size * static_cast<int64_t>(sizeof(S)));
  at::parallel_for(0, args.N * G, grain_for(group_size), [&](int64_t begin, int64_t end) {
    SpanWriter<S, A> out(Y, begin * group_size, end * group_size, stream);
    for (int64_t ng = begin; ng < end; ++ng) {
      const S* x = X + ng * group_size;
      const Moments<A> m = span_moments<S, A>(x, group_size);
      const A mean = math::mean_from_moments(m);
      const A rstd = math::rstd_from_moments(m, eps, inv_group_size);
      mean_out[ng] = mean;
      rstd_out[ng] = rstd;
      const int64_t ahead = read_ahead(ng, end, group_size, groups_ahead);
      const int64_t c0 = (ng % G) * D;
      for (int64_t d = 0; d < D; ++d) {
        const A scale = math::channel_scale(rstd, params.gamma[c0 + d]);
        const A beta = params.beta[c0 + d];
        auto output = [&](auto xv) {  // of a vector or of one element
          const auto z = math::normalize(xv, mean, scale, beta);
          return kRelu ? math::relu(z) : z;
        };
        auto element = [&](int64_t i) { return output(Access<S, A>::load1(X + i)); };
        if (ahead != 0) {  // two loops, so that neither tests `ahead` per vector
          out.span(
              HxW,
              [&](int64_t i) {
                __builtin_prefetch(X + i + ahead);
                return output(Access<S, A>::load(X + i));
              },
              element);
        } else {
          out.span(HxW, [&](int64_t i) { return output(Access<S, A>::load(X + i)); }, element);
        }
      }
    }
    stream_fence(stream);
  });
}

// Moments of x - ref over one channel of a block of channels-last rows (rows
// values, C apart), by the corrected two-pass sum around `shift`, the channel's
// one-pass mean relative to ref.
template <typename S, typename A>
Moments<A> column_moments(const S* x, int64_t rows, int64_t C, A ref, A shift, A count, A inv_count) {
  A dev = 0, dev2 = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const A v = (Access<S, A>::load1(x + r * C) - ref) - shift;
    dev += v;
    dev2 += v * v;
  }
  return math::moments_from_shifted_sums(count, inv_count, shift, dev, dev2);
}

// Per-group moments of x - ref over a block of channels-last rows, written to
// out[0 .. G); ref[C] holds each channel's group reference (see
// forward_channels_last) and `scratch` 3 * C accumulators.
//
// One pass: each channel's deviations are taken from its value in the block's
// first row, then corrected by their sum (math::moments_from_shifted_sums).
// That loses nothing while the first value lies near the channel's mean. Where
// it lies far out (sum((x - first)^2) > kOnePassMargin * M2, ~4 standard
// deviations, the test of chunk_moments) the correction cancels, so such a
// channel is summed again around the mean just found (column_moments), from
// the block still in cache; NaN and inf fail the test too and propagate
// through it. Groups whose first value is 1e3 over N(0, 1) data: rstd's
// relative error is 2e-7 to 5e-7 with the second pass, 6e-6 to 1.9e-4 without
// (channels-first: 1.5e-7 to 2.2e-7).
// Blocks are then merged pairwise.
template <typename S, typename A>
void block_group_moments(
    const S* x, int64_t rows, int64_t C, int64_t G, const A* ref, A* scratch, Moments<A>* out) {
  using Acc = Access<S, A>;
  using Own = Access<A, A>;
  constexpr int64_t L = kLanes<A>;
  const int64_t ahead = prefetch_distance<S>(C);
  A* shift = scratch;
  A* dev = scratch + C;
  A* dev2 = scratch + 2 * C;
  for (int64_t c = 0; c < C; ++c) {
    shift[c] = Acc::load1(x + c) - ref[c];
  }
  std::fill(dev, dev + 2 * C, A(0));
  // Rows go kRowsTogether at a time, so each accumulator is loaded and stored
  // once per group of rows.
  for (int64_t r = 1; r < rows; r += kRowsTogether) {
    const int64_t count = std::min(kRowsTogether, rows - r);
    const S* xr = x + r * C;
    int64_t c = 0;
    for (; c + L <= C; c += L) {
      const Vec<A> rf = Own::load(ref + c);
      const Vec<A> sh = Own::load(shift + c);
      Vec<A> d = Own::load(dev + c);
      Vec<A> q = Own::load(dev2 + c);
      for (int64_t k = 0; k < count; ++k) {
        __builtin_prefetch(xr + k * C + c + ahead);
        const Vec<A> v = (Acc::load(xr + k * C + c) - rf) - sh;
        d += v;
        q += v * v;
      }
      Own::store(dev + c, d);
      Own::store(dev2 + c, q);
    }
    for (; c < C; ++c) {
      for (int64_t k = 0; k < count; ++k) {
        const A v = (Acc::load1(xr + k * C + c) - ref[c]) - shift[c];
        dev[c] += v;
        dev2[c] += v * v;
      }
    }
  }
  // Each channel's mean (relative to ref) and M2, in place of shift and dev2;
  // dev becomes 1 where the channel fails the one-pass test, else 0. The loop
  // has no branch, so it stays vectorized (with the second pass called from
  // inside it, the box head's forward, blocks of 49 rows, ran up to 10% slower);
  // the rare channels that fail are redone after it. Then each group's moments. The channels of a block
  // all count `rows` values, so a group's mean is the mean of its channels'
  // means and its M2 the sum of theirs plus rows * the spread of the means: no
  // divisions in the loop.
  const A count = static_cast<A>(rows);
  const A inv_count = A(1) / count;
  int any_far = 0;
  for (int64_t c = 0; c < C; ++c) {
    const Moments<A> m = math::moments_from_shifted_sums(count, inv_count, shift[c], dev[c], dev2[c]);
    const bool far = !(dev2[c] <= static_cast<A>(kOnePassMargin) * m.m2);
    any_far |= far;
    dev[c] = far ? A(1) : A(0);
    shift[c] = m.mean;
    dev2[c] = m.m2;
  }
  if (any_far) {
    for (int64_t c = 0; c < C; ++c) {
      if (dev[c] != A(0)) {
        const Moments<A> m = column_moments<S, A>(x + c, rows, C, ref[c], shift[c], count, inv_count);
        shift[c] = m.mean;
        dev2[c] = m.m2;
      }
    }
  }
  const int64_t D = C / G;
  const A inv_D = A(1) / static_cast<A>(D);
  for (int64_t g = 0; g < G; ++g) {
    const A* means = shift + g * D;
    const A* m2s = dev2 + g * D;
    A mean = 0, m2 = 0, spread = 0;
    for (int64_t d = 0; d < D; ++d) {
      mean += means[d];
      m2 += m2s[d];
    }
    mean *= inv_D;
    for (int64_t d = 0; d < D; ++d) {
      spread += (means[d] - mean) * (means[d] - mean);
    }
    out[g] = Moments<A>{count * static_cast<A>(D), mean, m2 + count * spread};
  }
}

// Per-channel mean, scale and beta of sample n from its group statistics.
template <typename P, typename A>
void channel_affine(
    const AffineParams<P, A>& params, const A* mean, const A* rstd, int64_t C, int64_t G, A* mean_c, A* scale_c) {
  const int64_t D = C / G;
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t c = g * D; c < (g + 1) * D; ++c) {
      mean_c[c] = mean[g];
      scale_c[c] = math::channel_scale(rstd[g], params.gamma[c]);
    }
  }
}

template <typename S, typename P, typename A, bool kRelu>
void forward_channels_last(const ForwardArgs& args, const AffineParams<P, A>& params) {
  const S* X = static_cast<const S*>(args.x);
  S* Y = static_cast<S*>(args.y);
  A* mean_out = static_cast<A*>(args.mean);
  A* rstd_out = static_cast<A*>(args.rstd);
  const int64_t N = args.N, C = args.C, G = args.G, HxW = args.HxW;
  const A eps = static_cast<A>(args.eps);
  const int64_t rows = rows_per_block(HxW);
  const int64_t blocks = (HxW + rows - 1) / rows;
  const int64_t sample = HxW * C;
  const bool stream = streams_channels_last<S, A>(Y, N, C, HxW);

  const int64_t D = C / G;
  auto block_rows = [&](int64_t b) { return std::min(rows, HxW - b * rows); };
  // Each group's statistics are gathered relative to the sample's first value
  // of the group (as in span_moments): ref[c] for the channels of group g.
  auto group_refs = [&](const S* x, A* ref) {
    for (int64_t g = 0; g < G; ++g) {
      std::fill_n(ref + g * D, D, Access<S, A>::load1(x + g * D));
    }
  };
  // Statistics of sample n from the moments of its blocks ([blocks][G]).
  auto finish_stats = [&](int64_t n, Moments<A>* block_moments, const A* ref, A* mean_c, A* scale_c) {
    for (int64_t g = 0; g < G; ++g) {
      Moments<A> m = combine_pairwise(block_moments + g, blocks, G);
      m.mean += ref[g * D];
      mean_out[n * G + g] = math::mean_from_moments(m);
      rstd_out[n * G + g] = math::rstd_from_moments(m, eps);
    }
    channel_affine(params, mean_out + n * G, rstd_out + n * G, C, G, mean_c, scale_c);
  };

  if (one_task_per_sample(N, sample)) {
    at::parallel_for(0, N, grain_for(sample), [&](int64_t begin, int64_t end) {
      std::vector<A> scratch(3 * C);
      std::vector<Moments<A>> moments(blocks * G);
      std::vector<A> ref(C), mean_c(C), scale_c(C);
      for (int64_t n = begin; n < end; ++n) {
        const S* x = X + n * sample;
        group_refs(x, ref.data());
        for (int64_t b = 0; b < blocks; ++b) {
          block_group_moments<S, A>(
              x + b * rows * C, block_rows(b), C, G, ref.data(), scratch.data(), &moments[b * G]);
        }
        finish_stats(n, moments.data(), ref.data(), mean_c.data(), scale_c.data());
        normalize_rows<S, A, kRelu>(
            X + n * sample, Y + n * sample, HxW, C, mean_c.data(), scale_c.data(), params.beta.data(), stream,
            n + 1 < end ? sample : 0);
      }
      stream_fence(stream);
    });
    return;
  }

  // One sample at a time, so that the normalize pass finds as much of the
  // sample as the last-level cache holds.
  std::vector<Moments<A>> moments(blocks * G);
  std::vector<A> ref(C), mean_c(C), scale_c(C);
  for (int64_t n = 0; n < N; ++n) {
    const S* x = X + n * sample;
    S* y = Y + n * sample;
    group_refs(x, ref.data());
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> scratch(3 * C);
      for (int64_t b = begin; b < end; ++b) {
        block_group_moments<S, A>(
            x + b * rows * C, block_rows(b), C, G, ref.data(), scratch.data(), &moments[b * G]);
      }
    });
    finish_stats(n, moments.data(), ref.data(), mean_c.data(), scale_c.data());
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = end - 1; b >= begin; --b) {  // latest read first: still in cache
        normalize_rows<S, A, kRelu>(
            x + b * rows * C, y + b * rows * C, block_rows(b), C, mean_c.data(), scale_c.data(), params.beta.data(),
            stream, 0);
      }
      stream_fence(stream);
    });
  }
}

template <typename S, typename P, typename A>
void forward(const ForwardArgs& args) {
  if (args.N * args.C * args.HxW == 0) {
    std::fill_n(static_cast<A*>(args.mean), args.N * args.G, math::mean_from_moments(math::empty_moments<A>()));
    std::fill_n(static_cast<A*>(args.rstd), args.N * args.G, math::rstd_from_moments(math::empty_moments<A>(), A(0)));
    return;
  }
  const AffineParams<P, A> params(args.gamma, args.beta, args.C);
  // (N, C) inputs have HxW = 1: the channels-last loops vectorize along C.
  const bool channels_last = args.channels_last || args.HxW == 1;
  if (channels_last) {
    args.relu ? forward_channels_last<S, P, A, true>(args, params) : forward_channels_last<S, P, A, false>(args, params);
  } else {
    args.relu ? forward_channels_first<S, P, A, true>(args, params)
              : forward_channels_first<S, P, A, false>(args, params);
  }
}

// ---------------------------------------------------------------------------
// Backward.

// Writes dgamma/dbeta from the per-(n, c) sums.
template <typename P, typename A>
void weight_grads(const BackwardArgs& args, const A* sum_dz, const A* sum_dzxc) {
  const A* rstd = static_cast<const A*>(args.rstd);
  P* dgamma = static_cast<P*>(args.dgamma);
  P* dbeta = static_cast<P*>(args.dbeta);
  const int64_t N = args.N, C = args.C, G = args.G, D = C / G;
  // Each task owns a range of channels and walks the (N, C) sums row by row,
  // so memory is read in order.
  at::parallel_for(0, C, grain_for(N), [&](int64_t begin, int64_t end) {
    std::vector<A> dg(end - begin, A(0)), db(end - begin, A(0));
    std::vector<int64_t> group(end - begin);  // no integer division in the loop below
    for (int64_t c = begin; c < end; ++c) {
      group[c - begin] = c / D;
    }
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t c = begin; c < end; ++c) {
        dg[c - begin] += math::weight_grad_term(sum_dzxc[n * C + c], rstd[n * G + group[c - begin]]);
        db[c - begin] += sum_dz[n * C + c];
      }
    }
    for (int64_t c = begin; c < end; ++c) {
      dgamma[c] = static_cast<P>(dg[c - begin]);
      dbeta[c] = static_cast<P>(db[c - begin]);
    }
  });
}

// Input-gradient coefficients of group (n, g) from its channels' sums.
template <typename P, typename A>
math::InputGradCoefs<A> group_coefs(
    const AffineParams<P, A>& params, const A* sum_dz, const A* sum_dzxc, int64_t c0, int64_t D, A rstd, A count) {
  A g_dz = 0, g_dzxc = 0;
  for (int64_t d = 0; d < D; ++d) {
    g_dz += params.gamma[c0 + d] * sum_dz[d];
    g_dzxc += params.gamma[c0 + d] * sum_dzxc[d];
  }
  return math::input_grad_coefs(g_dz, g_dzxc, rstd, count);
}

template <typename S, typename P, typename A, bool kRelu>
void backward_channels_first(const BackwardArgs& args, const AffineParams<P, A>& params, A* sum_dz, A* sum_dzxc) {
  const S* DY = static_cast<const S*>(args.dy);
  const S* X = static_cast<const S*>(args.x);
  S* DX = static_cast<S*>(args.dx);
  const A* mean = static_cast<const A*>(args.mean);
  const A* rstd = static_cast<const A*>(args.rstd);
  const int64_t C = args.C, G = args.G, HxW = args.HxW, D = C / G;
  const int64_t group_size = D * HxW;
  const bool stream = streams<S, A>(DX, args.N * C * HxW * static_cast<int64_t>(sizeof(S)));
  const int64_t groups_ahead = groups_for_bytes(kBackwardReadAheadBytes, group_size * static_cast<int64_t>(sizeof(S)));
  const bool ask_again = groups_ahead == 1;
  at::parallel_for(0, args.N * G, grain_for(group_size), [&](int64_t begin, int64_t end) {
    SpanWriter<S, A> out(DX, begin * group_size, end * group_size, stream);
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / G, c0 = (ng % G) * D;
      const int64_t offset = ng * group_size;
      const A m = mean[ng], r = rstd[ng];
      A* s = sum_dz + n * C + c0;
      A* sx = sum_dzxc + n * C + c0;
      const int64_t ahead = read_ahead(ng, end, group_size, groups_ahead);  // both passes
      const bool prefetch_again = ask_again && ahead != 0;
      for (int64_t d = 0; d < D; ++d) {
        const A scale = math::channel_scale(r, params.gamma[c0 + d]);
        span_grad_sums<S, A, kRelu>(
            DY + offset + d * HxW, X + offset + d * HxW, HxW, m, scale, params.beta[c0 + d], s + d, sx + d, ahead);
      }
      const auto k = group_coefs(params, s, sx, c0, D, r, static_cast<A>(group_size));
      for (int64_t d = 0; d < D; ++d) {
        const A scale = math::channel_scale(r, params.gamma[c0 + d]);
        const A beta = params.beta[c0 + d];
        auto input_grad = [&](auto dyv, auto xv) {  // of a vector or of one element
          return math::input_grad(pre_activation_grad<kRelu>(dyv, xv, m, scale, beta), xv, m, scale, k);
        };
        out.span(
            HxW,
            [&](int64_t i) {
              if (prefetch_again) {
                __builtin_prefetch(DY + i + ahead);
                __builtin_prefetch(X + i + ahead);
              }
              return input_grad(Access<S, A>::load(DY + i), Access<S, A>::load(X + i));
            },
            [&](int64_t i) { return input_grad(Access<S, A>::load1(DY + i), Access<S, A>::load1(X + i)); });
      }
    }
    stream_fence(stream);
  });
}

// Per-channel gradient coefficients of sample n, into coefs arrays of C.
template <typename P, typename A>
void channel_grad_coefs(
    const AffineParams<P, A>& params, const A* sum_dz, const A* sum_dzxc, const A* mean, const A* rstd, int64_t C,
    int64_t G, A count, A* mean_c, A* scale_c, A* a_c, A* b_c) {
  const int64_t D = C / G;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t c0 = g * D;
    const auto k = group_coefs(params, sum_dz + c0, sum_dzxc + c0, c0, D, rstd[g], count);
    for (int64_t c = c0; c < c0 + D; ++c) {
      mean_c[c] = mean[g];
      scale_c[c] = math::channel_scale(rstd[g], params.gamma[c]);
      a_c[c] = k.a;
      b_c[c] = k.b;
    }
  }
}

template <typename S, typename P, typename A, bool kRelu>
void backward_channels_last(const BackwardArgs& args, const AffineParams<P, A>& params, A* sum_dz, A* sum_dzxc) {
  const S* DY = static_cast<const S*>(args.dy);
  const S* X = static_cast<const S*>(args.x);
  S* DX = static_cast<S*>(args.dx);
  const A* mean = static_cast<const A*>(args.mean);
  const A* rstd = static_cast<const A*>(args.rstd);
  const int64_t N = args.N, C = args.C, G = args.G, HxW = args.HxW;
  const int64_t sample = HxW * C;
  const A count = static_cast<A>(HxW * (C / G));
  const A* beta = params.beta.data();
  const bool stream = streams_channels_last<S, A>(DX, N, C, HxW);

  // Per-sample coefficient arrays: mean, scale, a, b (c1 = scale).
  auto coefs_of = [&](int64_t n, A* k) {
    A* mean_c = k;
    A* scale_c = k + C;
    channel_grad_coefs(
        params, sum_dz + n * C, sum_dzxc + n * C, mean + n * G, rstd + n * G, C, G, count, mean_c, scale_c, k + 2 * C,
        k + 3 * C);
    return ChannelGradCoefs<A>{mean_c, scale_c, beta, scale_c, k + 2 * C, k + 3 * C};
  };
  auto mean_scale_of = [&](int64_t n, A* mean_c, A* scale_c) {
    channel_affine(params, mean + n * G, rstd + n * G, C, G, mean_c, scale_c);
  };

  if (one_task_per_sample(N, sample)) {
    at::parallel_for(0, N, grain_for(sample), [&](int64_t begin, int64_t end) {
      std::vector<A> k(4 * C);
      for (int64_t n = begin; n < end; ++n) {
        mean_scale_of(n, k.data(), k.data() + C);
        std::fill_n(sum_dz + n * C, C, A(0));
        std::fill_n(sum_dzxc + n * C, C, A(0));
        rows_grad_sums<S, A, kRelu>(
            DY + n * sample, X + n * sample, HxW, C, k.data(), k.data() + C, beta, sum_dz + n * C, sum_dzxc + n * C);
        const auto coefs = coefs_of(n, k.data());
        rows_input_grad<S, A, kRelu>(
            DY + n * sample, X + n * sample, DX + n * sample, HxW, C, coefs, stream, n + 1 < end ? sample : 0);
      }
      stream_fence(stream);
    });
    return;
  }

  // One sample at a time (see forward_channels_last).
  const int64_t rows = rows_per_block(HxW);
  const int64_t blocks = (HxW + rows - 1) / rows;
  auto block_rows = [&](int64_t b) { return std::min(rows, HxW - b * rows); };
  std::vector<A> k(4 * C);
  std::vector<A> partial(blocks * 2 * C);  // per block: sum(dz)[C], sum(dz * (x - mean))[C]
  for (int64_t n = 0; n < N; ++n) {
    const int64_t offset = n * sample;
    mean_scale_of(n, k.data(), k.data() + C);
    std::fill(partial.begin(), partial.end(), A(0));
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t o = offset + b * rows * C;
        A* p = &partial[b * 2 * C];
        rows_grad_sums<S, A, kRelu>(DY + o, X + o, block_rows(b), C, k.data(), k.data() + C, beta, p, p + C);
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      A s = 0, sx = 0;
      for (int64_t b = 0; b < blocks; ++b) {
        s += partial[b * 2 * C + c];
        sx += partial[b * 2 * C + C + c];
      }
      sum_dz[n * C + c] = s;
      sum_dzxc[n * C + c] = sx;
    }
    const auto coefs = coefs_of(n, k.data());
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = end - 1; b >= begin; --b) {  // latest read first: still in cache
        const int64_t o = offset + b * rows * C;
        rows_input_grad<S, A, kRelu>(DY + o, X + o, DX + o, block_rows(b), C, coefs, stream, 0);
      }
      stream_fence(stream);
    });
  }
}

template <typename S, typename P, typename A>
void backward(const BackwardArgs& args) {
  const int64_t N = args.N, C = args.C;
  std::vector<A> sum_dz(N * C, A(0)), sum_dzxc(N * C, A(0));
  if (N * C * args.HxW > 0) {
    const AffineParams<P, A> params(args.gamma, args.beta, C);
    const bool channels_last = args.channels_last || args.HxW == 1;
    if (channels_last) {
      args.relu ? backward_channels_last<S, P, A, true>(args, params, sum_dz.data(), sum_dzxc.data())
                : backward_channels_last<S, P, A, false>(args, params, sum_dz.data(), sum_dzxc.data());
    } else {
      args.relu ? backward_channels_first<S, P, A, true>(args, params, sum_dz.data(), sum_dzxc.data())
                : backward_channels_first<S, P, A, false>(args, params, sum_dz.data(), sum_dzxc.data());
    }
  }
  weight_grads<P, A>(args, sum_dz.data(), sum_dzxc.data());
}

}  // namespace

const KernelTable& table() {
  static const KernelTable kTable = {
      {
          &forward<float, float, float>,
          &forward<double, double, double>,
          &forward<c10::Half, c10::Half, float>,
          &forward<c10::Half, float, float>,
          &forward<c10::BFloat16, c10::BFloat16, float>,
          &forward<c10::BFloat16, float, float>,
      },
      {
          &backward<float, float, float>,
          &backward<double, double, double>,
          &backward<c10::Half, c10::Half, float>,
          &backward<c10::Half, float, float>,
          &backward<c10::BFloat16, c10::BFloat16, float>,
          &backward<c10::BFloat16, float, float>,
      },
  };
  return kTable;
}

}  // namespace GN_CPU_CAPABILITY
}  // namespace cpu
}  // namespace gn_detection

#ifdef GN_CPU_TARGET
#pragma GCC pop_options
#endif
