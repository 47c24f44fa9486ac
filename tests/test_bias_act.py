"""bias_act: reference path against an independent NumPy formula, derivatives by
gradcheck, the CUDA path's autograd wiring (on CPU, through a stand-in for the kernel that
follows bias_act.h's contract), and on a GPU the real kernel against the reference."""
import math

import numpy as np
import pytest
import torch

from torch_utils.ops import bias_act

ACTS = ['linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish']
SELU_L = 1.0507009873554804934193349852946
SELU_A = 1.6732632423543772848170429916717


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: handing work between threads costs more than it saves (much more on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def np_expected(x, b, dim, act, alpha=None, gain=None, clamp=None):
    """The documented semantics, written out in float64 NumPy."""
    x = np.asarray(x, dtype=np.float64)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + np.asarray(b, dtype=np.float64).reshape(shape)
    if alpha is None:
        alpha = 0.2 if act == 'lrelu' else 0.0
    if gain is None:
        gain = math.sqrt(2) if act in ('relu', 'lrelu') else 1.0
    y = {
        'linear': lambda z: z,
        'relu': lambda z: np.maximum(z, 0),
        'lrelu': lambda z: np.where(z > 0, z, alpha * z),
        'tanh': np.tanh,
        'sigmoid': lambda z: 1 / (1 + np.exp(-z)),
        'elu': lambda z: np.where(z > 0, z, np.exp(z) - 1),
        'selu': lambda z: SELU_L * np.where(z > 0, z, SELU_A * (np.exp(z) - 1)),
        'softplus': lambda z: np.log(1 + np.exp(z)),
        'swish': lambda z: z / (1 + np.exp(-z)),
    }[act](x) * gain
    if clamp is not None:
        y = np.clip(y, -clamp, clamp)
    return y


def test_activation_table():
    assert sorted(bias_act.activation_funcs) == sorted(ACTS)
    idx = [bias_act.activation_funcs[a].cuda_idx for a in ACTS]
    assert len(set(idx)) == len(idx)
    for a in ACTS:
        spec = bias_act.activation_funcs[a]
        want_gain = math.sqrt(2) if a in ('relu', 'lrelu') else 1
        assert spec.def_gain == pytest.approx(want_gain)
        assert spec.def_alpha == pytest.approx(0.2 if a == 'lrelu' else 0)
        assert spec.has_2nd_grad == (a not in ('linear', 'relu', 'lrelu'))
        assert callable(spec.ref) and spec.func is spec.ref
        assert spec.grad_from in ('', 'x', 'y')


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('opts', [{}, {'gain': 0.7, 'clamp': 0.9}, {'alpha': 0.35, 'gain': 2.5, 'clamp': 3.0}],
                         ids=['defaults', 'gain-clamp', 'alpha-gain-clamp'])
def test_ref_matches_formula(act, with_bias, opts):
    g = torch.Generator().manual_seed(1)
    for shape, dim in [((2, 5, 3, 4), 1), ((3, 4, 6), 2), ((4, 7), 1), ((7,), 0)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 2
        b = torch.randn(shape[dim], generator=g, dtype=torch.float64) if with_bias else None
        y = bias_act.bias_act(x, b, dim=dim, act=act, impl='ref', **opts)
        want = np_expected(x.numpy(), None if b is None else b.numpy(), dim, act, **opts)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)


def test_ref_negative_dim_and_cpu_fallback_of_cuda_impl():
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    want = bias_act.bias_act(x, b, dim=2, act='lrelu', impl='ref')
    assert torch.equal(bias_act.bias_act(x, b, dim=-1, act='lrelu', impl='ref'), want)
    # On a CPU tensor impl='cuda' must silently be the reference path.
    assert torch.equal(bias_act.bias_act(x, b, dim=2, act='lrelu', impl='cuda'), want)


@pytest.mark.parametrize('act', ACTS)
def test_ref_gradcheck(act):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(2, 3, 4, generator=g, dtype=torch.float64) * 2).requires_grad_()
    b = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    for clamp in (None, 1.1):
        fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=clamp, impl='ref')  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


# The CUDA path's autograd Functions, exercised on CPU. FakeKernel implements the
# three modes exactly as bias_act.h/.cu define them (same formulas), so gradcheck and
# gradgradcheck here validate both the Function wiring and the derivative formulas the
# kernel uses; the GPU tests below then check the kernel against the reference.

