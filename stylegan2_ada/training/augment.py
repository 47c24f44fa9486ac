"""Adaptive discriminator augmentation: the pipe every image passes before D.

`AugmentPipe` turns a batch of NCHW images in [-1, 1] into randomly augmented
ones, differentiably. Each augmentation fires per image with probability
`multiplier * p`; `p` is a buffer the training loop moves up and down (ADA).
Images no augmentation fired on come out bit-identical, so p = 0 is an exact
identity and the pipe never leaks into what G is asked to produce.

The pipe is four stages, run in this order:

1. Geometry. Every geometric augmentation is one row of a table and gives a
   3x3 matrix that maps output pixel positions to input positions. The blit
   rows (x-flip, quarter turns, integer shifts) and the warp rows (scale, two
   rotations around an anisotropic stretch, fractional shift) are folded into
   one matrix per image, which is then executed once. A pure blit is gathered
   exactly from the reflect-extended image; anything else is reflect-padded,
   upsampled 2x with the sym6 wavelet, resampled with the twice-differentiable
   grid_sample (R1 needs second derivatives through it) and brought back with
   the time-reversed filter, so that an untouched image survives the round
   trip. Reflection instead of zeros gives D no border to spot fakes by.
2. Colour, the same way with 4x4 matrices acting on (r, g, b, 1): brightness,
   contrast, luma flip, hue rotation, saturation. Grey images are treated as
   (g, g, g).
3. Filtering: random gains for four octave bands, normalised to keep power.
4. Corruptions: additive noise with a per-image |N(0, noise_std)| deviation,
   and a cutout rectangle of `cutout_size` times the image side.

`forward(images, debug_percentile=q)` replaces every random draw by its
q-quantile and fires everything, which is what visual checks want.

Pickles embed this file's source and execute it wherever they are loaded, so
it must import nothing beyond numpy, torch and the harness's persistence,
misc and ops modules.
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from torch_utils.ops import upfirdn2d

# The `--augpipe` names. Each group switches its augmentations on with
# multiplier 1; the long names chain groups by their first letters.
_GROUP_MEMBERS = dict(
    blit=('xflip', 'rotate90', 'xint'),
    geom=('scale', 'rotate', 'aniso', 'xfrac'),
    color=('brightness', 'contrast', 'lumaflip', 'hue', 'saturation'),
    filter=('imgfilter',),
    noise=('noise',),
    cutout=('cutout',),
)
_CHAIN = ('blit', 'geom', 'color', 'filter', 'noise', 'cutout')


def _switch_on(*groups):
    return {option: 1 for group in groups for option in _GROUP_MEMBERS[group]}


augpipe_specs = {group: _switch_on(group) for group in _GROUP_MEMBERS}
augpipe_specs.update({''.join(g[0] for g in _CHAIN[:k]): _switch_on(*_CHAIN[:k]) for k in range(2, len(_CHAIN) + 1)})

# Filters.

# Decomposition low-pass of the least-asymmetric Daubechies wavelet with six
# vanishing moments (sym6). Mathematical constants; the tests check that they
# are orthonormal and that the matching high-pass has six vanishing moments.
SYM6_LOWPASS = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)

# sym6 is not symmetric: its centroid sits this many taps off its middle. The
# resampler shifts its coordinates by it so that warps pivot on the true centre.
_SYM6_DELAY = float((np.arange(len(SYM6_LOWPASS)) * np.asarray(SYM6_LOWPASS)).sum() / np.asarray(SYM6_LOWPASS).sum()
                    - (len(SYM6_LOWPASS) - 1) / 2)


def daubechies2_lowpass():
    """The 4-tap Daubechies low-pass (db2, sym2 up to reversal) from its closed form."""
    root3 = np.sqrt(3.0)
    return np.array([1 + root3, 3 + root3, 3 - root3, 1 - root3]) / (4 * np.sqrt(2.0))


def octave_filter_bank(h, num_bands=4):
    """Zero-phase 1-D filters that split [0, pi] into octaves and sum to a unit impulse.

    Band 0 reaches down to DC, the last one up to pi, band k in between covers
    about [pi / 2^(num_bands-k), pi / 2^(num_bands-k-1)]. They are differences of
    low-passes made from the half-band autocorrelation of the orthonormal `h`,
    dilated by powers of two. Returns [num_bands, taps]."""
    h = np.asarray(h, dtype=np.float64)
    halfband = np.convolve(h, h[::-1]) / np.square(h.sum())
    cascade = [np.ones(1)]
    for level in range(num_bands - 1):
        dilated = np.zeros((len(halfband) - 1) * 2 ** level + 1)
        dilated[::2 ** level] = halfband
        cascade.append(np.convolve(cascade[-1], dilated))
    taps = len(cascade[-1])
    cascade = [np.pad(f, [(taps - len(f)) // 2] * 2) for f in cascade]
    bands = [cascade[-1]] + [cascade[k - 1] - cascade[k] for k in range(num_bands - 1, 0, -1)]
    return np.stack(bands)


# Assumed share of image power per octave band, lowest first, for normalising
# the band gains: natural images keep most of their energy at low frequencies.
_BAND_POWER = np.array([10.0, 1.0, 1.0, 1.0]) / 13.0

# Unit vector of the luma axis in RGB, the pivot of luma flips and hue turns.
_LUMA_AXIS = (1 / np.sqrt(3),) * 3


def _reflect_index(idx, size):
    """Fold integer coordinates into [0, size) by mirroring about the edge pixels
    (F.pad's 'reflect'), as many times as needed."""
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx < size, idx, period - idx)


