// Fused bias + activation + gain + clamp, and the two derivative modes the autograd
// functions in bias_act.py need. One thread per element, grid-stride loop.
#include "bias_act.h"
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace {

// Storage type -> compute type, with loads/stores that do not rely on implicit
// half conversions (torch compiles with __CUDA_NO_HALF_CONVERSIONS__).
template <class T> struct IO;
template <> struct IO<float> {
    typedef float C;
    static __device__ __forceinline__ C load(const float* p, int64_t i) { return p[i]; }
    static __device__ __forceinline__ void store(float* p, int64_t i, C v) { p[i] = v; }
    static __device__ __forceinline__ C round(C v) { return v; }
};
template <> struct IO<double> {
    typedef double C;
    static __device__ __forceinline__ C load(const double* p, int64_t i) { return p[i]; }
    static __device__ __forceinline__ void store(double* p, int64_t i, C v) { p[i] = v; }
    static __device__ __forceinline__ C round(C v) { return v; }
};
template <> struct IO<__half> {
    typedef float C;
    static __device__ __forceinline__ C load(const __half* p, int64_t i) { return __half2float(p[i]); }
    static __device__ __forceinline__ void store(__half* p, int64_t i, C v) { p[i] = __float2half_rn(v); }
    static __device__ __forceinline__ C round(C v) { return __half2float(__float2half_rn(v)); }
};
template <> struct IO<__nv_bfloat16> {
    typedef float C;
    static __device__ __forceinline__ C load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
    static __device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, C v) { p[i] = __float2bfloat16_rn(v); }
    static __device__ __forceinline__ C round(C v) { return __bfloat162float(__float2bfloat16_rn(v)); }
};

__device__ __forceinline__ float m_exp(float v) { return expf(v); }
__device__ __forceinline__ double m_exp(double v) { return exp(v); }
__device__ __forceinline__ float m_expm1(float v) { return expm1f(v); }
__device__ __forceinline__ double m_expm1(double v) { return expm1(v); }
__device__ __forceinline__ float m_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double m_log1p(double v) { return log1p(v); }
__device__ __forceinline__ float m_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double m_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float m_abs(float v) { return fabsf(v); }
__device__ __forceinline__ double m_abs(double v) { return fabs(v); }

// SELU constants (Klambauer et al. 2017), as used by torch.nn.functional.selu.
#define SELU_SCALE 1.0507009873554804934193349852946
#define SELU_ALPHA 1.6732632423543772848170429916717

template <class C> __device__ __forceinline__ C sigmoid_of(C z) { return C(1) / (C(1) + m_exp(-z)); }

template <class C> __device__ __forceinline__ C act_value(int act, C z, C alpha) {
    switch (act) {
        case BA_RELU:     return z > C(0) ? z : C(0);
        case BA_LRELU:    return z > C(0) ? z : z * alpha;
        case BA_TANH:     return m_tanh(z);
        case BA_SIGMOID:  return sigmoid_of(z);
        case BA_ELU:      return z > C(0) ? z : m_expm1(z);
        case BA_SELU:     return z > C(0) ? C(SELU_SCALE) * z : C(SELU_SCALE * SELU_ALPHA) * m_expm1(z);
        case BA_SOFTPLUS: return z > C(20) ? z : m_log1p(m_exp(z));  // torch's threshold
        case BA_SWISH:    return z * sigmoid_of(z);
        default:          return z;
    }
}

// act'(z), from r = z for swish and from r = y = gain * act(z) otherwise (u = y / gain).
template <class C> __device__ __forceinline__ C act_slope(int act, C r, C alpha, C gain) {
    C u = r / gain;
    switch (act) {
        case BA_RELU:     return r > C(0) ? C(1) : C(0);
        case BA_LRELU:    return r > C(0) ? C(1) : alpha;
        case BA_TANH:     return C(1) - u * u;
        case BA_SIGMOID:  return u * (C(1) - u);
        case BA_ELU:      return r > C(0) ? C(1) : u + C(1);
        case BA_SELU:     return r > C(0) ? C(SELU_SCALE) : u + C(SELU_SCALE * SELU_ALPHA);
        case BA_SOFTPLUS: return -m_expm1(-u);
        case BA_SWISH: { C s = sigmoid_of(r); return s * (C(1) + r * (C(1) - s)); }
        default:          return C(1);
    }
}