class FakeKernel:
    def __init__(self):
        self.calls = []

    def bias_act(self, x, b, ref, mode, act, dim, alpha, gain, clamp):
        self.calls.append(mode)
        name = {bias_act.activation_funcs[a].cuda_idx: a for a in ACTS}[act]
        x, b, ref = x.detach(), b.detach(), ref.detach()  # a kernel is opaque to autograd
        bias = b.reshape([-1 if i == dim else 1 for i in range(x.ndim)]) if b.numel() else 0
        if mode == 0:
            y = torch.from_numpy(np_expected((x + bias).numpy(), None, dim, name, alpha, gain)).to(x.dtype)
            return y.clamp(-clamp, clamp) if clamp >= 0 else y
        x_ref = name == 'swish'
        r = ref + bias if x_ref else ref
        u = r / gain
        s = torch.sigmoid(r)
        one = torch.ones_like(x)
        if mode == 1:
            slope = {
                'linear': one, 'relu': (r > 0).to(x.dtype), 'lrelu': torch.where(r > 0, one, alpha * one),
                'tanh': 1 - u * u, 'sigmoid': u * (1 - u), 'elu': torch.where(r > 0, one, u + 1),
                'selu': torch.where(r > 0, SELU_L * one, u + SELU_L * SELU_A), 'softplus': -torch.expm1(-u),
                'swish': s * (1 + r * (1 - s)),
            }[name]
            g = slope * gain
        else:
            g = {
                'tanh': -2 * u, 'sigmoid': 1 - 2 * u, 'elu': (r <= 0).to(x.dtype), 'selu': (r <= 0).to(x.dtype),
                'softplus': torch.exp(-u), 'swish': gain * s * (1 - s) * (2 + r * (1 - 2 * s)),
            }.get(name, 0 * one)
        if clamp >= 0:  # zero where the clamp saturated
            if x_ref:
                v = torch.from_numpy(np_expected(r.numpy(), None, dim, name, alpha, gain))
                inside = v.abs() <= clamp
            else:
                inside = r.abs() < clamp
            g = torch.where(inside, g, torch.zeros_like(g))
        return x * g


def _cuda_path(kernel, x, b, act, dim=1, alpha=None, gain=None, clamp=None):
    spec = bias_act.activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return bias_act._bias_act_cuda(kernel, x, b, dim, spec, alpha, gain, clamp)


@pytest.mark.parametrize('act', ACTS)
def test_cuda_path_wiring_on_cpu(act):
    g = torch.Generator().manual_seed(3)
    kernel = FakeKernel()
    x = (torch.randn(2, 3, 4, generator=g, dtype=torch.float64) * 2).requires_grad_()
    b = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    for opts in ({}, {'clamp': 1.1, 'gain': 1.3}):
        y = _cuda_path(kernel, x, b, act, **opts)
        torch.testing.assert_close(y, bias_act.bias_act(x, b, act=act, impl='ref', **opts), rtol=1e-12, atol=1e-12)
        fn = lambda x, b: _cuda_path(kernel, x, b, act, **opts)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))
    assert 1 in kernel.calls or act == 'linear'
    assert (2 in kernel.calls) == bias_act.activation_funcs[act].has_2nd_grad


def test_cuda_path_layouts_on_cpu():
    """Channels-last x and a bias on the last dim; gradients arrive with other strides."""
    kernel = FakeKernel()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    b = torch.randn(3, dtype=torch.float64).requires_grad_()
    y = _cuda_path(kernel, x, b, 'swish', clamp=0.8)
    assert y.stride() == x.stride()
    want = bias_act.bias_act(x, b, act='swish', clamp=0.8, impl='ref')
    torch.testing.assert_close(y, want)
    w = torch.randn(2, 3, 4, 5, dtype=torch.float64)  # contiguous grad_output
    got = torch.autograd.grad((y * w).sum(), [x, b])
    exp = torch.autograd.grad((want * w).sum(), [x, b])
    for a, e in zip(got, exp):
        torch.testing.assert_close(a, e)
    x2 = torch.randn(3, 5, 4, dtype=torch.float64).permute(0, 2, 1).requires_grad_()  # not dense-contiguous
    b2 = torch.randn(5, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, b: _cuda_path(kernel, x, b, 'tanh', dim=2), (x2, b2))


# GPU: the built kernel against the reference.

def _rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


@pytest.fixture(scope='module')
def cuda_plugin():
    assert bias_act.build_plugin() is not None  # a build failure must fail these tests, not skip them
    assert bias_act._op.get() is not None


def _grads(act, x, b, dim, opts, impl):
    """Value, first derivatives and second derivatives (through a nonlinear use of the gradient)."""
    x = x.detach().requires_grad_()
    b = b.detach().requires_grad_() if b is not None else None
    y = bias_act.bias_act(x, b, dim=dim, act=act, impl=impl, **opts)
    gen = torch.Generator(device=x.device).manual_seed(7)
    w = torch.randn(y.shape, generator=gen, device=x.device, dtype=x.dtype)
    inputs = [x] + ([b] if b is not None else [])
    g1 = torch.autograd.grad((y * w).sum(), inputs, create_graph=True)
    s = sum((g.float() ** 2).sum() for g in g1)
    g2 = torch.autograd.grad(s, inputs, allow_unused=True) if s.requires_grad else [None] * len(inputs)
    g2 = [torch.zeros_like(t) if g is None else g for g, t in zip(g2, inputs)]  # None: identically zero
    return [y] + list(g1) + g2