def _reflect_pad(x, left, right, top, bottom):
    """Reflect padding without F.pad's limit of less than the image size."""
    cols = _reflect_index(torch.arange(-left, x.shape[3] + right, device=x.device), x.shape[3])
    rows = _reflect_index(torch.arange(-top, x.shape[2] + bottom, device=x.device), x.shape[2])
    return x.index_select(3, cols).index_select(2, rows)


# Batched matrices.

def _stack_rows(rows, n, dtype, device):
    """[n, R, C] from nested rows whose entries are numbers or [n] tensors."""
    flat = [torch.as_tensor(e, dtype=dtype, device=device).expand(n) for row in rows for e in row]
    return torch.stack(flat, dim=1).reshape(n, len(rows), len(rows[0]))


def _is_identity(mats):
    """[N] bool: which of the [N, K, K] matrices are exactly the identity."""
    eye = torch.eye(mats.shape[-1], dtype=mats.dtype, device=mats.device)
    return (mats == eye).all(dim=-1).all(dim=-1)


def _map_points(m, xs, ys):
    """Push the grid xs (along W) by ys (along H) through [N, 3, 3] affine maps;
    returns the x and y coordinates, each [N, H, W]."""
    def coord(i):
        return m[:, i, 0, None, None] * xs[None, None, :] + m[:, i, 1, None, None] * ys[None, :, None] + \
            m[:, i, 2, None, None]
    return coord(0), coord(1)


