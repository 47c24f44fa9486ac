"""BigGAN (Brock et al., 2019) generator and discriminator at CIFAR scale, for the harness.

This is the backbone KD-DLGAN reports its CIFAR-10/100 rows on (the
DiffAugment BigGAN-CIFAR setting, docs/METHODS.md and issue 15 list the
facts). Both classes take the harness constructor signatures and are
persistent, so a snapshot carries this module's source.

Layout at 32 pixels (ngf = ndf = 64, BigGAN's G_ch/D_ch; z_dim = 128)
---------------------------------------------------------------------
G: spectrally normalised linear z -> 4 x 4 x 256; three up blocks of 256
channels (4 -> 8 -> 16 -> 32), each
    main:     norm1 - ReLU - nearest x2 - 3x3 conv - norm2 - ReLU - 3x3 conv
    shortcut: nearest x2 - 1x1 conv
then BN (affine) - ReLU - 3x3 conv to img_channels - tanh. With labels each
block norm is class-conditional: BN without affine parameters, scaled by
1 + gain[c] and shifted by bias[c], two [c_dim, channels] tables per norm
(nothing shared between layers, no hierarchical z). Without labels each
block norm is a plain affine BN.

D: four residual blocks to 256 channels, the first two halving the size
(32 -> 16 -> 8); each
    main:     [ReLU] - 3x3 conv - ReLU - 3x3 conv - [avg pool 2]
    shortcut: 1x1 conv where the channels change or the block pools
(the first block starts without the ReLU and pools before its shortcut
conv, the others convolve first); then ReLU, a sum over the 8 x 8 map, a
linear layer to one logit, plus for labels the projection <embed[c], h>.

Every conv, linear and D's embedding is spectrally normalised (one power
iteration per training-mode forward); weights start N(0, 0.02), biases as
torch's defaults, G's class tables N(0, 0.02) (so gains start near 1).
Parameter counts: G 4,304,387 (10 classes) / 4,580,867 (100); D 4,207,361 /
4,230,401 (tests/test_biggan.py).

Other sizes follow the same rules: G adds one 4 ngf-channel up block per
doubling from 4 (64 pixels: four blocks); D halves the size until 8 x 8
and then runs two blocks at 8 x 8 (64 pixels: three pooling blocks). Any
img_channels (1 for grey-scale data).

Interface
---------
`G.mapping(z, c)` -> ws [N, 1, z_dim + c_dim]: there is no mapping network,
w is z with the one-hot label appended (the FastGAN mapping module, reused);
`G.synthesis(ws)` -> images NCHW in [-1, 1].
`D(img, c, features=False)` -> logits [N, 1], or `(logits, feat)` with feat
the pooled 256-channel vector [N, D.feature_dim], the input of KD-DLGAN's
student head (kdgan_plugins.networks.student.KDDiscriminator).
StyleGAN2-only keys the harness may pass (`num_fp16_res`, `conv_clamp`,
`fp16_channels_last`) are accepted and ignored: these networks run in the
precision of their input.
"""

import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils import persistence
from kdgan_plugins.networks.fastgan import FastGANMapping, _SpectralNormBase

_PRECISION_KEYS = ('num_fp16_res', 'conv_clamp', 'fp16_channels_last')
_BOTTOM = 4          # G starts from a 4 x 4 map.
_D_FINAL = 8         # D stops pooling at 8 x 8.
_D_FLAT_BLOCKS = 2   # ... and then runs this many blocks at that size.


def _check_resolution(res):
    if res < 8 or res & (res - 1):
        raise ValueError(f'BigGAN needs a power-of-two img_resolution of at least 8, got {res}')


def _drop_precision_keys(kwargs, owner):
    rest = {k: v for k, v in dict(kwargs).items() if k not in _PRECISION_KEYS}
    if rest:
        raise TypeError(f'{owner}: unsupported arguments {sorted(rest)}')


def _default_bias(out_features, fan_in):
    bound = fan_in ** -0.5
    return torch.nn.Parameter(torch.empty([out_features]).uniform_(-bound, bound))


