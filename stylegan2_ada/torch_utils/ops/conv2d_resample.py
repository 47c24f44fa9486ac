"""A 2-D convolution combined with FIR-filtered resampling, the way StyleGAN2's layers use it.

What it computes (the definition every strategy below must reproduce): zero-stuff x by
`up`, pad by `padding` plus the filter's centring margins, filter with f (gain up**2),
convolve with w, then filter with f and keep every `down`-th pixel.

Why several strategies: each step is linear and shift-invariant, so the steps can be
regrouped to do the expensive convolution on the smaller image: a strided transposed
convolution replaces zero-stuffing + conv, a strided conv replaces conv + decimation,
and a 1x1 kernel simply runs on whichever side of the resampling is smaller. The table
`_STRATEGIES` lists them in priority order; the first whose condition holds runs. The
choice is part of the numerics (it fixes the order of the floating-point sums), so it
must not change for trained weights to keep giving the same images.
"""

import collections
from typing import Optional

import torch

from . import conv2d_gradfix
from . import upfirdn2d

_Job = collections.namedtuple('_Job', 'f up down pad groups flip_weight flip_filter')
_Job.__doc__ = """One call's settings; `pad` already includes the filter's centring margins."""

_Strategy = collections.namedtuple('_Strategy', 'name applies run')


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None, up: int = 1,
                    down: int = 1, padding=0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    """x [N, C_in, H, W], w [C_out, C_in // groups, kh, kw], f from upfirdn2d.setup_filter()
    (or None) -> [N, C_out, H', W'].

    `padding` counts pixels of the upsampled image. flip_weight=True correlates with w
    (torch's convention); False convolves.
    """
    _check_operands(x, w, up, down, groups)
    job = _Job(f, up, down, _full_padding(f, up, down, padding), groups, flip_weight, flip_filter)
    strategy = _choose(job, w)
    return strategy.run(x, w, job)


def _check_operands(x, w, up, down, groups):
    assert isinstance(x, torch.Tensor) and x.ndim == 4, 'x must be an NCHW tensor'
    assert isinstance(w, torch.Tensor) and w.ndim == 4, 'w must be an [out, in/groups, kh, kw] tensor'
    assert w.dtype == x.dtype, f'x and w differ in dtype: {x.dtype} vs {w.dtype}'
    for name, value in (('up', up), ('down', down), ('groups', groups)):
        assert isinstance(value, int) and value >= 1, f'{name} must be an int >= 1, got {value!r}'
    assert x.shape[1] == groups * w.shape[1], f'{x.shape[1]} input channels vs w {tuple(w.shape)}, groups={groups}'
    assert w.shape[0] % groups == 0, f'{w.shape[0]} output channels do not split into {groups} groups'


def _full_padding(f, up, down, padding):
    """Caller's padding plus the filter margins of each resampling that takes place."""
    pad = list(upfirdn2d._parse_padding(padding))
    if up > 1:
        pad = upfirdn2d._aligned(pad, f, up, 1)
    if down > 1:
        pad = upfirdn2d._aligned(pad, f, 1, down)
    return pad


def _choose(job, w):
    kh, kw = w.shape[2], w.shape[3]
    for strategy in _STRATEGIES:
        if strategy.applies(job, kh, kw):
            return strategy
    raise AssertionError('the last strategy applies to everything')


def _correlate(x, w, job, stride=1, padding=0):
    """Forward conv in torch's (correlation) convention; a true convolution mirrors w."""
    if not job.flip_weight:
        w = w.flip([2, 3])
    return conv2d_gradfix.conv2d(x, w, stride=stride, padding=padding, groups=job.groups)


def _scatter(x, w, job, stride, padding):
    """Transposed conv: zero-stuffing by `stride` followed by a full convolution with w.

    A transposed conv applies its kernel mirrored relative to conv2d, so the taps are
    flipped when the caller wants correlation. Its weight layout is [in, out/groups]
    per group, hence the regrouping of w's two channel axes.
    """
    if job.flip_weight:
        w = w.flip([2, 3])
    g = job.groups
    w = w.unflatten(0, (g, -1)).transpose(1, 2).flatten(0, 1)
    return conv2d_gradfix.conv_transpose2d(x, w, stride=stride, padding=padding, groups=g)