class _Dice:
    """The random draws of one stage, in the order its transforms ask for them.

    With a debug percentile every draw is that quantile of its distribution and
    every transform fires, so the pipe becomes deterministic."""

    def __init__(self, images, dtype, p, percentile):
        self.n = images.shape[0]
        self.device = images.device
        self.dtype = dtype
        self.p = p
        self.percentile = percentile
        if percentile is not None:
            centred = torch.as_tensor(percentile * 2 - 1, dtype=torch.float64).clamp(-1 + 1e-7, 1 - 1e-7)
            self.normal_quantile = float(torch.erfinv(centred) * np.sqrt(2))

    def _cast(self, draw):
        return draw if self.dtype is None else draw.to(self.dtype)

    def uniform(self, *tail):
        shape = [self.n, *tail]
        if self.percentile is None:
            return self._cast(torch.rand(shape, device=self.device))
        return self._cast(torch.full(shape, self.percentile, device=self.device))

    def normal(self, *tail):
        shape = [self.n, *tail]
        if self.percentile is None:
            return self._cast(torch.randn(shape, device=self.device))
        return self._cast(torch.full(shape, self.normal_quantile, device=self.device))

    def fire(self, value, neutral, prob):
        """Per image, `value` with probability `prob` and `neutral` otherwise."""
        if self.percentile is not None:
            return value
        hit = torch.rand([value.shape[0]], device=value.device) < prob
        hit = hit.reshape([value.shape[0]] + [1] * (value.ndim - 1))
        return torch.where(hit, value, torch.as_tensor(neutral, dtype=value.dtype, device=value.device))

    def affine(self, sx=1, sy=1, tx=0, ty=0):
        return _stack_rows([[sx, 0, tx], [0, sy, ty], [0, 0, 1]], self.n, self.dtype, self.device)

    def turn(self, angle):
        cos, sin = torch.cos(angle), torch.sin(angle)
        return _stack_rows([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], self.n, self.dtype, self.device)

    def colour_affine(self, gain=1, offset=0):
        rows = [[gain if j == i else 0 for j in range(3)] + [offset] for i in range(3)]
        return _stack_rows(rows + [[0, 0, 0, 1]], self.n, self.dtype, self.device)

    def luma_turn(self, angle):
        """Rotation by `angle` about the luma axis, by Rodrigues' formula."""
        axis = _LUMA_AXIS
        cos, sin = torch.cos(angle), torch.sin(angle)
        rest = 1 - cos
        rows = []
        for i in range(3):
            row = []
            for j in range(3):
                along = axis[i] * axis[j] * rest
                if i == j:
                    row.append(cos + along)
                elif (j - i) % 3 == 1:
                    row.append(along - axis[3 - i - j] * sin)
                else:
                    row.append(along + axis[3 - i - j] * sin)
            rows.append(row + [0])
        return _stack_rows(rows + [[0, 0, 0, 1]], self.n, self.dtype, self.device)


# Geometric transforms: (multiplier option, maker). A maker returns the [N, 3, 3]
# map from output to input pixel positions (about the image centre), so that
# "this transform, then the next" is the product of the makers' matrices in
# table order.

def _xflip(pipe, dice, size):
    flip = torch.floor(dice.uniform() * 2).clamp(max=1)
    return dice.affine(sx=1 - 2 * dice.fire(flip, 0, pipe.xflip * dice.p))


def _quarter_turns(pipe, dice, size):
    quarters = torch.floor(dice.uniform() * 4).clamp(max=3)
    return dice.turn(-np.pi / 2 * dice.fire(quarters, 0, pipe.rotate90 * dice.p))


def _integer_shift(pipe, dice, size):
    shift = dice.fire((dice.uniform(2) * 2 - 1) * pipe.xint_max, 0, pipe.xint * dice.p)
    return dice.affine(tx=-torch.round(shift[:, 0] * size[0]), ty=-torch.round(shift[:, 1] * size[1]))


def _zoom(pipe, dice, size):
    factor = dice.fire(torch.exp2(dice.normal() * pipe.scale_std), 1, pipe.scale * dice.p)
    return dice.affine(sx=1 / factor, sy=1 / factor)


def _spin(pipe, dice, size):
    # Two spins surround the stretch; each fires with the probability that
    # makes "at least one of them" fire with probability rotate * p.
    either = 1 - torch.sqrt((1 - pipe.rotate * dice.p).clamp(0, 1))
    angle = (dice.uniform() * 2 - 1) * np.pi * pipe.rotate_max
    return dice.turn(-dice.fire(angle, 0, either))


