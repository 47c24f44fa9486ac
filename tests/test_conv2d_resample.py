"""conv2d_resample against an independent float64 computation done step by step:
zero insertion, explicit pad/crop, FIR filter as a depthwise F.conv2d, the weight
as F.conv2d, FIR filter again and striding."""
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_resample as cr
from torch_utils.ops import upfirdn2d


def _reference(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    n, c, h, wd = x.shape
    if f is None:
        f2 = torch.ones([1, 1], dtype=torch.float64)
    else:
        f = f.to(torch.float64)
        f2 = f[:, None] * f[None, :] if f.ndim == 1 else f
    fh, fw = f2.shape
    px0, px1, py0, py1 = [padding] * 4 if isinstance(padding, int) else padding
    # Filter taps sit around each output sample: the same extra padding StyleGAN2 uses.
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2

    def fir(t, gain):
        k = f2 if flip_filter else f2.flip([0, 1])   # flip_filter=False: true convolution
        k = (k * gain)[None, None].repeat(t.shape[1], 1, 1, 1)
        return F.conv2d(t, k, groups=t.shape[1])

    z = torch.zeros([n, c, h * up, wd * up], dtype=torch.float64)
    z[:, :, ::up, ::up] = x                              # zero insertion
    z = F.pad(z, [px0, px1, py0, py1])                   # negative values crop
    if up > 1:
        z = fir(z, up ** 2)
    z = F.conv2d(z, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        z = fir(z, 1)[:, :, ::down, ::down]
    return z


def _filter(kind):
    if kind is None:
        return None
    if kind == 'sep':
        return upfirdn2d.setup_filter([1, 3, 3, 1])                  # symmetric, 2-D after setup
    if kind == 'sep1d':
        return upfirdn2d.setup_filter([1, 2, 5, 3, 1, 1, 2, 1])      # 1-D separable (>= 8 taps)
    g = torch.Generator().manual_seed(7)                              # asymmetric 2-D: exposes flips
    return upfirdn2d.setup_filter(torch.rand([4, 3], generator=g) + 0.1)


CASES = [
    # up, down, kernel, groups, padding, filter
    (2, 1, 3, 1, 1, 'sep'),
    (1, 2, 3, 1, 1, 'sep'),
    (2, 1, 1, 1, 0, 'sep'),
    (1, 2, 1, 1, 0, 'sep'),
    (2, 1, 3, 2, 1, 'asym'),
    (1, 2, 3, 2, [1, 0, 2, 1], 'asym'),
    (2, 1, 1, 2, [0, 1, 1, 0], 'asym'),
    (1, 2, 1, 2, 0, 'asym'),
    (2, 2, 3, 1, 1, 'asym'),
    (2, 1, 3, 1, [2, -1, 0, 3], 'sep1d'),
    (1, 2, 4, 1, 1, 'sep1d'),
    (1, 1, 3, 2, 1, None),
    (1, 1, 3, 1, [2, 0, -1, 1], 'sep'),   # f unused without resampling
    (4, 1, 3, 1, 1, 'sep1d'),
]


@pytest.mark.parametrize('flip_filter', [False, True])
@pytest.mark.parametrize('flip_weight', [True, False])
@pytest.mark.parametrize('up,down,k,groups,padding,fkind', CASES)
def test_matches_direct_computation(up, down, k, groups, padding, fkind, flip_weight, flip_filter):
    g = torch.Generator().manual_seed(1)
    x = torch.randn([2, 4, 6, 5], generator=g, dtype=torch.float64)
    w = torch.randn([6, 4 // groups, k, k + (k > 1)], generator=g, dtype=torch.float64)  # non-square kernel
    f = _filter(fkind)
    y = cr.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                           flip_weight=flip_weight, flip_filter=flip_filter)
    ref = _reference(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize('up,down,k,padding,expect', [
    (2, 1, 3, 1, (16, 12)), (1, 2, 3, 1, (4, 3)), (2, 1, 1, 0, (16, 12)), (1, 2, 1, 0, (4, 3)),
    (1, 1, 3, 1, (8, 6)),
])
def test_output_lands_on_resampled_grid(up, down, k, padding, expect):
    """StyleGAN2's use: k//2 padding gives exactly H*up or H/down."""
    x = torch.randn([1, 3, 8, 6])
    w = torch.randn([5, 3, k, k])
    y = cr.conv2d_resample(x, w, f=upfirdn2d.setup_filter([1, 3, 3, 1]), up=up, down=down, padding=padding)
    assert y.shape == (1, 5) + expect


@pytest.mark.parametrize('up,down,k', [(2, 1, 3), (1, 2, 3), (2, 1, 1), (1, 2, 1)])
def test_gradients(up, down, k):
    g = torch.Generator().manual_seed(2)
    x = torch.randn([1, 2, 3, 4], generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn([2, 1, k, k], generator=g, dtype=torch.float64, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    fn = lambda x, w: cr.conv2d_resample(x, w, f=f, up=up, down=down, padding=k // 2, groups=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)


def test_rejects_bad_shapes():
    with pytest.raises(AssertionError):
        cr.conv2d_resample(torch.zeros([1, 4, 4, 4]), torch.zeros([2, 3, 3, 3]))            # channels
    with pytest.raises(AssertionError):
        cr.conv2d_resample(torch.zeros([4, 4, 4]), torch.zeros([2, 4, 3, 3]))               # not NCHW
