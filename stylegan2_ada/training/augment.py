"""Adaptive discriminator augmentation: the augment pipe D sees every image through.

`AugmentPipe` applies a random, differentiable chain of augmentations to a batch of
NCHW images in [-1, 1]. Every transform is applied to each image independently with
probability `multiplier * p`, where `p` is a buffer the training loop adjusts (ADA).
The stages, in order:

1. Geometry. Pixel blits (x-flip, 90-degree rotation, integer translation) and general
   transforms (isotropic scale, pre/post rotation, anisotropic scale, fractional
   translation) are folded into one 3x3 homogeneous matrix per image and executed once.
   An image whose matrix is a pure blit is copied pixel-exactly from its reflect-extended
   self; any other image is reflect-padded, upsampled 2x with the sym6 wavelet low-pass,
   resampled with `grid_sample_gradfix.grid_sample` (twice differentiable, for R1), and
   downsampled 2x with the time-reversed filter, which makes the up/down pair an exact
   identity for the untransformed image.
2. Colour. Brightness, contrast, luma flip, hue rotation and saturation become one 4x4
   matrix per image acting on RGB (a single-channel image is treated as grey RGB).
3. Image-space filtering: random gains for four octave bands, amplitude-normalised.
4. Additive Gaussian noise with a per-image standard deviation |N(0, noise_std)|.
5. Cutout: a rectangle of `cutout_size` (fraction of the image side) set to zero.

An image no transform touched comes out bit-identical, so `p = 0` is an exact identity.
`forward(images, debug_percentile=q)` replaces every random draw by its q-quantile and
applies each enabled transform to every image, which is what visual checks need.

This module's source is embedded in pickles and executed wherever they are loaded, so
it imports only numpy, torch and the harness's persistence/misc/ops modules.
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from torch_utils.ops import upfirdn2d

# Named augment pipes (`--augpipe`): keyword arguments of AugmentPipe.

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
_FILTER = dict(imgfilter=1)
_NOISE = dict(noise=1)
_CUTOUT = dict(cutout=1)

augpipe_specs = dict(
    blit=dict(_BLIT),
    geom=dict(_GEOM),
    color=dict(_COLOR),
    filter=dict(_FILTER),
    noise=dict(_NOISE),
    cutout=dict(_CUTOUT),
    bg=dict(_BLIT, **_GEOM),
    bgc=dict(_BLIT, **_GEOM, **_COLOR),
    bgcf=dict(_BLIT, **_GEOM, **_COLOR, **_FILTER),
    bgcfn=dict(_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE),
    bgcfnc=dict(_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE, **_CUTOUT),
)

# Wavelet filters.

# Decomposition low-pass of the Daubechies least-asymmetric wavelet with 6 vanishing
# moments ("sym6"), as tabulated in the literature. These are mathematical constants;
# the tests check orthonormality and the vanishing moments of the matching high-pass.
SYM6_LOWPASS = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)


def daubechies2_lowpass():
    """The 4-tap Daubechies low-pass (db2 = sym2, up to reversal), from its closed form."""
    s3 = np.sqrt(3.0)
    return np.array([1 + s3, 3 + s3, 3 - s3, 1 - s3]) / (4 * np.sqrt(2.0))


def octave_filter_bank(h, num_bands=4):
    """Zero-phase 1-D filters splitting [0, pi] into octaves: band k (k < num_bands-1)
    passes about [pi/2^(num_bands-k), pi/2^(num_bands-k-1)], band 0 reaches down to DC
    and the last band up to pi. They are built from the half-band autocorrelation of the
    orthonormal low-pass `h` and sum exactly to a unit impulse. Returns [num_bands, L]."""
    h = np.asarray(h, dtype=np.float64)
    halfband = np.convolve(h, h[::-1]) / np.square(h.sum())    # DC gain 1, zero at pi
    lowpasses = [np.ones(1)]                                       # cut-offs pi, pi/2, pi/4, ...
    for level in range(num_bands - 1):
        stretched = np.zeros((len(halfband) - 1) * 2 ** level + 1)
        stretched[::2 ** level] = halfband                         # response halfband(2^level w)
        lowpasses.append(np.convolve(lowpasses[-1], stretched))
    length = len(lowpasses[-1])

    def centred(f):
        pad = (length - len(f)) // 2
        return np.pad(f, [pad, pad])

    lowpasses = [centred(f) for f in lowpasses]
    bands = [lowpasses[-1]]                                        # lowest band, includes DC
    for k in range(num_bands - 1, 0, -1):
        bands.append(lowpasses[k - 1] - lowpasses[k])
    return np.stack(bands)


# Share of an image's power assumed to fall in each octave band (lowest first) when the
# band gains are normalised: natural images keep most of their energy at low frequencies.
_BAND_POWER = np.array([10.0, 1.0, 1.0, 1.0]) / 13.0

# Batched homogeneous matrices. Arguments are tensors of shape [N] or Python numbers.


def _matrix(rows, n, device, dtype):
    elems = [torch.as_tensor(e, dtype=dtype, device=device) for row in rows for e in row]
    elems = [e.expand(n) if e.ndim == 0 else e for e in elems]
    return torch.stack(elems, dim=-1).reshape(n, len(rows), len(rows[0]))


def _translate2d(tx, ty, n, dev, dt):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n, dev, dt)


def _scale2d(sx, sy, n, dev, dt):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n, dev, dt)


def _rotate2d(theta, n, dev, dt):
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], n, dev, dt)


def _translate3d(t, n, dev, dt):
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], n, dev, dt)


def _scale3d(s, n, dev, dt):
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], n, dev, dt)


def _rotate3d(axis, theta, n, dev, dt):
    """Rotation by theta about the unit vector `axis` (Rodrigues' formula)."""
    ax, ay, az = axis
    c, s = torch.cos(theta), torch.sin(theta)
    d = 1 - c
    return _matrix([
        [c + ax * ax * d, ax * ay * d - az * s, ax * az * d + ay * s, 0],
        [ay * ax * d + az * s, c + ay * ay * d, ay * az * d - ax * s, 0],
        [az * ax * d - ay * s, az * ay * d + ax * s, c + az * az * d, 0],
        [0, 0, 0, 1]], n, dev, dt)


def _is_identity(mats):
    """[N] bool: which matrices equal the identity exactly."""
    eye = torch.eye(mats.shape[-1], dtype=mats.dtype, device=mats.device)
    return (mats == eye).all(dim=-1).all(dim=-1)


def _reflect_index(idx, size):
    """Map integer coordinates onto [0, size) by mirroring about the edge pixels (the
    convention of F.pad's 'reflect'), repeating as often as needed."""
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx < size, idx, period - idx)