def _stretch(pipe, dice, size):
    factor = dice.fire(torch.exp2(dice.normal() * pipe.aniso_std), 1, pipe.aniso * dice.p)
    return dice.affine(sx=1 / factor, sy=factor)


def _subpixel_shift(pipe, dice, size):
    shift = dice.fire(dice.normal(2) * pipe.xfrac_std, 0, pipe.xfrac * dice.p)
    return dice.affine(tx=-shift[:, 0] * size[0], ty=-shift[:, 1] * size[1])


_BLIT_STEPS = (('xflip', _xflip), ('rotate90', _quarter_turns), ('xint', _integer_shift))
_WARP_STEPS = (('scale', _zoom), ('rotate', _spin), ('aniso', _stretch), ('rotate', _spin),
               ('xfrac', _subpixel_shift))

# Colour transforms: (multiplier option, maker). A maker returns the [N, 4, 4]
# matrix acting on (r, g, b, 1); later transforms multiply on the left.


def _brightness(pipe, dice, luma):
    offset = dice.fire(dice.normal() * pipe.brightness_std, 0, pipe.brightness * dice.p)
    return dice.colour_affine(offset=offset)


def _contrast(pipe, dice, luma):
    gain = dice.fire(torch.exp2(dice.normal() * pipe.contrast_std), 1, pipe.contrast * dice.p)
    return dice.colour_affine(gain=gain)


def _luma_flip(pipe, dice, luma):
    flip = torch.floor(dice.uniform() * 2).clamp(max=1)
    flip = dice.fire(flip, 0, pipe.lumaflip * dice.p)
    return luma.eye - 2 * luma.proj * flip[:, None, None]    # Householder reflection


def _hue(pipe, dice, luma):
    angle = (dice.uniform() * 2 - 1) * np.pi * pipe.hue_max
    return dice.luma_turn(dice.fire(angle, 0, pipe.hue * dice.p))


def _saturation(pipe, dice, luma):
    gain = dice.fire(torch.exp2(dice.normal() * pipe.saturation_std), 1, pipe.saturation * dice.p)
    chroma = luma.eye - luma.proj - torch.diag(luma.vec.new_tensor([0, 0, 0, 1]))
    mat = luma.eye - chroma + chroma * gain[:, None, None]
    return torch.where((gain == 1)[:, None, None], luma.eye, mat)   # untouched stays exactly identity


_COLOUR_STEPS = (('brightness', _brightness), ('contrast', _contrast), ('lumaflip', _luma_flip),
                 ('hue', _hue), ('saturation', _saturation))


class _Luma:
    """The luma axis as [4] vector and [4, 4] projection, with the 4x4 identity."""

    def __init__(self, dtype, device):
        self.vec = torch.tensor(list(_LUMA_AXIS) + [0], dtype=dtype, device=device)
        self.proj = torch.outer(self.vec, self.vec)
        self.eye = torch.eye(4, dtype=dtype, device=device)


