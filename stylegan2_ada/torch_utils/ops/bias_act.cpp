// Python binding for the bias_act kernel: argument checks and dtype dispatch.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include "bias_act.h"

static int dtype_code(const torch::Tensor& t) {
    switch (t.scalar_type()) {
        case torch::kFloat32: return 0;
        case torch::kFloat64: return 1;
        case torch::kFloat16: return 2;
        case torch::kBFloat16: return 3;
        default: TORCH_CHECK(false, "bias_act: unsupported dtype ", t.scalar_type());
    }
    return -1;
}

// b and ref may be empty tensors (meaning: absent). ref must share x's shape and strides.
static torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor ref,
                              int64_t mode, int64_t act, int64_t dim,
                              double alpha, double gain, double clamp) {
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be dense (call .contiguous())");
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
    TORCH_CHECK(act >= BA_LINEAR && act <= BA_SWISH, "bias_act: unknown activation code ", act);
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
    TORCH_CHECK(x.numel() < (int64_t(1) << 62), "bias_act: tensor too large");
    const bool has_b = b.numel() > 0;
    const bool has_ref = ref.numel() > 0;
    if (has_b) {
        TORCH_CHECK(b.device() == x.device() && b.scalar_type() == x.scalar_type(),
                    "bias_act: b must match x in device and dtype");
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: b must be 1-D with x.shape[dim] entries");
        TORCH_CHECK(b.is_contiguous(), "bias_act: b must be contiguous");
    }
    if (has_ref) {
        TORCH_CHECK(ref.device() == x.device() && ref.scalar_type() == x.scalar_type(),
                    "bias_act: ref must match x in device and dtype");
        TORCH_CHECK(ref.sizes() == x.sizes() && ref.strides() == x.strides(),
                    "bias_act: ref must match x in shape and strides");
    }
    const bool needs_ref = mode > 0 && (act != BA_LINEAR || clamp >= 0);
    TORCH_CHECK(!needs_ref || has_ref, "bias_act: this mode/activation needs ref");

    const c10::cuda::OptionalCUDAGuard guard(device_of(x));
    torch::Tensor out = torch::empty_like(x);  // keeps x's (dense) strides
    BiasActParams p;
    p.x = x.data_ptr();
    p.b = has_b ? b.data_ptr() : nullptr;
    p.ref = has_ref ? ref.data_ptr() : nullptr;
    p.out = out.data_ptr();
    p.numel = x.numel();
    p.stride_dim = x.stride(dim) > 0 ? x.stride(dim) : 1;
    p.size_dim = x.size(dim);
    p.mode = int(mode);
    p.act = int(act);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    cudaError_t err = bias_act_launch(p, dtype_code(x), c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "bias_act: kernel launch failed: ", cudaGetErrorString(err));
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp and its derivatives (CUDA)");
}