@persistence.persistent_class
class SNConv(_SpectralNormBase):
    """k x k convolution (stride 1, 'same' padding) with a bias and a spectrally normalised weight."""

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self._init_sn([out_channels, in_channels, kernel_size, kernel_size], dim=0)
        self.bias = _default_bias(out_channels, in_channels * kernel_size * kernel_size)

    def forward(self, x):
        w = self.normalized_weight().to(x.dtype)
        return F.conv2d(x, w, self.bias.to(x.dtype), padding=self.kernel_size // 2)

    def extra_repr(self):
        return f'{self.in_channels}, {self.out_channels}, kernel={self.kernel_size}'


@persistence.persistent_class
class SNDense(_SpectralNormBase):
    """Linear layer with an optional bias and a spectrally normalised weight."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_sn([out_features, in_features], dim=0)
        self.bias = _default_bias(out_features, in_features) if bias else None

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.normalized_weight().to(x.dtype), bias)


@persistence.persistent_class
class ClassNorm(torch.nn.Module):
    """Batch norm whose scale and shift come from the label: x_hat * (1 + gain[c]) + bias[c].
    With c_dim = 0 it is an ordinary affine batch norm."""

    def __init__(self, channels, c_dim=0):
        super().__init__()
        self.c_dim = c_dim
        self.bn = torch.nn.BatchNorm2d(channels, affine=(c_dim == 0))
        if c_dim > 0:
            self.gain = torch.nn.Parameter(torch.empty([c_dim, channels]).normal_(0, 0.02))
            self.bias = torch.nn.Parameter(torch.empty([c_dim, channels]).normal_(0, 0.02))

    def forward(self, x, c=None):
        x = self.bn(x)
        if self.c_dim == 0:
            return x
        c = c.to(x.dtype)
        scale = 1 + c @ self.gain.to(x.dtype)
        shift = c @ self.bias.to(x.dtype)
        return x * scale[:, :, None, None] + shift[:, :, None, None]


@persistence.persistent_class
class GBlock(torch.nn.Module):
    """Residual up block: doubles the size; see the module docstring."""

    def __init__(self, in_channels, out_channels, c_dim=0):
        super().__init__()
        self.norm1 = ClassNorm(in_channels, c_dim)
        self.conv1 = SNConv(in_channels, out_channels, 3)
        self.norm2 = ClassNorm(out_channels, c_dim)
        self.conv2 = SNConv(out_channels, out_channels, 3)
        self.conv_sc = SNConv(in_channels, out_channels, 1)

    def forward(self, x, c=None):
        h = F.interpolate(F.relu(self.norm1(x, c)), scale_factor=2, mode='nearest')
        h = self.conv2(F.relu(self.norm2(self.conv1(h), c)))
        return h + self.conv_sc(F.interpolate(x, scale_factor=2, mode='nearest'))


@persistence.persistent_class
class BigGANSynthesis(torch.nn.Module):
    """ws [N, 1, z_dim + c_dim] -> images [N, img_channels, res, res]."""

    def __init__(self, z_dim, c_dim, img_resolution, img_channels, ngf=64):
        super().__init__()
        _check_resolution(img_resolution)
        self.z_dim, self.c_dim = z_dim, c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.num_ws = 1
        width = 4 * ngf
        self.width = width
        self.fc = SNDense(z_dim, width * _BOTTOM * _BOTTOM)
        blocks, size = [], _BOTTOM
        while size < img_resolution:
            blocks.append(GBlock(width, width, c_dim))
            size *= 2
        self.blocks = torch.nn.ModuleList(blocks)
        self.out_bn = torch.nn.BatchNorm2d(width)
        self.out_conv = SNConv(width, img_channels, 3)

    def forward(self, ws, noise_mode='random', force_fp32=False, **unused):
        misc.assert_shape(ws, [None, self.num_ws, self.z_dim + self.c_dim])
        z, c = ws[:, 0, :self.z_dim], ws[:, 0, self.z_dim:]
        x = self.fc(z).reshape(-1, self.width, _BOTTOM, _BOTTOM)
        for block in self.blocks:
            x = block(x, c if self.c_dim else None)
        img = torch.tanh(self.out_conv(F.relu(self.out_bn(x))))
        misc.assert_shape(img, [ws.shape[0], self.img_channels, self.img_resolution, self.img_resolution])
        return img


@persistence.persistent_class
class Generator(torch.nn.Module):
    """BigGAN generator with the harness interface (see the module docstring).
    `ngf` is BigGAN's G_ch (width 4 ngf); `synthesis_kwargs` may hold ngf; `w_dim` must be
    None, z_dim or z_dim + c_dim."""

    def __init__(self, z_dim=128, c_dim=0, w_dim=None, img_resolution=32, img_channels=3, mapping_kwargs={},
                 synthesis_kwargs={}, ngf=64):
        super().__init__()
        if w_dim not in (None, z_dim, z_dim + c_dim):
            raise ValueError(f'BigGAN has no mapping network (w is z, plus the label): w_dim must be None or '
                             f'{z_dim + c_dim}, got {w_dim}')
        if mapping_kwargs:
            raise TypeError(f'BigGAN has no mapping network; unsupported mapping_kwargs {sorted(mapping_kwargs)}')
        synthesis_kwargs = dict(synthesis_kwargs)
        ngf = synthesis_kwargs.pop('ngf', ngf)
        _drop_precision_keys(synthesis_kwargs, 'BigGAN synthesis_kwargs')
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, z_dim + c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = BigGANSynthesis(z_dim, c_dim, img_resolution, img_channels, ngf=ngf)
        self.num_ws = self.synthesis.num_ws
        self.mapping = FastGANMapping(z_dim, c_dim, self.w_dim, self.num_ws)

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)


@persistence.persistent_class
class DBlock(torch.nn.Module):
    """Residual down block; `first` = no ReLU on entry and pool before the shortcut conv."""

    def __init__(self, in_channels, out_channels, pool, first=False):
        super().__init__()
        self.pool, self.first = pool, first
        self.conv1 = SNConv(in_channels, out_channels, 3)
        self.conv2 = SNConv(out_channels, out_channels, 3)
        self.conv_sc = SNConv(in_channels, out_channels, 1) if (pool or in_channels != out_channels) else None

    def _shrink(self, x):
        return F.avg_pool2d(x, 2) if self.pool else x

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = self._shrink(self.conv2(F.relu(self.conv1(h))))
        if self.conv_sc is None:
            return h + x
        skip = self.conv_sc(self._shrink(x)) if self.first else self._shrink(self.conv_sc(x))
        return h + skip


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """BigGAN projection discriminator with the harness interface (see the module docstring);
    `ndf` is BigGAN's D_ch (width 4 ndf)."""

    def __init__(self, c_dim=0, img_resolution=32, img_channels=3, ndf=64, block_kwargs={}, mapping_kwargs={},
                 epilogue_kwargs={}, **kwargs):
        super().__init__()
        _check_resolution(img_resolution)
        for name, extra in (('block_kwargs', block_kwargs), ('kwargs', kwargs)):
            _drop_precision_keys(extra, f'BigGAN Discriminator {name}')
        if mapping_kwargs or epilogue_kwargs:
            raise TypeError('BigGAN Discriminator has no mapping network or StyleGAN2 epilogue; drop '
                            'mapping_kwargs/epilogue_kwargs (e.g. --mbstd-group does not apply)')
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        width = 4 * ndf
        self.feature_dim = width
        blocks, size, channels = [], img_resolution, img_channels
        while size > _D_FINAL:
            blocks.append(DBlock(channels, width, pool=True, first=not blocks))
            channels, size = width, size // 2
        for _ in range(_D_FLAT_BLOCKS):
            blocks.append(DBlock(channels, width, pool=False, first=not blocks))
            channels = width
        self.blocks = torch.nn.ModuleList(blocks)
        self.out = SNDense(width, 1)
        self.embed = SNDense(c_dim, width, bias=False) if c_dim > 0 else None

    def forward(self, img, c=None, features=False, **unused):
        misc.assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        h = img
        for block in self.blocks:
            h = block(h)
        feat = F.relu(h).sum(dim=[2, 3])
        logits = self.out(feat)
        if self.embed is not None:
            misc.assert_shape(c, [img.shape[0], self.c_dim])
            logits = logits + (self.embed(c.to(feat.dtype)) * feat).sum(dim=1, keepdim=True)
        return (logits, feat) if features else logits