def _work_dtype(images):
    """Matrices are built in float64 for float64 images and in float32 otherwise."""
    return torch.float64 if images.dtype == torch.float64 else torch.float32


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """The ADA augment pipe; see the module docstring. Options are probability
    multipliers (one per augmentation) and the magnitudes of their draws."""

    def __init__(self,
                 xflip: float = 0, rotate90: float = 0, xint: float = 0, xint_max: float = 0.125,
                 scale: float = 0, rotate: float = 0, aniso: float = 0, xfrac: float = 0, scale_std: float = 0.2,
                 rotate_max: float = 1, aniso_std: float = 0.2, xfrac_std: float = 0.125,
                 brightness: float = 0, contrast: float = 0, lumaflip: float = 0, hue: float = 0,
                 saturation: float = 0, brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1,
                 saturation_std: float = 1,
                 imgfilter: float = 0, imgfilter_bands: list = [1, 1, 1, 1], imgfilter_std: float = 1,
                 noise: float = 0, cutout: float = 0, noise_std: float = 0.1, cutout_size: float = 0.5):
        super().__init__()
        self.register_buffer('p', torch.ones([]))
        # Blits: probabilities, and the largest integer shift as a fraction of the size.
        self.xflip, self.rotate90, self.xint = float(xflip), float(rotate90), float(xint)
        self.xint_max = float(xint_max)
        # Warps: probabilities; scales are log2-normal, angles uniform in +-pi * rotate_max.
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.scale_std, self.aniso_std = float(scale_std), float(aniso_std)
        self.rotate_max, self.xfrac_std = float(rotate_max), float(xfrac_std)
        # Colour: probabilities; offsets normal, gains log2-normal, hue uniform in +-pi * hue_max.
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        # Band filter: one probability multiplier per octave band, log2-normal gains.
        self.imgfilter, self.imgfilter_std = float(imgfilter), float(imgfilter_std)
        self.imgfilter_bands = [float(b) for b in imgfilter_bands]
        assert len(self.imgfilter_bands) == len(_BAND_POWER), 'imgfilter_bands needs one entry per octave band'
        # Corruptions.
        self.noise, self.noise_std = float(noise), float(noise_std)
        self.cutout, self.cutout_size = float(cutout), float(cutout_size)
        # The filters are buffers so that .to(device) carries them along.
        self.register_buffer('geom_filter', upfirdn2d.setup_filter(list(SYM6_LOWPASS)))
        self.register_buffer('band_filters', torch.as_tensor(octave_filter_bank(daubechies2_lowpass()),
                                                             dtype=torch.float32))

    def forward(self, images, debug_percentile=None):
        """Augment a float [N, C, H, W] batch; `debug_percentile` as in the module docstring."""
        assert torch.is_tensor(images) and images.dim() == 4 and images.dtype.is_floating_point, \
            'AugmentPipe wants a float NCHW batch'
        shape = list(images.shape)
        if debug_percentile is not None:
            debug_percentile = float(debug_percentile)
            assert 0 <= debug_percentile <= 1, 'debug_percentile lies in [0, 1]'
        work = _work_dtype(images)
        images = self._geometry(images, _Dice(images, work, self.p.to(work), debug_percentile))
        images = self._colour(images, _Dice(images, work, self.p.to(work), debug_percentile))
        images = self._band_filter(images, _Dice(images, work, self.p.to(work), debug_percentile))
        images = self._corrupt(images, _Dice(images, None, self.p, debug_percentile))
        misc.assert_shape(images, shape)
        return images

    def _enabled(self, steps):
        return [(name, make) for name, make in steps if getattr(self, name) > 0]

    def _geometry(self, images, dice):
        blits, warps = self._enabled(_BLIT_STEPS), self._enabled(_WARP_STEPS)
        if not blits and not warps:
            return images
        size = (images.shape[3], images.shape[2])
        eye = torch.eye(3, dtype=dice.dtype, device=dice.device).expand(dice.n, 3, 3)
        blit = warp = eye
        for _name, make in blits:
            blit = blit @ make(self, dice, size)
        for _name, make in warps:
            warp = warp @ make(self, dice, size)
        mats = blit @ warp
        resample = ~_is_identity(warp)                 # pure blits are copied, not resampled
        copy_only = ~_is_identity(mats) & ~resample
        margin = (self.geom_filter.shape[0] + 3) // 4  # canvas pixels eaten by the down filter
        plan = _padding_plan(mats, resample, copy_only, size, margin)
        out = images
        if plan['blit']:
            out = torch.where(copy_only[:, None, None, None], self._blit(images, mats), out)
        if plan['pads'] is not None:
            warped = self._resample(images, mats, plan['pads'], margin)
            out = torch.where(resample[:, None, None, None], warped, out)
        return out

    def _blit(self, images, mats):
        """Exact nearest-pixel gather for maps that send pixel centres to pixel centres."""
        n, c, h, w = images.shape
        xs = torch.arange(w, dtype=mats.dtype, device=mats.device) + 0.5 - w / 2
        ys = torch.arange(h, dtype=mats.dtype, device=mats.device) + 0.5 - h / 2
        src_x, src_y = _map_points(mats, xs, ys)
        col = _reflect_index(torch.round(src_x + w / 2 - 0.5).long(), w)
        row = _reflect_index(torch.round(src_y + h / 2 - 0.5).long(), h)
        index = (row * w + col).reshape(n, 1, h * w).expand(n, c, h * w)
        return images.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)

    def _resample(self, images, mats, pads, margin):
        """Warp through `mats`: reflect-pad by `pads` (left, right, top, bottom),
        upsample 2x, grid-sample a canvas `margin` pixels wider than the image,
        downsample 2x and crop."""
        n, c, h, w = images.shape
        left, right, top, bottom = pads
        dt, dev = mats.dtype, mats.device
        up = upfirdn2d.upsample2d(_reflect_pad(images, left, right, top, bottom), self.geom_filter, up=2)
        src_w, src_h = w + left + right, h + top + bottom
        # Canvas pixel j sits at (j + 0.5) / 2 - (size / 2 + margin) about the centre, less
        # the filter delay; the padded source is addressed in grid_sample's [-1, 1] units.
        lag = _SYM6_DELAY / 2
        from_canvas = _stack_rows([[0.5, 0, 0.25 - lag - (w / 2 + margin)],
                                   [0, 0.5, 0.25 - lag - (h / 2 + margin)], [0, 0, 1]], 1, dt, dev)
        to_unit = _stack_rows([[2 / src_w, 0, (w + 2 * left + 2 * lag) / src_w - 1],
                               [0, 2 / src_h, (h + 2 * top + 2 * lag) / src_h - 1], [0, 0, 1]], 1, dt, dev)
        canvas = to_unit @ mats @ from_canvas
        gx, gy = _map_points(canvas, torch.arange(2 * (w + 2 * margin), dtype=dt, device=dev),
                             torch.arange(2 * (h + 2 * margin), dtype=dt, device=dev))
        sampled = grid_sample_gradfix.grid_sample(up, torch.stack([gx, gy], dim=-1).to(up.dtype))
        down = upfirdn2d.downsample2d(sampled, self.geom_filter, down=2, flip_filter=True)
        return down[:, :, margin:margin + h, margin:margin + w]

    def _colour(self, images, dice):
        steps = self._enabled(_COLOUR_STEPS)
        if not steps:
            return images
        n, c, h, w = images.shape
        if c not in (1, 3):
            raise ValueError('colour augmentations need 1 or 3 channels, got {}'.format(c))
        luma = _Luma(dice.dtype, dice.device)
        mat = luma.eye.expand(n, 4, 4)
        for _name, make in steps:
            mat = make(self, dice, luma) @ mat
        untouched = _is_identity(mat)
        mat = mat.to(images.dtype)
        pixels = images.reshape(n, c, h * w)
        if c == 3:
            out = mat[:, :3, :3] @ pixels + mat[:, :3, 3:]
        else:
            # A grey value g stands for (g, g, g): average the matrix's response back.
            gain = mat[:, :3, :3].sum(dim=2).mean(dim=1)
            offset = mat[:, :3, 3].mean(dim=1)
            out = pixels * gain[:, None, None] + offset[:, None, None]
        return torch.where(untouched[:, None, None, None], images, out.reshape(n, c, h, w))

    def _band_filter(self, images, dice):
        if not self.imgfilter > 0:
            return images
        n, c, h, w = images.shape
        # Each band's gain is log2-normal when it fires and 1 otherwise; the gains are
        # then scaled so that the expected output power matches the input's.
        columns = []
        for multiplier in self.imgfilter_bands:
            gain = torch.ones([n], dtype=dice.dtype, device=dice.device)
            if multiplier > 0:
                draw = torch.exp2(dice.normal() * self.imgfilter_std)
                gain = dice.fire(draw, 1, self.imgfilter * multiplier * dice.p)
            columns.append(gain)
        gains = torch.stack(columns, dim=1)
        untouched = (gains == 1).all(dim=1)
        power = torch.as_tensor(_BAND_POWER, dtype=dice.dtype, device=dice.device)
        gains = gains / (gains.square() * power).sum(dim=1, keepdim=True).sqrt()
        taps = self.band_filters.shape[1]
        kernel = (gains @ self.band_filters.to(dice.dtype)).to(images.dtype)
        kernel = kernel[:, None, :].expand(n, c, taps).reshape(n * c, 1, 1, taps)
        half = taps // 2
        x = _reflect_pad(images, half, half, half, half).reshape(1, n * c, h + taps - 1, w + taps - 1)
        x = conv2d_gradfix.conv2d(x, kernel, groups=n * c)                                 # along x
        x = conv2d_gradfix.conv2d(x, kernel.reshape(n * c, 1, taps, 1), groups=n * c)     # along y
        return torch.where(untouched[:, None, None, None], images, x.reshape(n, c, h, w))

    def _corrupt(self, images, dice):
        n, c, h, w = images.shape
        if self.noise > 0:
            sigma = dice.fire(dice.normal().abs() * self.noise_std, 0, self.noise * dice.p)
            images = images + torch.randn_like(images) * sigma.to(images.dtype).reshape(n, 1, 1, 1)
        if self.cutout > 0:
            size = dice.fire(torch.full([n], self.cutout_size, device=images.device), 0, self.cutout * dice.p)
            centre = dice.uniform(2)
            far_x = _outside(w, centre[:, 0:1], size, images.device)                 # [N, W]
            far_y = _outside(h, centre[:, 1:2], size, images.device)                 # [N, H]
            keep = far_x[:, None, :] | far_y[:, :, None]
            images = images * keep[:, None].to(images.dtype)
        return images


