// Shared between upfirdn2d.cpp (torch glue, host compiler) and upfirdn2d.cu (kernel, nvcc).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

// out[n,c,oy,ox] = gain * sum_{ky,kx} w[ky,kx] * xp[oy*down_y + ky, ox*down_x + kx]
// where xp is x upsampled by zero insertion (up-1 zeros after every pixel), then padded
// by (pad_x0, pad_y0) at the start (negative values crop). w is applied as a
// cross-correlation; the Python side flips it for a true convolution.
struct Upfirdn2dParams {
    const void* x;
    const void* w;       // float32, or float64 when x is float64; [fh, fw] contiguous
    void* out;
    int64_t x_stride[4]; // in elements, NCHW order
    int64_t out_stride[4];
    int n, c, in_h, in_w, out_h, out_w, fh, fw;
    int up_x, up_y, down_x, down_y, pad_x0, pad_y0;
    double gain;
};

// dtype: 0 float32, 1 float64, 2 float16, 3 bfloat16.
cudaError_t upfirdn2d_launch(const Upfirdn2dParams& p, int dtype, cudaStream_t stream);
