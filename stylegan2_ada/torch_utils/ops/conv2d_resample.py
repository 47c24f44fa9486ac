"""Convolution fused with FIR-filtered up/downsampling, as StyleGAN2 uses it.

Meaning (the reference this must equal): upsample x by zero insertion (`up`),
pad, filter with f (gain up**2), convolve with w, then filter with f and keep
every `down`-th sample. Linear shift-invariant steps commute, which lets the
work run at the lower resolution: upsampling becomes a strided transposed
conv followed by the FIR filter, downsampling becomes the FIR filter followed
by a strided conv, and 1x1 kernels move to whichever side is smaller.

`padding` is relative to the upsampled image; the filter's own padding is added
here so that e.g. a 3x3 kernel with padding=1 gives exactly H*up or H//down.
"""

import torch

from . import conv2d_gradfix
from . import upfirdn2d


def _filter_size(f):
    """(width, height) of a FIR filter: 1-D separable [fw], 2-D [fh, fw], or None."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2), 'f must be a 1-D or 2-D tensor'
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def _padding4(padding):
    if isinstance(padding, int):
        return [padding] * 4
    assert len(padding) in (2, 4), padding
    if len(padding) == 2:
        return [int(padding[0])] * 2 + [int(padding[1])] * 2
    return [int(p) for p in padding]


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d_gradfix op; flip_weight=True is correlation, False is true convolution."""
    if transpose:
        # Transposed conv with kernel K is a full true convolution with K, so the
        # kernel is flipped when the caller wants correlation.
        if flip_weight:
            w = w.flip([2, 3])
        out_ch, in_per_group, kh, kw = w.shape
        w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        w = w.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        return conv2d_gradfix.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    if not flip_weight:
        w = w.flip([2, 3])
    return conv2d_gradfix.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """x [N, C_in, H, W], w [C_out, C_in//groups, kh, kw], f from upfirdn2d.setup_filter().

    Returns [N, C_out, H', W'].
    """
    assert isinstance(x, torch.Tensor) and x.ndim == 4, 'x must be NCHW'
    assert isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype, 'w must be OIHW, x.dtype'
    assert isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1
    assert isinstance(groups, int) and groups >= 1
    assert x.shape[1] == w.shape[1] * groups and w.shape[0] % groups == 0, (x.shape, w.shape, groups)
    out_ch, _, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)

    # Add the padding the filters themselves need so the output lands on the grid.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pad = [px0, px1, py0, py1]

    # 1x1 kernel: the conv is per pixel, so run it at the lower resolution.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d.upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)

    # Downsampling only: filter first, then the strided conv does the subsampling.
    if down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: the strided transposed conv is zero insertion + full convolution.
    # Relative to that full result the reference wants (k-1-p0) fewer samples on
    # the left and (k-up-p1) fewer on the right; the common part of those crops
    # goes into the transposed conv's own padding, the rest into upfirdn2d.
    if up > 1:
        cx0, cx1 = kw - 1 - px0, kw - up - px1
        cy0, cy1 = kh - 1 - py0, kh - up - py1
        tx = max(min(cx0, cx1), 0)
        ty = max(min(cy0, cy1), 0)
        x = _conv(x, w, stride=up, padding=[ty, tx], groups=groups, transpose=True, flip_weight=flip_weight)
        x = upfirdn2d.upfirdn2d(x, f, padding=[tx - cx0, tx - cx1, ty - cy0, ty - cy1],
                                gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling: a plain padded conv when torch can express the padding.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = upfirdn2d.upfirdn2d(x, None, padding=pad, flip_filter=flip_filter)
    return _conv(x, w, groups=groups, flip_weight=flip_weight)