@pytest.mark.cuda
@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('opts', [{}, {'gain': 0.7, 'clamp': 0.9}], ids=['defaults', 'gain-clamp'])
@pytest.mark.parametrize('with_bias', [False, True])
def test_cuda_matches_ref_fp32(cuda_plugin, act, opts, with_bias):
    gen = torch.Generator(device='cuda').manual_seed(4)
    for shape, dim in [((4, 16, 8, 8), 1), ((8, 33), 1), ((2, 3, 5, 7), 3)]:
        x = torch.randn(shape, generator=gen, device='cuda') * 2
        b = torch.randn(shape[dim], generator=gen, device='cuda') if with_bias else None
        got = _grads(act, x, b, dim, opts, 'cuda')
        want = _grads(act, x, b, dim, opts, 'ref')
        for i, (a, e) in enumerate(zip(got, want)):
            assert a.dtype == e.dtype and a.shape == e.shape
            assert _rel_err(a, e) < 1e-5, f'{act} {shape} output {i}'


@pytest.mark.cuda
@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_matches_ref_low_precision(cuda_plugin, act, dtype):
    """Same inputs, reference evaluated in fp32: the kernel differs by output rounding only."""
    gen = torch.Generator(device='cuda').manual_seed(5)
    x = (torch.randn(4, 16, 8, 8, generator=gen, device='cuda') * 2).to(dtype)
    b = torch.randn(16, generator=gen, device='cuda').to(dtype)
    ulp = torch.finfo(dtype).eps
    for opts in ({}, {'clamp': 0.5}, {'clamp': 0.9, 'gain': 0.7}):  # 0.9 is not representable in fp16
        y = bias_act.bias_act(x, b, act=act, impl='cuda', **opts)
        want = bias_act.bias_act(x.float(), b.float(), act=act, impl='ref', **opts)
        assert y.dtype == dtype
        assert (y.float() - want).abs().max() <= ulp * want.abs().max() + 1e-6
        # Gradients: derived from the rounded output for y-based activations, so allow a few ulps.
        xg, xr = x.clone().requires_grad_(), x.float().requires_grad_()
        dy = torch.randn(x.shape, generator=gen, device='cuda').to(dtype)
        g = torch.autograd.grad(bias_act.bias_act(xg, b, act=act, impl='cuda', **opts), xg, dy)[0]
        gr = torch.autograd.grad(bias_act.bias_act(xr, b.float(), act=act, impl='ref', **opts), xr, dy.float())[0]
        assert g.dtype == dtype
        mismatch = ((g.float() - gr).abs() > 8 * ulp * gr.abs().max() + 1e-4)
        if opts:  # the clamp mask may flip where rounding moved y onto the clamp boundary (~ulp-wide band)
            assert mismatch.float().mean() < 4 * ulp
        else:
            assert not mismatch.any()


@pytest.mark.cuda
@pytest.mark.parametrize('act', ACTS)
def test_cuda_gradcheck_fp64(cuda_plugin, act):
    gen = torch.Generator(device='cuda').manual_seed(6)
    x = (torch.randn(2, 3, 4, generator=gen, device='cuda', dtype=torch.float64) * 2).requires_grad_()
    b = torch.randn(3, generator=gen, device='cuda', dtype=torch.float64).requires_grad_()
    for clamp in (None, 1.1):
        fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=clamp, impl='cuda')  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.cuda
def test_cuda_layouts_and_large_tensor(cuda_plugin):
    gen = torch.Generator(device='cuda').manual_seed(8)
    x = torch.randn(2, 8, 6, 5, generator=gen, device='cuda').to(memory_format=torch.channels_last)
    b = torch.randn(8, generator=gen, device='cuda')
    for act in ('lrelu', 'swish'):
        y = bias_act.bias_act(x, b, act=act, clamp=1.0, impl='cuda')
        assert _rel_err(y, bias_act.bias_act(x, b, act=act, clamp=1.0, impl='ref')) < 1e-6
    bt = torch.randn(7, generator=gen, device='cuda')
    for xt in (torch.randn(5, 7, 3, generator=gen, device='cuda').transpose(0, 2),   # permuted, dense
               torch.randn(3, 7, 10, generator=gen, device='cuda')[:, :, ::2]):      # strided, not dense
        xt = xt.requires_grad_()
        got = torch.autograd.grad(bias_act.bias_act(xt, bt, act='tanh', impl='cuda').square().sum(), xt)[0]
        want = torch.autograd.grad(bias_act.bias_act(xt, bt, act='tanh', impl='ref').square().sum(), xt)[0]
        assert _rel_err(got, want) < 1e-5
    # More elements than one grid covers (grid-stride loop) and a 64-bit-sized bias index.
    big = torch.randn(1, 5, 2000, 1800, generator=gen, device='cuda')
    bb = torch.randn(5, generator=gen, device='cuda')
    assert _rel_err(bias_act.bias_act(big, bb, act='lrelu', impl='cuda'),
                    bias_act.bias_act(big, bb, act='lrelu', impl='ref')) < 1e-6
