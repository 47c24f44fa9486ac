// Shared between bias_act.cpp (torch glue, host compiler) and bias_act.cu (kernel, nvcc),
// so the kernel translation unit does not have to parse the torch headers.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

// Activation codes; they match `cuda_idx` in bias_act.py.
enum BiasActCode {
    BA_LINEAR = 1, BA_RELU = 2, BA_LRELU = 3, BA_TANH = 4, BA_SIGMOID = 5,
    BA_ELU = 6, BA_SELU = 7, BA_SOFTPLUS = 8, BA_SWISH = 9
};

// mode 0: y  = clamp(gain * act(x + b))
// mode 1: dx = x * gain * act'(.) * mask          (x holds the incoming gradient)
// mode 2: x * d/dref [gain * act'(.)] * mask       (second-order term)
// For swish `ref` is the layer input (bias added here); for the others it is the output y.
// mask zeroes positions where the clamp saturated.
struct BiasActParams {
    const void* x;
    const void* b;      // nullptr: no bias; same dtype as x
    const void* ref;    // nullptr when the mode/activation needs none
    void* out;
    int64_t numel;
    int64_t stride_dim; // elements between consecutive indices along the bias dimension
    int64_t size_dim;   // length of the bias dimension
    int mode;
    int act;
    double alpha;
    double gain;
    double clamp;       // < 0: no clamp
};

// dtype: 0 float32, 1 float64, 2 float16, 3 bfloat16.
cudaError_t bias_act_launch(const BiasActParams& p, int dtype, cudaStream_t stream);
