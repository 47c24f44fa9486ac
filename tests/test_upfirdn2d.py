"""upfirdn2d family: reference path against an independent tap-by-tap computation and
against known resamplers, derivatives by gradcheck, the CUDA path's autograd (adjoint
padding) on CPU through a stand-in kernel, and on a GPU the real kernel."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import upfirdn2d as U


def np_upfirdn(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """The definition in float64 NumPy: output pixel o sums taps k over the zero-inserted
    image at o*down + k - pad0 (outside the image counts as 0); the filter is flipped
    (true convolution) unless flip_filter. A 1-D filter means the same taps on both axes."""
    x = np.asarray(x, dtype=np.float64)
    f = np.ones((1, 1)) if f is None else np.asarray(f, dtype=np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)
    w = f if flip_filter else f[::-1, ::-1]
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    n, c, h, wd = x.shape
    fh, fw = w.shape
    hu, wu = h * upy, wd * upx
    xu = np.zeros((n, c, hu, wu))
    xu[:, :, ::upy, ::upx] = x
    oh = (hu + py0 + py1 - fh) // downy + 1
    ow = (wu + px0 + px1 - fw) // downx + 1
    out = np.zeros((n, c, oh, ow))
    for ky in range(fh):
        jy = np.arange(oh) * downy + ky - py0
        vy = (jy >= 0) & (jy < hu)
        for kx in range(fw):
            jx = np.arange(ow) * downx + kx - px0
            vx = (jx >= 0) & (jx < wu)
            taps = xu[:, :, np.clip(jy, 0, hu - 1)][:, :, :, np.clip(jx, 0, wu - 1)]
            out += w[ky, kx] * taps * (vy[:, None] & vx[None, :])
    return out * gain


def _filters():
    g = torch.Generator().manual_seed(0)
    return {
        'sep4': U.setup_filter([1.0, 2.0, 5.0, 3.0], separable=True),  # asymmetric: catches flips
        'sep8': U.setup_filter([1, 4, 2, 7, 3, 1, 5, 2]),                # 8 taps: separable by default
        'full3x5': torch.rand(3, 5, generator=g) + 0.1,                   # non-separable, non-square
    }


FILTERS = _filters()


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: handing work between threads costs more than it saves (much more on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
SCALES = [1, 2, 4]
PADS = [(0, 0, 0, 0), (2, 1, 3, 0), (-1, 3, 2, -2)]


@pytest.mark.parametrize('up,down', list(itertools.product(SCALES, SCALES)))
@pytest.mark.parametrize('pad', PADS, ids=['nopad', 'asym', 'neg'])
@pytest.mark.parametrize('fname', ['sep4', 'full3x5'])
@pytest.mark.parametrize('flip,gain', [(False, 1.0), (True, 2.5)], ids=['conv', 'flip-gain'])
def test_ref_matches_direct(up, down, pad, fname, flip, gain):
    f = FILTERS[fname]
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(up * 10 + down))
    y = U.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain, impl='ref')
    want = np_upfirdn(x.numpy(), f.numpy(), (up, up), (down, down), pad, flip, gain)
    assert y.shape == want.shape
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('up,down,pad', [((2, 1), (1, 2), (1, 2)), ((1, 4), (2, 1), (3, -1, 0, 2)), ((3, 2), (2, 3), 1)])
@pytest.mark.parametrize('fname', [None, 'sep8', 'full3x5'])
def test_ref_anisotropic_and_identity_filter(up, down, pad, fname):
    f = None if fname is None else FILTERS[fname]
    x = torch.randn(1, 2, 8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = U.upfirdn2d(x, f, up=up, down=down, padding=pad, impl='ref')
    p = U._parse_padding(pad)
    up2 = up if isinstance(up, tuple) else (up, up)
    down2 = down if isinstance(down, tuple) else (down, down)
    want = np_upfirdn(x.numpy(), None if f is None else f.numpy(), up2, down2, p)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)


def test_argument_forms():
    assert U._parse_padding(3) == (3, 3, 3, 3)
    assert U._parse_padding((1, 2)) == (1, 1, 2, 2)
    assert U._parse_padding([1, 2, 3, 4]) == (1, 2, 3, 4)
    assert U._parse_scaling(2) == (2, 2) and U._parse_scaling((1, 3)) == (1, 3)
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    f = FILTERS['full3x5']
    assert torch.equal(U.upfirdn2d(x, f, padding=2, impl='ref'), U.upfirdn2d(x, f, padding=(2, 2, 2, 2), impl='ref'))
    # On a CPU tensor impl='cuda' is the reference path.
    assert torch.equal(U.upfirdn2d(x, f, up=2, padding=1, impl='cuda'), U.upfirdn2d(x, f, up=2, padding=1, impl='ref'))


def test_setup_filter():
    f = U.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert U.setup_filter([1] * 8).shape == (8,)                    # long 1-D filters stay separable
    assert U.setup_filter([1] * 8, separable=False).shape == (8, 8)
    assert U.setup_filter([1, 2], separable=True).shape == (2,)
    assert U.setup_filter(None).shape == (1, 1) and U.setup_filter(3.0).item() == 1.0
    torch.testing.assert_close(U.setup_filter([1, 2, 3], normalize=False, flip_filter=True),
                               torch.outer(torch.tensor([3., 2, 1]), torch.tensor([3., 2, 1])))
    torch.testing.assert_close(U.setup_filter([1, 1], gain=4).sum(), torch.tensor(4.0))
    torch.testing.assert_close(U.setup_filter([1] * 8, gain=4).sum(), torch.tensor(2.0))  # sqrt per axis
    assert U.setup_filter([1, 1], device=torch.device('cpu')).device.type == 'cpu'


# The wrappers against independent resamplers.

def test_upsample2d_box_is_nearest_neighbour():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    y = U.upsample2d(x, U.setup_filter([1, 1]), impl='ref')
    torch.testing.assert_close(y, F.interpolate(x, scale_factor=2, mode='nearest'))


def test_upsample2d_131_is_bilinear_inside():
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    y = U.upsample2d(x, U.setup_filter([1, 3, 3, 1]), impl='ref')
    want = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    assert y.shape == want.shape
    torch.testing.assert_close(y[:, :, 1:-1, 1:-1], want[:, :, 1:-1, 1:-1])  # borders: zero pad vs edge clamp


def test_upsample2d_preserves_mean_and_handles_anisotropy():
    x = torch.full((1, 2, 8, 8), 3.0, dtype=torch.float64)
    # A 4-tap box puts taps summing to 1/up on every polyphase branch for up = 2 and 4.
    y = U.upsample2d(x, U.setup_filter([1, 1, 1, 1]), up=(2, 4), padding=(1, 2))
    assert y.shape == (1, 2, 8 * 4 + 4, 8 * 2 + 2)
    torch.testing.assert_close(y[:, :, 6:-6, 4:-4], torch.full_like(y[:, :, 6:-6, 4:-4], 3.0))


def test_downsample2d_box_is_avg_pool():
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    y = U.downsample2d(x, U.setup_filter([1, 1]), impl='ref')
    torch.testing.assert_close(y, F.avg_pool2d(x, 2))
    y4 = U.downsample2d(x[:, :, :8, :4], U.setup_filter([1, 1, 1, 1]), down=4, impl='ref')
    torch.testing.assert_close(y4, F.avg_pool2d(x[:, :, :8, :4], 4))


def test_filter2d_same_size_true_convolution():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1
    torch.testing.assert_close(U.filter2d(x, delta, impl='ref'), x)
    f = torch.rand(3, 3)
    want = F.conv2d(x, f.flip([0, 1]).double()[None, None].repeat(3, 1, 1, 1), padding=1, groups=3)
    torch.testing.assert_close(U.filter2d(x, f, impl='ref'), want)
    torch.testing.assert_close(U.filter2d(x, f, flip_filter=True, gain=2, impl='ref'),
                               2 * F.conv2d(x, f.double()[None, None].repeat(3, 1, 1, 1), padding=1, groups=3))
    assert U.filter2d(x, torch.rand(4, 2)).shape == x.shape  # even sizes too
    assert U.filter2d(x, torch.rand(4, 2), padding=(1, 2)).shape == (2, 3, 7 + 4, 6 + 2)


# Derivatives.

GRAD_CASES = [
    dict(up=2, down=1, padding=(2, 1, 1, 2), fname='sep4', flip=False, gain=1.0),
    dict(up=1, down=2, padding=(1, 1, -1, 2), fname='full3x5', flip=True, gain=2.0),
    dict(up=(2, 1), down=(1, 2), padding=0, fname='full3x5', flip=False, gain=1.0),
    dict(up=4, down=2, padding=(-1, 3, 2, 0), fname='sep8', flip=False, gain=0.5),
]


@pytest.mark.parametrize('case', GRAD_CASES, ids=range(len(GRAD_CASES)))
def test_ref_gradcheck(case):
    f = FILTERS[case['fname']].double()
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda x: U.upfirdn2d(x, f, up=case['up'], down=case['down'], padding=case['padding'],  # noqa: E731
                               flip_filter=case['flip'], gain=case['gain'], impl='ref')
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


class FakeKernel:
    """Does what upfirdn2d.h specifies (w taken as cross-correlation weights), opaquely to
    autograd, so the CUDA path's backward (flipped taps, swapped up/down, adjoint padding)
    is checked on CPU."""

    def __init__(self):
        self.calls = 0

    def upfirdn2d(self, x, w, upx, upy, downx, downy, px0, px1, py0, py1, gain):
        self.calls += 1
        out = np_upfirdn(x.detach().numpy(), w.detach().numpy(), (upx, upy), (downx, downy),
                         (px0, px1, py0, py1), flip_filter=True, gain=gain)
        return torch.from_numpy(out).to(x.dtype)


def _cuda_path(kernel, x, f, up=1, down=1, padding=0, flip=False, gain=1.0):
    return U._upfirdn2d_cuda(kernel, x, f, U._parse_scaling(up), U._parse_scaling(down),
                             U._parse_padding(padding), flip, gain)


@pytest.mark.parametrize('case', GRAD_CASES + [dict(up=1, down=1, padding=0, fname=None, flip=False, gain=3.0)],
                         ids=range(len(GRAD_CASES) + 1))
def test_cuda_path_wiring_on_cpu(case):
    kernel = FakeKernel()
    f = None if case['fname'] is None else FILTERS[case['fname']]
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    kw = dict(up=case['up'], down=case['down'], padding=case['padding'], gain=case['gain'])
    fn = lambda x: _cuda_path(kernel, x, f, flip=case['flip'], **kw)  # noqa: E731
    torch.testing.assert_close(fn(x), U.upfirdn2d(x, f, flip_filter=case['flip'], impl='ref', **kw))
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    assert kernel.calls > 0


# GPU: the built kernel against the reference.

def _rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


@pytest.fixture(scope='module')
def cuda_plugin():
    assert U.build_plugin() is not None  # a build failure must fail these tests, not skip them
    assert U._op.get() is not None


def _value_and_grads(x, f, kw, impl):
    x = x.detach().requires_grad_()
    y = U.upfirdn2d(x, f, impl=impl, **kw)
    w = torch.randn(y.shape, generator=torch.Generator(device=x.device).manual_seed(3), device=x.device, dtype=x.dtype)
    g1, = torch.autograd.grad((y * y * w).sum(), x, create_graph=True)   # nonlinear use, so
    g2, = torch.autograd.grad((g1 * g1).sum(), x)                         # the 2nd derivative is not 0
    return y, g1, g2


CUDA_CASES = [dict(up=u, down=d, padding=p, flip_filter=fl, gain=g)
              for (u, d), p, (fl, g) in itertools.product(
                  [(1, 1), (2, 1), (1, 2), (4, 2), (2, 4), ((2, 1), (1, 2))],
                  PADS, [(False, 1.0), (True, 2.5)])]


@pytest.mark.cuda
@pytest.mark.parametrize('fname', list(FILTERS) + [None])
def test_cuda_matches_ref_fp32(cuda_plugin, fname):
    gen = torch.Generator(device='cuda').manual_seed(1)
    f = None if fname is None else FILTERS[fname].cuda()
    x = torch.randn(2, 3, 13, 11, generator=gen, device='cuda')
    for kw in CUDA_CASES:
        got = _value_and_grads(x, f, kw, 'cuda')
        want = _value_and_grads(x, f, kw, 'ref')
        for i, (a, e) in enumerate(zip(got, want)):
            assert a.shape == e.shape and a.dtype == e.dtype
            assert _rel_err(a, e) < 1e-5, f'{fname} {kw} output {i}'


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_low_precision_is_rounded_fp32(cuda_plugin, dtype):
    """The kernel accumulates in fp32: compared with an fp32 reference on the same inputs,
    only the final rounding differs."""
    gen = torch.Generator(device='cuda').manual_seed(2)
    x = torch.randn(2, 4, 16, 16, generator=gen, device='cuda').to(dtype)
    ulp = torch.finfo(dtype).eps
    for fname in FILTERS:
        f = FILTERS[fname].cuda()
        for kw in CUDA_CASES[::3]:
            y = U.upfirdn2d(x, f, impl='cuda', **kw)
            want = U.upfirdn2d(x.float(), f, impl='ref', **kw)
            assert y.dtype == dtype
            tol = ulp * want.abs() + 2 * ulp * want.abs().max() * (2 if f.ndim == 1 else 0) + 1e-6
            assert ((y.float() - want).abs() <= tol).all(), f'{fname} {kw}'


@pytest.mark.cuda
@pytest.mark.parametrize('case', GRAD_CASES, ids=range(len(GRAD_CASES)))
def test_cuda_gradcheck_fp64(cuda_plugin, case):
    f = FILTERS[case['fname']].cuda()
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, device='cuda', requires_grad=True)
    fn = lambda x: U.upfirdn2d(x, f, up=case['up'], down=case['down'], padding=case['padding'],  # noqa: E731
                               flip_filter=case['flip'], gain=case['gain'], impl='cuda')
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.cuda
def test_cuda_wrappers_layouts_and_large_tensor(cuda_plugin):
    gen = torch.Generator(device='cuda').manual_seed(4)
    f = U.setup_filter([1, 3, 3, 1], device=torch.device('cuda'))
    x = torch.randn(2, 8, 16, 12, generator=gen, device='cuda')
    for fn in (U.upsample2d, U.downsample2d, U.filter2d):
        assert _rel_err(fn(x, f, impl='cuda'), fn(x, f, impl='ref')) < 1e-6
    xl = x.to(memory_format=torch.channels_last)
    assert _rel_err(U.upsample2d(xl, f), U.upsample2d(x, f, impl='ref')) < 1e-6
    xs = x[:, ::2, 1:, ::3]  # strided view
    assert _rel_err(U.downsample2d(xs, f, padding=1), U.downsample2d(xs.contiguous(), f, padding=1, impl='ref')) < 1e-6
    big = torch.randn(4, 16, 512, 512, generator=gen, device='cuda')  # > one grid of threads
    assert _rel_err(U.upsample2d(big, f), U.upsample2d(big, f, impl='ref')) < 1e-6
    # A filter that needs a gradient goes the reference way and gets one.
    fg = f.clone().requires_grad_()
    U.filter2d(x, fg).sum().backward()
    assert fg.grad is not None and fg.grad.abs().sum() > 0