def _reflect_pad(x, left, right, top, bottom):
    """Reflect padding of any width (F.pad's 'reflect' is limited to less than the size)."""
    _, _, h, w = x.shape
    ix = _reflect_index(torch.arange(-left, w + right, device=x.device), w)
    iy = _reflect_index(torch.arange(-top, h + bottom, device=x.device), h)
    return x.index_select(3, ix).index_select(2, iy)



@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    def __init__(self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,
        scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0,
        brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
        imgfilter=0, imgfilter_bands=[1, 1, 1, 1], imgfilter_std=1,
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
    ):
        super().__init__()
        self.register_buffer('p', torch.ones([]))   # Overall probability multiplier, set by the training loop.

        # Pixel blitting: probability multipliers and the integer translation range (fraction of size).
        self.xflip = float(xflip)
        self.rotate90 = float(rotate90)
        self.xint = float(xint)
        self.xint_max = float(xint_max)

        # General geometry: probability multipliers and magnitudes.
        self.scale = float(scale)                   # log2(scale) ~ N(0, scale_std)
        self.rotate = float(rotate)                 # angle ~ U(-pi, pi) * rotate_max, twice
        self.aniso = float(aniso)                   # log2(x-scale) = -log2(y-scale) ~ N(0, aniso_std)
        self.xfrac = float(xfrac)                   # shift / size ~ N(0, xfrac_std)
        self.scale_std = float(scale_std)
        self.rotate_max = float(rotate_max)
        self.aniso_std = float(aniso_std)
        self.xfrac_std = float(xfrac_std)

        # Colour.
        self.brightness = float(brightness)         # offset ~ N(0, brightness_std)
        self.contrast = float(contrast)             # log2(gain) ~ N(0, contrast_std)
        self.lumaflip = float(lumaflip)             # mirror the luma component with probability 1/2
        self.hue = float(hue)                       # rotation about the luma axis ~ U(-pi, pi) * hue_max
        self.saturation = float(saturation)         # log2(chroma gain) ~ N(0, saturation_std)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.hue_max = float(hue_max)
        self.saturation_std = float(saturation_std)

        # Image-space filtering: per-band probability multipliers; log2(band gain) ~ N(0, imgfilter_std).
        self.imgfilter = float(imgfilter)
        self.imgfilter_bands = [float(b) for b in imgfilter_bands]
        self.imgfilter_std = float(imgfilter_std)
        assert len(self.imgfilter_bands) == len(_BAND_POWER), 'imgfilter_bands needs one entry per band'

        # Corruptions.
        self.noise = float(noise)
        self.cutout = float(cutout)
        self.noise_std = float(noise_std)
        self.cutout_size = float(cutout_size)

        # Filters travel with the module (buffers) so that .to(device) moves them.
        self.register_buffer('geom_filter', upfirdn2d.setup_filter(list(SYM6_LOWPASS)))
        taps = np.asarray(SYM6_LOWPASS)
        self._geom_delay = float((np.arange(len(taps)) * taps).sum() / taps.sum() - (len(taps) - 1) / 2)
        self.register_buffer('band_filters', torch.as_tensor(octave_filter_bank(daubechies2_lowpass()),
                                                              dtype=torch.float32))

    # Random draws; with debug_percentile they become deterministic quantiles.

    def _uniform(self, shape, device, debug_percentile):
        if debug_percentile is not None:
            return torch.full(shape, float(debug_percentile), device=device)
        return torch.rand(shape, device=device)

    def _normal(self, shape, device, debug_percentile):
        if debug_percentile is not None:
            q = torch.as_tensor(float(debug_percentile) * 2 - 1, dtype=torch.float64)
            q = torch.erfinv(q.clamp(-1 + 1e-7, 1 - 1e-7)) * np.sqrt(2)
            return torch.full(shape, float(q), device=device)
        return torch.randn(shape, device=device)

    def _gate(self, value, neutral, prob, debug_percentile):
        """Per image, `value` with probability `prob`, else `neutral`; always `value` in debug mode."""
        if debug_percentile is not None:
            return value
        chosen = torch.rand([value.shape[0]], device=value.device) < prob
        chosen = chosen.reshape([-1] + [1] * (value.ndim - 1))
        return torch.where(chosen, value, torch.as_tensor(neutral, dtype=value.dtype, device=value.device))


    def forward(self, images, debug_percentile=None):
        assert isinstance(images, torch.Tensor) and images.ndim == 4, 'expected NCHW images'
        assert images.dtype.is_floating_point
        n, c, h, w = images.shape
        dev = images.device
        dp = debug_percentile
        if dp is not None:
            dp = float(dp)
            assert 0 <= dp <= 1, 'debug_percentile must lie in [0, 1]'

        images = self._geometry(images, dp)
        images = self._colour(images, dp)
        images = self._imgfilter(images, dp)

        if self.noise > 0:
            sigma = self._normal([n], dev, dp).abs() * self.noise_std
            sigma = self._gate(sigma, 0, self.noise * self.p, dp)
            images = images + torch.randn_like(images) * sigma.to(images.dtype).reshape(n, 1, 1, 1)

        if self.cutout > 0:
            size = self._gate(torch.full([n], self.cutout_size, device=dev), 0, self.cutout * self.p, dp)
            centre = self._uniform([n, 2], dev, dp)
            xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
            ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
            outside_x = (xs[None, :] - centre[:, 0:1]).abs() >= size[:, None] / 2      # [N, W]
            outside_y = (ys[None, :] - centre[:, 1:2]).abs() >= size[:, None] / 2      # [N, H]
            keep = outside_x[:, None, :] | outside_y[:, :, None]                        # [N, H, W]
            images = images * keep[:, None].to(images.dtype)

        misc.assert_shape(images, [n, c, h, w])
        return images


    def _geometry(self, images, dp):
        n, c, h, w = images.shape
        dev = images.device
        dt = torch.float64 if images.dtype == torch.float64 else torch.float32
        eye = torch.eye(3, dtype=dt, device=dev).expand(n, 3, 3)
        p = self.p.to(dt)

        # Both matrices map output pixel positions to input positions (the inverse of the
        # transform), in pixel units about the image centre. Composing "A, then B" gives
        # inverse A^-1 B^-1, so each new inverse multiplies on the right.
        blit_inv = eye
        if self.xflip > 0:
            flip = torch.floor(self._uniform([n], dev, dp).to(dt) * 2).clamp(max=1)
            flip = self._gate(flip, 0, self.xflip * p, dp)
            blit_inv = blit_inv @ _scale2d(1 - 2 * flip, 1, n, dev, dt)
        if self.rotate90 > 0:
            quarter = torch.floor(self._uniform([n], dev, dp).to(dt) * 4).clamp(max=3)
            quarter = self._gate(quarter, 0, self.rotate90 * p, dp)
            blit_inv = blit_inv @ _rotate2d(-np.pi / 2 * quarter, n, dev, dt)
        if self.xint > 0:
            shift = (self._uniform([n, 2], dev, dp).to(dt) * 2 - 1) * self.xint_max
            shift = self._gate(shift, 0, self.xint * p, dp)
            blit_inv = blit_inv @ _translate2d(-torch.round(shift[:, 0] * w), -torch.round(shift[:, 1] * h), n, dev, dt)

        geom_inv = eye
        if self.scale > 0:
            s = torch.exp2(self._normal([n], dev, dp).to(dt) * self.scale_std)
            s = self._gate(s, 1, self.scale * p, dp)
            geom_inv = geom_inv @ _scale2d(1 / s, 1 / s, n, dev, dt)
        # Two independent rotations, each with the probability that makes "any rotation" rotate * p.
        rot_prob = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1)) if self.rotate > 0 else None
        if self.rotate > 0:
            theta = (self._uniform([n], dev, dp).to(dt) * 2 - 1) * np.pi * self.rotate_max
            theta = self._gate(theta, 0, rot_prob, dp)
            geom_inv = geom_inv @ _rotate2d(-theta, n, dev, dt)
        if self.aniso > 0:
            s = torch.exp2(self._normal([n], dev, dp).to(dt) * self.aniso_std)
            s = self._gate(s, 1, self.aniso * p, dp)
            geom_inv = geom_inv @ _scale2d(1 / s, s, n, dev, dt)
        if self.rotate > 0:
            theta = (self._uniform([n], dev, dp).to(dt) * 2 - 1) * np.pi * self.rotate_max
            theta = self._gate(theta, 0, rot_prob, dp)
            geom_inv = geom_inv @ _rotate2d(-theta, n, dev, dt)
        if self.xfrac > 0:
            shift = self._normal([n, 2], dev, dp).to(dt) * self.xfrac_std
            shift = self._gate(shift, 0, self.xfrac * p, dp)
            geom_inv = geom_inv @ _translate2d(-shift[:, 0] * w, -shift[:, 1] * h, n, dev, dt)

        if blit_inv is eye and geom_inv is eye:
            return images                          # no geometric transform enabled
        mats = blit_inv @ geom_inv
        untouched = _is_identity(mats)
        resample = ~_is_identity(geom_inv)         # pure blits (and identities) are copied exactly

        # Margin (original pixels) of the resampled canvas that the downsampling filter eats,
        # and of the padded input that the upsampling filter and bilinear taps need.
        taps = self.geom_filter.shape[0]
        canvas_margin = (taps + 3) // 4
        input_margin = (taps + 3) // 4 + 1
        half = torch.tensor([w / 2 + canvas_margin, h / 2 + canvas_margin], dtype=dt, device=dev)
        corners = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=dt, device=dev) * half
        corners = torch.cat([corners, torch.ones([4, 1], dtype=dt, device=dev)], dim=1).t()
        reach = (mats[:, :2, :] @ corners)                                     # [N, 2, 4]
        reach = torch.where(resample[:, None, None], reach, torch.zeros_like(reach))
        # One device-to-host transfer: padding needs concrete numbers.
        summary = torch.cat([reach.amin(dim=(0, 2)), reach.amax(dim=(0, 2)),
                             (~untouched & ~resample).any()[None].to(dt), resample.any()[None].to(dt)]).cpu()
        lo_x, lo_y, hi_x, hi_y, any_blit, any_resample = summary.tolist()

        out = images
        if any_blit:
            out = torch.where((untouched | resample)[:, None, None, None], out, self._blit(images, mats))
        if any_resample:
            cap = 4 * max(h, w)
            pads = [-lo_x - w / 2, hi_x - w / 2, -lo_y - h / 2, hi_y - h / 2]
            pads = [int(min(max(np.ceil(v), 0) + input_margin, cap)) for v in pads]
            resampled = self._resample(images, mats, pads, canvas_margin)
            out = torch.where(resample[:, None, None, None], resampled, out)
        return out

    def _blit(self, images, mats):
        """Exact nearest-pixel copy for matrices that map pixel centres onto pixel centres
        (flips, quarter turns, integer shifts), reading the reflect-extended image."""
        n, c, h, w = images.shape
        dt, dev = mats.dtype, mats.device
        xs = torch.arange(w, dtype=dt, device=dev) + 0.5 - w / 2
        ys = torch.arange(h, dtype=dt, device=dev) + 0.5 - h / 2
        src_x = mats[:, 0, 0, None, None] * xs[None, None, :] + mats[:, 0, 1, None, None] * ys[None, :, None] + mats[:, 0, 2, None, None]
        src_y = mats[:, 1, 0, None, None] * xs[None, None, :] + mats[:, 1, 1, None, None] * ys[None, :, None] + mats[:, 1, 2, None, None]
        ix = _reflect_index(torch.round(src_x + w / 2 - 0.5).long(), w)
        iy = _reflect_index(torch.round(src_y + h / 2 - 0.5).long(), h)
        flat = (iy * w + ix).reshape(n, 1, h * w).expand(n, c, h * w)
        return images.reshape(n, c, h * w).gather(2, flat).reshape(n, c, h, w)

    def _resample(self, images, mats, pads, margin):
        """Reflect-pad, upsample 2x, sample through `mats`, downsample 2x, crop."""
        n, c, h, w = images.shape
        dt, dev = mats.dtype, mats.device
        left, right, top, bottom = pads
        f = self.geom_filter
        x = _reflect_pad(images, left, right, top, bottom)
        x = upfirdn2d.upsample2d(x, f, up=2)
        in_w, in_h = w + left + right, h + top + bottom

        # Canvas: the output image plus `margin` pixels, at twice the resolution. Its
        # pixel j sits at (j + 0.5) / 2 - (size / 2 + margin) about the image centre.
        out_w, out_h = 2 * (w + 2 * margin), 2 * (h + 2 * margin)
        # The sym6 filter is not symmetric: upsampling delays the content by `delay`
        # up-pixels (its centroid), and downsampling with the reversed taps advances it
        # by as much. Both coordinate maps account for it, so that transforms pivot about
        # the true image centre.
        d = self._geom_delay / 2
        canvas_to_centred = _matrix([[0.5, 0, 0.25 - d - (w / 2 + margin)], [0, 0.5, 0.25 - d - (h / 2 + margin)], [0, 0, 1]], 1, dev, dt)
        centred_to_unit = _matrix([[2 / in_w, 0, (w + 2 * left + 2 * d) / in_w - 1], [0, 2 / in_h, (h + 2 * top + 2 * d) / in_h - 1], [0, 0, 1]], 1, dev, dt)
        m = centred_to_unit @ mats @ canvas_to_centred                           # [N, 3, 3]
        jx = torch.arange(out_w, dtype=dt, device=dev)[None, None, :]
        jy = torch.arange(out_h, dtype=dt, device=dev)[None, :, None]
        gx = m[:, 0, 0, None, None] * jx + m[:, 0, 1, None, None] * jy + m[:, 0, 2, None, None]
        gy = m[:, 1, 0, None, None] * jx + m[:, 1, 1, None, None] * jy + m[:, 1, 2, None, None]
        grid = torch.stack([gx, gy], dim=-1).to(x.dtype)                        # [N, out_h, out_w, 2]
        x = grid_sample_gradfix.grid_sample(x, grid)

        # Down with the reversed filter: with the forward one on the way up, the pair is
        # an orthogonal projection, so an identity transform returns the input.
        x = upfirdn2d.downsample2d(x, f, down=2, flip_filter=True)
        return x[:, :, margin:margin + h, margin:margin + w]


    def _colour(self, images, dp):
        n, c, h, w = images.shape
        enabled = [self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation]
        if not any(v > 0 for v in enabled):
            return images
        if c not in (1, 3):
            raise ValueError('colour augmentations need 1 or 3 channels, got {}'.format(c))
        dev = images.device
        dt = torch.float64 if images.dtype == torch.float64 else torch.float32
        p = self.p.to(dt)
        axis = (1 / np.sqrt(3),) * 3                                 # luma axis (equal weights)
        luma = torch.tensor(list(axis) + [0], dtype=dt, device=dev)
        luma_proj = torch.outer(luma, luma)                          # projection onto the axis
        eye4 = torch.eye(4, dtype=dt, device=dev)

        # Colour vectors are transformed forwards: a later transform multiplies on the left.
        cmat = eye4.expand(n, 4, 4)
        if self.brightness > 0:
            b = self._normal([n], dev, dp).to(dt) * self.brightness_std
            b = self._gate(b, 0, self.brightness * p, dp)
            cmat = _translate3d(b, n, dev, dt) @ cmat
        if self.contrast > 0:
            g = torch.exp2(self._normal([n], dev, dp).to(dt) * self.contrast_std)
            g = self._gate(g, 1, self.contrast * p, dp)
            cmat = _scale3d(g, n, dev, dt) @ cmat
        if self.lumaflip > 0:
            flip = torch.floor(self._uniform([n], dev, dp).to(dt) * 2).clamp(max=1)
            flip = self._gate(flip, 0, self.lumaflip * p, dp)
            cmat = (eye4 - 2 * luma_proj * flip[:, None, None]) @ cmat   # Householder reflection
        if self.hue > 0:
            theta = (self._uniform([n], dev, dp).to(dt) * 2 - 1) * np.pi * self.hue_max
            theta = self._gate(theta, 0, self.hue * p, dp)
            cmat = _rotate3d(axis, theta, n, dev, dt) @ cmat
        if self.saturation > 0:
            s = torch.exp2(self._normal([n], dev, dp).to(dt) * self.saturation_std)
            s = self._gate(s, 1, self.saturation * p, dp)
            chroma = eye4 - luma_proj - torch.diag(luma.new_tensor([0, 0, 0, 1]))
            sat = eye4 - chroma + chroma * s[:, None, None]
            sat = torch.where((s == 1)[:, None, None], eye4, sat)     # keep "untouched" exact
            cmat = sat @ cmat

        untouched = _is_identity(cmat)
        cmat = cmat.to(images.dtype)
        flat = images.reshape(n, c, h * w)
        if c == 3:
            out = cmat[:, :3, :3] @ flat + cmat[:, :3, 3:]
        else:
            # Grey as (g, g, g): the matrix's response, averaged back to one channel.
            gain = cmat[:, :3, :3].sum(dim=2).mean(dim=1)
            offset = cmat[:, :3, 3].mean(dim=1)
            out = flat * gain[:, None, None] + offset[:, None, None]
        out = out.reshape(n, c, h, w)
        return torch.where(untouched[:, None, None, None], images, out)


    def _imgfilter(self, images, dp):
        if not self.imgfilter > 0:
            return images
        n, c, h, w = images.shape
        dev = images.device
        dt = torch.float64 if images.dtype == torch.float64 else torch.float32
        p = self.p.to(dt)
        num_bands = len(self.imgfilter_bands)

        # Gains start at 1; each band is boosted or cut independently, then all gains are
        # rescaled so that the expected output power equals the input's.
        gains = torch.ones([n, num_bands], dtype=dt, device=dev)
        for band, multiplier in enumerate(self.imgfilter_bands):
            if multiplier <= 0:
                continue
            t = torch.exp2(self._normal([n], dev, dp).to(dt) * self.imgfilter_std)
            t = self._gate(t, 1, self.imgfilter * multiplier * p, dp)
            gains = gains * torch.where(torch.arange(num_bands, device=dev) == band, t[:, None], torch.ones_like(gains))
        untouched = (gains == 1).all(dim=1)
        power = torch.as_tensor(_BAND_POWER, dtype=dt, device=dev)
        gains = gains / (gains.square() * power).sum(dim=1, keepdim=True).sqrt()

        # One zero-phase 1-D filter per image, applied along x then y (grouped convolutions).
        kernel = (gains @ self.band_filters.to(dt)).to(images.dtype)                  # [N, L]
        taps = kernel.shape[1]
        kernel = kernel[:, None, :].expand(n, c, taps).reshape(n * c, 1, taps)
        x = _reflect_pad(images, taps // 2, taps // 2, taps // 2, taps // 2)
        x = x.reshape(1, n * c, h + taps - 1, w + taps - 1)
        x = conv2d_gradfix.conv2d(x, kernel[:, :, None, :], groups=n * c)
        x = conv2d_gradfix.conv2d(x, kernel[:, :, :, None], groups=n * c)
        x = x.reshape(n, c, h, w)
        return torch.where(untouched[:, None, None, None], images, x)