// Derivative of (gain * act'(.)) with respect to the ref tensor. For y-based activations
// autograd then chains through dy/dz, which is why these are expressed per unit of y.
template <class C> __device__ __forceinline__ C act_curvature(int act, C r, C alpha, C gain) {
    C u = r / gain;
    switch (act) {
        case BA_TANH:     return C(-2) * u;
        case BA_SIGMOID:  return C(1) - C(2) * u;
        case BA_ELU:      return r > C(0) ? C(0) : C(1);
        case BA_SELU:     return r > C(0) ? C(0) : C(1);
        case BA_SOFTPLUS: return m_exp(-u);
        case BA_SWISH: {
            C s = sigmoid_of(r);
            return gain * s * (C(1) - s) * (C(2) + r * (C(1) - C(2) * s));
        }
        default:          return C(0);  // piecewise-linear activations
    }
}

template <class T>
__global__ void bias_act_kernel(BiasActParams p) {
    typedef typename IO<T>::C C;
    const T* x = static_cast<const T*>(p.x);
    const T* b = static_cast<const T*>(p.b);
    const T* ref = static_cast<const T*>(p.ref);
    T* out = static_cast<T*>(p.out);
    const C alpha = C(p.alpha), gain = C(p.gain), clamp = C(p.clamp);
    // A saturated y was stored as clamp rounded to T; compare against that, or e.g. an fp16
    // y of 0.9 (stored 0.89990) would look unclamped and leak gradient.
    const C clamp_stored = IO<T>::round(clamp);
    const bool x_ref = (p.act == BA_SWISH);
    const int64_t step = int64_t(blockDim.x) * gridDim.x;

    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += step) {
        C v = IO<T>::load(x, i);
        C bias = b ? IO<T>::load(b, (i / p.stride_dim) % p.size_dim) : C(0);
        if (p.mode == 0) {
            C y = act_value(p.act, v + bias, alpha) * gain;
            if (clamp >= C(0))
                y = y > clamp ? clamp : (y < -clamp ? -clamp : y);
            IO<T>::store(out, i, y);
            continue;
        }
        C r = ref ? IO<T>::load(ref, i) : C(0);
        if (x_ref)
            r += bias;
        C g = C(0);
        if (gain != C(0))
            g = (p.mode == 1) ? act_slope(p.act, r, alpha, gain) * gain : act_curvature(p.act, r, alpha, gain);
        if (clamp >= C(0)) {
            bool inside = x_ref ? m_abs(act_value(p.act, r, alpha) * gain) <= clamp : m_abs(r) < clamp_stored;
            if (!inside)
                g = C(0);
        }
        IO<T>::store(out, i, v * g);
    }
}

template <class T>
cudaError_t launch(const BiasActParams& p, cudaStream_t stream) {
    if (p.numel == 0)
        return cudaSuccess;
    const int block = 256;
    int64_t grid = (p.numel + block - 1) / block;
    if (grid > 65536)
        grid = 65536;  // grid-stride loop covers the rest
    bias_act_kernel<T><<<unsigned(grid), block, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t bias_act_launch(const BiasActParams& p, int dtype, cudaStream_t stream) {
    switch (dtype) {
        case 0: return launch<float>(p, stream);
        case 1: return launch<double>(p, stream);
        case 2: return launch<__half>(p, stream);
        case 3: return launch<__nv_bfloat16>(p, stream);
        default: return cudaErrorInvalidValue;
    }
}
