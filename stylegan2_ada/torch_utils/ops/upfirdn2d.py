"""Resampling of NCHW images with a FIR filter: zero-stuff by `up`, pad (or crop), filter,
then keep every `down`-th pixel.

This one primitive gives StyleGAN2 all of its anti-aliased up- and downsampling, and the
augment pipe its wavelet resizes. Two implementations share the argument handling:

* the reference, built from torch ops (strided copy, F.pad, depthwise conv2d, slicing),
  which runs everywhere and is what CPU results, golden files and gradients come from;
* one fused CUDA kernel (upfirdn2d.cu) that never touches the inserted zeros. It is tried
  for impl='cuda' on CUDA tensors; if it cannot be built the op warns once and uses the
  reference. Its gradient is again the kernel (adjoint geometry, mirrored taps), so the
  second derivatives the regularisers need come for free.

Filters follow the true-convolution convention (taps mirrored before correlating) unless
`flip_filter=True`. A 1-D filter means the same taps along both axes, applied as two
passes.
"""

import collections
import numbers
import os
from typing import Optional

import torch
import torch.nn.functional as F

from .. import custom_ops

_op = custom_ops.OpPlugin('upfirdn2d', module_name='kdgan_upfirdn2d', sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
                          headers=['upfirdn2d.h'], source_dir=os.path.dirname(os.path.abspath(__file__)))
build_plugin = _op.build  # compile check: builds or imports now, raises custom_ops.PluginError

_Geometry = collections.namedtuple('_Geometry', 'up down pad')
_Geometry.__doc__ = """Normalised arguments: up=(x, y), down=(x, y), pad=(x_before, x_after, y_before, y_after)."""


def _xy_factor(value):
    """An int or an (x, y) pair of resampling factors, each at least 1."""
    pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    assert len(pair) == 2, f'expected an int or an (x, y) pair, got {value!r}'
    fx, fy = int(pair[0]), int(pair[1])
    assert fx >= 1 and fy >= 1, f'resampling factors must be >= 1, got {value!r}'
    return fx, fy


def _four_sides(padding):
    """Padding as (x_before, x_after, y_before, y_after); an int applies to all four sides and
    an (x, y) pair to both sides of its axis. Negative amounts crop."""
    if isinstance(padding, numbers.Integral):
        return (int(padding),) * 4
    sides = [int(v) for v in padding]
    if len(sides) == 2:
        sides = [sides[0], sides[0], sides[1], sides[1]]
    assert len(sides) == 4, f'padding must be an int, (x, y) or (x0, x1, y0, y1), got {padding!r}'
    return tuple(sides)


