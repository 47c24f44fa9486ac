// Python binding for the upfirdn2d kernel: argument checks, output shape, dtype dispatch.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include "upfirdn2d.h"

static int dtype_code(const torch::Tensor& t) {
    switch (t.scalar_type()) {
        case torch::kFloat32: return 0;
        case torch::kFloat64: return 1;
        case torch::kFloat16: return 2;
        case torch::kBFloat16: return 3;
        default: TORCH_CHECK(false, "upfirdn2d: unsupported dtype ", t.scalar_type());
    }
    return -1;
}

// x: [N, C, H, W] CUDA tensor of any strides; w: [fh, fw] cross-correlation weights.
static torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor w,
                               int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
                               int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1,
                               double gain) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W]");
    TORCH_CHECK(w.dim() == 2 && w.device() == x.device(), "upfirdn2d: w must be 2-D and on x's device");
    const auto wtype = x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    TORCH_CHECK(w.scalar_type() == wtype, "upfirdn2d: w must be float64 for float64 x, else float32");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up/down must be >= 1");
    const int64_t fh = w.size(0), fw = w.size(1);
    TORCH_CHECK(fh >= 1 && fw >= 1, "upfirdn2d: empty filter");
    const int64_t in_h = x.size(2), in_w = x.size(3);
    const int64_t span_x = in_w * up_x + pad_x0 + pad_x1 - fw;
    const int64_t span_y = in_h * up_y + pad_y0 + pad_y1 - fh;
    TORCH_CHECK(span_x >= 0 && span_y >= 0, "upfirdn2d: padded image is smaller than the filter");
    const int64_t out_w = span_x / down_x + 1, out_h = span_y / down_y + 1;
    TORCH_CHECK(x.numel() < (int64_t(1) << 62) && x.size(0) * x.size(1) * out_h * out_w < (int64_t(1) << 62),
                "upfirdn2d: tensor too large");
    TORCH_CHECK(x.size(0) <= INT32_MAX && x.size(1) <= INT32_MAX && in_h <= INT32_MAX && in_w <= INT32_MAX &&
                out_h <= INT32_MAX && out_w <= INT32_MAX, "upfirdn2d: dimension too large");

    const c10::cuda::OptionalCUDAGuard guard(device_of(x));
    torch::Tensor wc = w.contiguous();
    torch::Tensor out = torch::empty({x.size(0), x.size(1), out_h, out_w},
                                     x.options().memory_format(x.suggest_memory_format()));
    Upfirdn2dParams p;
    p.x = x.data_ptr();
    p.w = wc.data_ptr();
    p.out = out.data_ptr();
    for (int d = 0; d < 4; d++) {
        p.x_stride[d] = x.stride(d);
        p.out_stride[d] = out.stride(d);
    }
    p.n = int(x.size(0)); p.c = int(x.size(1));
    p.in_h = int(in_h); p.in_w = int(in_w);
    p.out_h = int(out_h); p.out_w = int(out_w);
    p.fh = int(fh); p.fw = int(fw);
    p.up_x = int(up_x); p.up_y = int(up_y);
    p.down_x = int(down_x); p.down_y = int(down_y);
    p.pad_x0 = int(pad_x0); p.pad_y0 = int(pad_y0);
    p.gain = gain;
    cudaError_t err = upfirdn2d_launch(p, dtype_code(x), c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "upfirdn2d: kernel launch failed: ", cudaGetErrorString(err));
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR filter and downsample a batch of images (CUDA)");
}