def _run_pointwise_down(x, w, job):
    """1x1 kernel, downsampling: decimate first, then the per-pixel conv on the small image."""
    x = upfirdn2d.upfirdn2d(x, job.f, down=job.down, padding=job.pad, flip_filter=job.flip_filter)
    return _correlate(x, w, job)


def _run_pointwise_up(x, w, job):
    """1x1 kernel, upsampling: the per-pixel conv first, on the small image."""
    x = _correlate(x, w, job)
    return upfirdn2d.upfirdn2d(x, job.f, up=job.up, padding=job.pad, gain=job.up ** 2, flip_filter=job.flip_filter)


def _run_filter_strided(x, w, job):
    """Downsampling: low-pass at full size; the conv's stride does the decimation."""
    x = upfirdn2d.upfirdn2d(x, job.f, padding=job.pad, flip_filter=job.flip_filter)
    return _correlate(x, w, job, stride=job.down)


def _crop_split(taps, up, before, after):
    """Split the crop of one axis between the transposed conv and the filter pass.

    Relative to a full transposed conv, the definition keeps `taps - 1 - before` fewer
    samples at the start and `taps - up - after` fewer at the end. The conv's own padding
    can only crop both ends equally, so it takes the common non-negative part; the rest
    (negative meaning extra padding) goes to upfirdn2d. Returns (conv_pad, rest0, rest1).
    """
    drop0, drop1 = taps - 1 - before, taps - up - after
    common = max(min(drop0, drop1), 0)
    return common, common - drop0, common - drop1


def _run_transposed(x, w, job):
    """Upsampling (optionally followed by downsampling): strided transposed conv, then
    the interpolation filter, then decimation."""
    cx, rx0, rx1 = _crop_split(w.shape[3], job.up, job.pad[0], job.pad[1])
    cy, ry0, ry1 = _crop_split(w.shape[2], job.up, job.pad[2], job.pad[3])
    x = _scatter(x, w, job, stride=job.up, padding=[cy, cx])
    x = upfirdn2d.upfirdn2d(x, job.f, padding=[rx0, rx1, ry0, ry1], gain=job.up ** 2, flip_filter=job.flip_filter)
    if job.down > 1:
        x = upfirdn2d.upfirdn2d(x, job.f, down=job.down, flip_filter=job.flip_filter)
    return x


def _run_padded_conv(x, w, job):
    """No resampling and a padding torch's conv can express (same on both sides, >= 0)."""
    x0, _, y0, _ = job.pad
    return _correlate(x, w, job, padding=[y0, x0])


def _run_pad_then_conv(x, w, job):
    """No resampling, uneven or negative padding: pad/crop explicitly, then a valid conv."""
    x = upfirdn2d.upfirdn2d(x, None, padding=job.pad, flip_filter=job.flip_filter)
    return _correlate(x, w, job)


def _torch_can_pad(pad):
    x0, x1, y0, y1 = pad
    return x0 == x1 and y0 == y1 and min(x0, y0) >= 0


_STRATEGIES = (
    _Strategy('pointwise_down', lambda j, kh, kw: kh == kw == 1 and j.up == 1 and j.down > 1, _run_pointwise_down),
    _Strategy('pointwise_up', lambda j, kh, kw: kh == kw == 1 and j.down == 1 and j.up > 1, _run_pointwise_up),
    _Strategy('filter_strided', lambda j, kh, kw: j.up == 1 and j.down > 1, _run_filter_strided),
    _Strategy('transposed', lambda j, kh, kw: j.up > 1, _run_transposed),
    _Strategy('padded_conv', lambda j, kh, kw: _torch_can_pad(j.pad), _run_padded_conv),
    _Strategy('pad_then_conv', lambda j, kh, kw: True, _run_pad_then_conv),
)