def _footprint(f):
    """(width, height) in taps; None is the 1x1 identity and a 1-D filter is square."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2), 'a filter is a 1-D or 2-D tensor'
    width = int(f.shape[-1])
    return width, (width if f.ndim == 1 else int(f.shape[0]))


def _geometry(up, down, padding):
    """The single place where the user-facing argument forms are checked and expanded."""
    return _Geometry(_xy_factor(up), _xy_factor(down), _four_sides(padding))


def _aligned(padding, f, up, down):
    """`padding` plus the margins that keep the output grid centred on the input grid.

    Per axis, a k-tap filter with factors u (up) and d (down) needs (k + u - d) // 2 extra
    samples before and (k - u - d + 1) // 2 after; with u = d = 1 that is the usual
    'same' padding of a k-tap filter.
    """
    x0, x1, y0, y1 = _four_sides(padding)
    (kx, ky), (ux, uy), (dx, dy) = _footprint(f), _xy_factor(up), _xy_factor(down)
    return [x0 + (kx + ux - dx) // 2, x1 + (kx - ux - dx + 1) // 2,
            y0 + (ky + uy - dy) // 2, y1 + (ky - uy - dy + 1) // 2]


# Names that callers written for the upstream layout (and pickled network sources) use.
_parse_scaling = _xy_factor
_parse_padding = _four_sides
_get_filter_size = _footprint


def setup_filter(f, device: torch.device = torch.device('cpu'), normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1, separable: Optional[bool] = None) -> torch.Tensor:
    """Make a float32 filter tensor from a list, array, scalar or None.

    1-D taps stay 1-D (cheaper: two thin passes) when `separable` is True or, left as None,
    when there are 8 or more of them; otherwise their outer product is used. `normalize`
    scales the taps to sum to 1 so flat regions keep their value; `gain` multiplies the
    whole 2-D response, hence sqrt(gain) per axis for a separable filter.
    """
    taps = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
    assert taps.numel() > 0 and taps.ndim <= 2, 'a filter has 0, 1 or 2 dimensions'
    if taps.ndim == 0:
        taps = taps.reshape(1)
    if taps.ndim == 1:
        keep_1d = (taps.numel() >= 8) if separable is None else bool(separable)
        if not keep_1d:
            taps = torch.outer(taps, taps)
    else:
        assert not separable, 'a 2-D filter cannot be separable'
    if normalize:
        taps = taps / taps.sum()
    if flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    taps = taps * (gain ** (taps.ndim / 2))
    return taps.to(device=device)


def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up=1, down=1, padding=0, flip_filter: bool = False,
              gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    """x [N, C, H, W] -> upsample (zero insertion), pad, filter with f, downsample.

    f: None (identity), a 1-D separable or a 2-D filter from setup_filter(). `up`, `down`
    are ints or (x, y); `padding` an int, (x, y) or (x0, x1, y0, y1), in upsampled pixels.
    """
    assert isinstance(x, torch.Tensor) and x.ndim == 4, 'x must be an NCHW tensor'
    assert impl in ('ref', 'cuda'), f'unknown impl {impl!r}'
    geo = _geometry(up, down, padding)
    kernel = _usable_kernel(x, f, impl)
    if kernel is not None:
        return _kernel_path(kernel, x, f, geo.up, geo.down, geo.pad, flip_filter, gain)
    return _reference(x, f, geo, flip_filter, gain)


def filter2d(x: torch.Tensor, f: Optional[torch.Tensor], padding=0, flip_filter: bool = False, gain: float = 1,
             impl: str = 'cuda') -> torch.Tensor:
    """Filter at the same resolution; with padding=0 the output has the input's size."""
    return upfirdn2d(x, f, padding=_aligned(padding, f, 1, 1), flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: Optional[torch.Tensor], up=2, padding=0, flip_filter: bool = False,
               gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    """Upsample by `up` and interpolate with f. The up_x * up_y gain makes up for the
    inserted zeros, so a normalised filter keeps the image's mean."""
    ux, uy = _xy_factor(up)
    return upfirdn2d(x, f, up=(ux, uy), padding=_aligned(padding, f, (ux, uy), 1),
                     flip_filter=flip_filter, gain=gain * ux * uy, impl=impl)


def downsample2d(x: torch.Tensor, f: Optional[torch.Tensor], down=2, padding=0, flip_filter: bool = False,
                 gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    """Low-pass with f, then keep every `down`-th pixel, aligned to the input grid."""
    dx, dy = _xy_factor(down)
    return upfirdn2d(x, f, down=(dx, dy), padding=_aligned(padding, f, 1, (dx, dy)),
                     flip_filter=flip_filter, gain=gain, impl=impl)


def _reference(x, f, geo, flip_filter, gain):
    """The definition in torch ops; every step is linear, so autograd differentiates it
    to any order."""
    channels = x.shape[1]
    y = F.pad(_zero_stuffed(x, geo.up), list(geo.pad))
    for weight in _depthwise_passes(f, channels, y, flip_filter, gain):
        y = F.conv2d(y, weight, groups=channels)
    step_x, step_y = geo.down
    return y[:, :, ::step_y, ::step_x]


def _zero_stuffed(x, up):
    """x with up-1 zero rows/columns after each pixel (a new contiguous tensor)."""
    ux, uy = up
    if ux == 1 and uy == 1:
        return x
    n, c, h, w = x.shape
    out = x.new_zeros([n, c, h * uy, w * ux])
    out[:, :, ::uy, ::ux] = x
    return out


def _depthwise_passes(f, channels, like, flip_filter, gain):
    """Grouped-conv weights, one per pass: a 2-D filter is one pass, a 1-D filter a
    horizontal then a vertical one. conv2d correlates, so the taps are mirrored unless
    the caller asked for correlation (flip_filter)."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=like.device)
    taps = f.to(device=like.device, dtype=like.dtype)
    assert taps.ndim in (1, 2), 'a filter is a 1-D or 2-D tensor'
    if not flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    taps = taps * (gain ** (taps.ndim / 2))
    k = taps.shape[-1]
    shapes = [taps.shape] if taps.ndim == 2 else [(1, k), (k, 1)]
    return [taps.reshape(1, 1, *s).expand(channels, 1, *s).contiguous() for s in shapes]


def _usable_kernel(x, f, impl):
    """The built plugin when this call should and can use it, else None. A filter that
    wants a gradient stays on the reference path (the kernel has no filter gradient)."""
    if not _op.wants(x, impl):
        return None
    if f is not None and f.requires_grad:
        return None
    return _op.get()


_KernelCall = collections.namedtuple('_KernelCall', 'plugin up down pad gain')


def _kernel_path(plugin, x, f, up, down, pad, flip_filter, gain):
    """Run the kernel, which correlates with `w`; a 1-D filter becomes two thin 2-D calls."""
    wdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = (torch.ones([1, 1]) if f is None else f).to(device=x.device, dtype=wdtype)
    if not flip_filter:
        w = w.flip(list(range(w.ndim)))
    if w.ndim == 2:
        return _KernelOp.apply(x, w.contiguous(), _KernelCall(plugin, up, down, pad, float(gain)))
    across = _KernelCall(plugin, (up[0], 1), (down[0], 1), (pad[0], pad[1], 0, 0), float(gain))
    along = _KernelCall(plugin, (1, up[1]), (1, down[1]), (0, 0, pad[2], pad[3]), 1.0)
    y = _KernelOp.apply(x, w.reshape(1, -1).contiguous(), across)
    return _KernelOp.apply(y, w.reshape(-1, 1).contiguous(), along)


_upfirdn2d_cuda = _kernel_path  # name the CPU wiring tests call with a stand-in kernel


def _adjoint_side(size_in, size_out, taps, up, down, before):
    """(before, after) padding of the adjoint op along one axis: it maps output positions
    back onto the input positions whose taps reached them in the forward pass."""
    return taps - 1 - before, size_in * up - size_out * down + before - up + 1


class _KernelOp(torch.autograd.Function):
    """One kernel launch; the taps are constants (no gradient)."""

    @staticmethod
    def forward(ctx, x, w, call):
        ctx.save_for_backward(w)
        ctx.call = call
        ctx.in_size = tuple(x.shape[2:])
        (ux, uy), (dx, dy), (x0, x1, y0, y1) = call.up, call.down, call.pad
        return call.plugin.upfirdn2d(x, w, ux, uy, dx, dy, x0, x1, y0, y1, call.gain)

    @staticmethod
    def backward(ctx, dy):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        w, = ctx.saved_tensors
        call = ctx.call
        (h, wd), (oh, ow), (fh, fw) = ctx.in_size, dy.shape[2:], w.shape
        ax = _adjoint_side(wd, ow, fw, call.up[0], call.down[0], call.pad[0])
        ay = _adjoint_side(h, oh, fh, call.up[1], call.down[1], call.pad[2])
        back = call._replace(up=call.down, down=call.up, pad=ax + ay)
        return _KernelOp.apply(dy, w.flip([0, 1]), back), None, None
