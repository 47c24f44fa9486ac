"""Upsample, pad, FIR-filter and downsample 2-D images: the resampling primitive behind
StyleGAN2's anti-aliased up/downsampling.

`impl='ref'` is plain PyTorch (zero insertion, F.pad, grouped conv2d, striding).
`impl='cuda'` does it in one kernel that skips the inserted zeros, when x is on a CUDA device
and the plugin builds; otherwise it takes the reference path after one warning. The CUDA
gradient is itself an upfirdn2d (swapped up/down, flipped filter), so second derivatives
need nothing extra.
"""

import os

import torch
import torch.nn.functional as F

from .. import custom_ops

_op = custom_ops.OpPlugin('upfirdn2d', module_name='kdgan_upfirdn2d', sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
                          headers=['upfirdn2d.h'], source_dir=os.path.dirname(os.path.abspath(__file__)))
build_plugin = _op.build  # build/import now (compile check); raises custom_ops.PluginError



def _parse_scaling(s):
    if isinstance(s, int):
        s = (s, s)
    sx, sy = (int(v) for v in s)
    assert sx >= 1 and sy >= 1, 'up/down factors must be >= 1'
    return sx, sy


def _parse_padding(p):
    if isinstance(p, int):
        p = (p, p)
    p = tuple(int(v) for v in p)
    if len(p) == 2:
        p = (p[0], p[0], p[1], p[1])
    assert len(p) == 4, 'padding is an int, (x, y) or (x0, x1, y0, y1)'
    return p


def _filter_size(f):
    """(width, height) of a filter; a 1-D filter is used along both axes."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2)
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


_get_filter_size = _filter_size  # the name upstream-era callers use


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Turn a list/array/scalar into a float32 filter tensor for the functions below.

    A 1-D filter of 8+ taps stays 1-D (applied separably) unless `separable` says otherwise;
    shorter ones become their outer product. `normalize` makes the taps sum to 1 so the
    image mean survives; `gain` scales the overall result.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in (0, 1, 2) and f.numel() > 0
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    assert f.ndim == (1 if separable else 2)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample by zero insertion, pad (negative crops), convolve with f, keep every
    `down`-th pixel. f: None (identity), 1-D (separable) or 2-D; x: [N, C, H, W].
    The filter is flipped (true convolution) unless flip_filter.
    """
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    assert impl in ('ref', 'cuda')
    up, down, padding = _parse_scaling(up), _parse_scaling(down), _parse_padding(padding)
    if _op.wants(x, impl) and (f is None or not f.requires_grad):
        plugin = _op.get()
        if plugin is not None:
            return _upfirdn2d_cuda(plugin, x, f, up, down, padding, flip_filter, gain)
    return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)


def _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain):
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2)
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding
    n, c, h, w = x.shape

    if upx > 1 or upy > 1:  # zero insertion: up-1 zeros after every pixel
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    x = F.pad(x, [px0, px1, py0, py1])  # negative amounts crop

    f = f.to(device=x.device, dtype=x.dtype)
    if not flip_filter:  # conv2d correlates; flipping makes it a convolution
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::downy, ::downx]


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Filter without resampling; the default padding keeps the image size."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample by `up` with filter f, centred, scaled by up**2 so the mean is preserved."""
    upx, upy = _parse_scaling(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Low-pass with f, then keep every `down`-th pixel; centred."""
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


# CUDA path.

def _upfirdn2d_cuda(plugin, x, f, up, down, padding, flip_filter, gain):
    wdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if f is None:
        f = torch.ones([1, 1])
    f = f.to(device=x.device, dtype=wdtype)
    w = f if flip_filter else f.flip(list(range(f.ndim)))  # the kernel correlates
    if w.ndim == 2:
        return _Upfirdn2dCuda.apply(x, w.contiguous(), (plugin, up, down, padding, float(gain)))
    # Separable: a horizontal pass then a vertical one, each a 2-D op with a thin filter.
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding
    x = _Upfirdn2dCuda.apply(x, w[None, :].contiguous(), (plugin, (upx, 1), (downx, 1), (px0, px1, 0, 0), float(gain)))
    return _Upfirdn2dCuda.apply(x, w[:, None].contiguous(), (plugin, (1, upy), (1, downy), (0, 0, py0, py1), 1.0))


class _Upfirdn2dCuda(torch.autograd.Function):
    """One kernel call; w holds cross-correlation weights and gets no gradient."""

    @staticmethod
    def forward(ctx, x, w, cfg):
        plugin, (upx, upy), (downx, downy), (px0, px1, py0, py1), gain = cfg
        y = plugin.upfirdn2d(x, w, upx, upy, downx, downy, px0, px1, py0, py1, gain)
        ctx.save_for_backward(w)
        ctx.cfg = cfg
        ctx.in_hw = (x.shape[2], x.shape[3])
        return y

    @staticmethod
    def backward(ctx, dy):
        w, = ctx.saved_tensors
        plugin, (upx, upy), (downx, downy), (px0, px1, py0, py1), gain = ctx.cfg
        if not ctx.needs_input_grad[0]:
            return None, None, None
        h, wd = ctx.in_hw
        oh, ow = dy.shape[2], dy.shape[3]
        fh, fw = w.shape
        # The adjoint: correlate dy (upsampled by `down`) with the flipped taps, with the
        # padding that lines tap k of the forward pass up with input pixel i again.
        gpad = (fw - px0 - 1, wd * upx - ow * downx + px0 - upx + 1,
                fh - py0 - 1, h * upy - oh * downy + py0 - upy + 1)
        dx = _Upfirdn2dCuda.apply(dy, w.flip([0, 1]), (plugin, (downx, downy), (upx, upy), gpad, gain))
        return dx, None, None
