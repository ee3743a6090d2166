// Host launchers of the GroupNorm CUDA kernels (group_norm_kernels.cu).
//
// This header is shared by nvcc (the kernels) and g++ (group_norm_cuda.cpp,
// the ATen side), so it depends on nothing but the CUDA runtime: the launchers
// take raw pointers, sizes, a workspace and a stream. The caller allocates the
// workspace on the tensors' device with the size that the matching
// *_workspace_bytes function returns for the same sizes and SM count.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace gn_detection {
namespace cuda_impl {

// Accumulation type of an input scalar type: double for double, else float.
template <typename scalar_t>
struct AccumulateType {
  using type = float;
};
template <>
struct AccumulateType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_type = typename AccumulateType<scalar_t>::type;

// An (N, C, *) input seen as (N, C, HxW) with G groups, and its memory layout:
// channels-first is memory (N, C, HxW), channels-last is memory (N, HxW, C).
struct GroupNormSizes {
  int64_t N;
  int64_t C;
  int64_t HxW;
  int64_t G;
  bool channels_last;
};

// Where and how wide a launch is: the stream, and the device's SM count (the
// kernels size their grids and spatial splits from it).
struct LaunchTarget {
  cudaStream_t stream;
  int num_sms;
};

// Workspace bytes of the forward / backward launchers for `acc_t` = float or double.
template <typename acc_t>
int64_t group_norm_forward_workspace_bytes(const GroupNormSizes& sizes, int num_sms);
template <typename acc_t>
int64_t group_norm_backward_workspace_bytes(const GroupNormSizes& sizes, int num_sms);

// Forward: y (the input's layout), mean and rstd (N, G). `gamma` and `beta`
// may be null (gamma = 1, beta = 0). Every pointer is on the current device.
// An input with no elements still gets its (NaN) statistics of empty groups.
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
    const LaunchTarget& target);

// Backward: dx (the input's layout), dgamma and dbeta (C,) in param_t. `gamma`
// and `beta` may be null; `beta` is read only to recompute the fused ReLU's
// pre-activation. dgamma and dbeta are always written (zeros when the input
// has no elements).
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
    const LaunchTarget& target);

}  // namespace cuda_impl
}  // namespace gn_detection
