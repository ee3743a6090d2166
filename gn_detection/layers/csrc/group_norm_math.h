// Arithmetic of GroupNorm shared by the CPU and CUDA kernels.
//
// Every formula the two back ends have in common lives here once, as
// `__host__ __device__` templates, so the CPU path that the tests run checks the
// same arithmetic the CUDA kernels execute. The templates take a value type `V`
// (a scalar, or on the CPU a GCC vector of scalars) and an accumulation scalar
// type `T` (float for float/half/bfloat16 inputs, double for double inputs).
//
// Notation for one group of m = (C / G) * HxW elements:
//   mean, rstd = 1 / sqrt(var + eps)       (biased variance, as nn.GroupNorm)
//   z  = (x - mean) * rstd * gamma_c + beta_c
//   y  = z, or relu(z) for the fused form
// The input is centred before it is scaled, (x - mean) * scale + beta, rather
// than folded into x * scale + shift: for an input far from zero (1e4 + randn)
// the folded form cancels catastrophically in float32, the centred one does not.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define GN_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace gn_detection {
namespace math {

// Running moments of a set of values: count, mean and M2 = sum((x - mean)^2).
template <typename T>
struct Moments {
  T count;
  T mean;
  T m2;
};

template <typename T>
GN_HOST_DEVICE Moments<T> empty_moments() {
  return Moments<T>{T(0), T(0), T(0)};
}

// Welford's single-value update (used per thread on CUDA).
template <typename T>
GN_HOST_DEVICE Moments<T> moments_push(Moments<T> a, T x) {
  const T count = a.count + T(1);
  const T delta = x - a.mean;
  const T mean = a.mean + delta / count;
  return Moments<T>{count, mean, a.m2 + delta * (x - mean)};
}

// Chan et al.'s pairwise combination of two disjoint sets' moments. It never
// forms a sum of squares around zero, so it does not cancel for inputs with a
// large mean; combining in a tree (as both back ends do) keeps rounding error
// growing with log(number of parts).
template <typename T>
GN_HOST_DEVICE Moments<T> moments_combine(Moments<T> a, Moments<T> b) {
  if (a.count == T(0)) {
    return b;
  }
  if (b.count == T(0)) {
    return a;
  }
  const T count = a.count + b.count;
  const T nb_over_n = b.count / count;
  const T delta = b.mean - a.mean;
  return Moments<T>{
      count,
      a.mean + delta * nb_over_n,
      a.m2 + b.m2 + delta * delta * a.count * nb_over_n};
}

// Moments of a block from sums of deviations: `dev` = sum(x - shift) and
// `dev2` = sum((x - shift)^2). The correction by `dev` makes the formula exact
// for any shift; its rounding grows with (shift - mean)^2 / variance, so a
// shift equal to the block's mean up to a few ulps (its plain sum / count: the
// corrected two-pass sum) loses nothing, and a value of the block itself stays
// within the bounds its callers state.
// `inv_count` is 1 / count, computed by the caller before the sums are known so
// that no division waits on them (CPU kernels with many small groups).
template <typename T>
GN_HOST_DEVICE Moments<T> moments_from_shifted_sums(T count, T inv_count, T shift, T dev, T dev2) {
  if (count == T(0)) {
    return empty_moments<T>();
  }
  const T correction = dev * inv_count;
  T m2 = dev2 - dev * correction;
  m2 = m2 < T(0) ? T(0) : m2;
  return Moments<T>{count, shift + correction, m2};
}

template <typename T>
GN_HOST_DEVICE T gn_sqrt(T v) {
#if defined(__CUDA_ARCH__)
  return sqrt(v);
#else
  return std::sqrt(v);
#endif
}

// 1 / sqrt(biased variance + eps). A negative variance can only come from
// rounding and is clamped; NaN passes through (NaN < 0 is false), so a group
// holding NaN or inf normalizes to NaN as in torch.nn.functional.group_norm.
// An empty group (count 0) gets NaN statistics, like torch.mean of nothing.
// `inv_count` as in moments_from_shifted_sums.
template <typename T>
GN_HOST_DEVICE T rstd_from_moments(Moments<T> s, T eps, T inv_count) {
  if (s.count == T(0)) {
    return T(NAN);
  }
  T var = s.m2 * inv_count;
  var = var < T(0) ? T(0) : var;
  return T(1) / gn_sqrt(var + eps);
}

template <typename T>
GN_HOST_DEVICE T rstd_from_moments(Moments<T> s, T eps) {
  return rstd_from_moments(s, eps, s.count == T(0) ? T(0) : T(1) / s.count);
}

template <typename T>
GN_HOST_DEVICE T mean_from_moments(Moments<T> s) {
  return s.count == T(0) ? T(NAN) : s.mean;
}

// Per-channel scale of the affine normalization: rstd * gamma_c.
template <typename T>
GN_HOST_DEVICE T channel_scale(T rstd, T gamma) {
  return rstd * gamma;
}

// z = (x - mean) * scale + beta, the pre-activation output.
template <typename V, typename T>
GN_HOST_DEVICE V normalize(V x, T mean, T scale, T beta) {
  return (x - mean) * scale + beta;
}

// ReLU that keeps NaN, as torch.relu does (NaN < 0 is false).
template <typename V>
GN_HOST_DEVICE V relu(V z) {
  return z < 0 ? V{} : z;
}

// Gradient through the fused ReLU, from the recomputed pre-activation z:
// dz = dy where z > 0, else 0 (torch's threshold_backward rule).
template <typename V>
GN_HOST_DEVICE V relu_grad(V dy, V z) {
  return z > 0 ? dy : V{};
}

// Coefficients of the input gradient of one group:
//   dx = c1_c * dz + a * (x - mean) + b,  with c1_c = rstd * gamma_c,
// given, over the group's channels c,
//   sum_g_dz   = sum_c gamma_c * sum(dz_c)
//   sum_g_dzxc = sum_c gamma_c * sum(dz_c * (x_c - mean)).
// Working with centred x (never x * a + (b - a * mean)) keeps the gradient as
// accurate as the forward for inputs far from zero.
template <typename T>
struct InputGradCoefs {
  T a;
  T b;
};

template <typename T>
GN_HOST_DEVICE InputGradCoefs<T> input_grad_coefs(T sum_g_dz, T sum_g_dzxc, T rstd, T count) {
  const T inv_count = T(1) / count;
  return InputGradCoefs<T>{
      -sum_g_dzxc * rstd * rstd * rstd * inv_count,
      -sum_g_dz * rstd * inv_count};
}

// Grouped so that it compiles to a subtraction and two fused multiply-adds.
template <typename V, typename T>
GN_HOST_DEVICE V input_grad(V dz, V x, T mean, T c1, InputGradCoefs<T> k) {
  return dz * c1 + ((x - mean) * k.a + k.b);
}

// Contribution of one (sample, channel) to the affine gradients:
//   dgamma_c += rstd * sum(dz * (x - mean)),  dbeta_c += sum(dz).
template <typename T>
GN_HOST_DEVICE T weight_grad_term(T sum_dzxc, T rstd) {
  return sum_dzxc * rstd;
}

}  // namespace math
}  // namespace gn_detection