def _outside(length, centre, size, device):
    """[N, length] bool: pixel centres at least size / 2 away from `centre` (in units of the length)."""
    pos = (torch.arange(length, device=device, dtype=torch.float32) + 0.5) / length
    return (pos[None, :] - centre).abs() >= size[:, None] / 2


def _padding_plan(mats, resample, copy_only, size, margin):
    """How much reflect padding the warped images need, decided on the host.

    The corners of the canvas (image plus `margin`) are mapped into the source;
    the padding covers the farthest one, plus one pixel for the upsampling filter
    and bilinear taps, capped at four image sizes. One device-to-host copy.
    Returns {'blit': any pure blit, 'pads': [left, right, top, bottom] or None}."""
    w, h = size
    dt, dev = mats.dtype, mats.device
    half = torch.tensor([w / 2 + margin, h / 2 + margin], dtype=dt, device=dev)
    corners = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=dt, device=dev) * half
    corners = torch.cat([corners, torch.ones([4, 1], dtype=dt, device=dev)], dim=1).t()
    reach = mats[:, :2, :] @ corners
    reach = torch.where(resample[:, None, None], reach, torch.zeros_like(reach))
    facts = torch.cat([reach.amin(dim=(0, 2)), reach.amax(dim=(0, 2)),
                       copy_only.any()[None].to(dt), resample.any()[None].to(dt)]).cpu().tolist()
    min_x, min_y, max_x, max_y, any_blit, any_warp = facts
    if not any_warp:
        return {'blit': bool(any_blit), 'pads': None}
    need = [-min_x - w / 2, max_x - w / 2, -min_y - h / 2, max_y - h / 2]
    pads = [int(min(max(np.ceil(v), 0) + margin + 1, 4 * max(h, w))) for v in need]
    return {'blit': bool(any_blit), 'pads': pads}
