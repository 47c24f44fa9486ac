"""FastGAN (Liu et al., ICLR 2021) generator and discriminator for the harness.

Both classes take the harness constructor signatures, expose the attributes
and sub-modules the StyleGAN2-ADA tools expect, and are persistent classes:
their pickles carry this module's source, so this module imports only numpy,
torch and torch_utils.

Architecture
------------
At 256, 512 and 1024 the networks follow the facts of the official code as
listed in docs/METHODS.md: spectral normalisation on every convolution,
transposed convolution and linear layer, none of which has a bias;
BatchNorm with affine weight and bias; GLU; Up / UpComp blocks; noise
injection (one learned scalar, initialised to 0); skip-layer excitation
(SLE) with Swish; conv weights N(0, 0.02), BN weights N(1, 0.02), BN biases
0. With ngf = ndf = 64, nz = 256, 3 channels and no labels the parameter
counts equal the official ones (tests/test_fastgan_networks.py).

Smaller outputs (32, 64 and 128, for small data and tests) use the same rules:

* G: the same trunk (same channels by spatial size, same block types),
  stopped at the output size; an SLE exists only where its target size is
  within the output (32 has none; 64 gets SLE(4->64); 128 gets SLE(4->64),
  SLE(8->128)).
  `to_big` is the 3x3 conv from the output-size map; the auxiliary image is
  the 1x1 conv `to_128` from the map at min(res, 128), so at 64 both come
  from the 64-pixel map.
* D: the big path always ends at 8x8x(8 ndf) and 5x5 logits. Its stem is
  the 256-pixel stem (3x3 stride-1 conv + LReLU) producing the channels the
  256-pixel trunk has at that spatial size (ndf/2 at 128, ndf at 64),
  followed by the DownComp blocks of the trunk from that size down to 8.
  The in-D SLEs whose source size lies inside the input exist
  (128: (128->16), (64->8); 64: (64->8); 32: none). The small path reads the image at
  min(res, 128) with channels by spatial size (at ndf = 64: 64:32, 32:64,
  16:128, 8:256):
  first a 4x4 stride-2 conv, then Down blocks to 8x8x256, 5x5 logits. The
  decoders produce min(res, 128) pixels (the same Up chain, stopped there),
  and the reconstruction targets are made at that size. Their widths follow
  ndf with `decoder_widths='ndf'` (what the presets build: at ndf = 64 the
  official 128/64/64/32; at ndf = 8 16/8/8/4), or stay the official ones
  with 'fixed' (the default, so that networks recorded before the option
  existed rebuild unchanged).

Single-channel (grayscale) data works at every size: img_channels sets the
channels of G's outputs and of D's inputs and decoder outputs.

`lite=True` (the `fastgan_lite` preset) makes every generator up block a
plain Up block (no UpComp, hence no noise injection); D is unchanged.

Generator interface
-------------------
`G.mapping(z, c, truncation_psi=1, truncation_cutoff=None, **unused)`
returns ws [N, num_ws=2, w_dim]: FastGAN has no mapping network, so each w
is z itself (for a conditional G the label is appended: w = [z, c], so
w_dim = z_dim + c_dim; with c_dim = 0, w_dim = z_dim). Truncation pulls the
latent part toward `G.mapping.w_avg`, a buffer that stays zero (the mean of
z ~ N(0, I)); the label part is never truncated by G itself.

`G.synthesis(ws, noise_mode='random', return_aux=False)`:
ws[:, 0] drives the trunk (content, layout) and ws[:, 1] drives the
low-resolution inputs of the SLE modules (appearance, style). When both
slots hold the same w (always, for ws from `G.mapping`) one trunk pass
serves both, exactly as in the official network; otherwise the low-res
trunk is run a second time on ws[:, 1] (sharing the noise draws), so
swapping ws[:, 1] between two latents gives SLE style mixing. (In train
mode that second pass also updates the BN running statistics of the
low-res layers once more.) For a conditional G each pass uses the label
carried in its own slot.
`style_mixing.py` therefore mixes with style index 1. Equality of the two
slots is checked with `torch.equal` (one host sync on GPU) unless ws is a
broadcast view (stride 0 on dim 1), which `G.forward` passes.

`return_aux=True` returns `(img, img_aux)`: the full-size image and the
min(res, 128) auxiliary image that the discriminator's small path reads for
fakes (`D(img, c, img_small=img_aux)`). Outputs are NCHW in about [-1, 1]
(tanh only at 1024, as in the official code; `output_tanh=True/False`
overrides).

Noise modes: 'random' draws fresh N(0, 1) noise [N, 1, H, W] per injection
per call; 'const' uses fixed noise buffers (`noise_const` [H, W], one per
injection, drawn at construction and stored in the pickle; the same name
and shape as StyleGAN2's, so projector.py can optimise them), so G in eval
mode is deterministic while its noise statistics stay those of training;
'none' injects nothing.

BatchNorm under EMA (decision)
------------------------------
The official code averages only G's parameters and evaluates G in train
mode, i.e. with batch statistics: outputs then depend on which other samples
are in the batch, and a batch of one (generate.py, projector.py) is
degenerate. The training loop copies G's buffers (BN running mean/var, SN
vectors, noise buffers) into G_ema every step, so in eval mode G_ema would
normalise with statistics gathered for other weights. Which statistics
G_ema's pictures, snapshots and metrics use is therefore a training option,
`ema_bn` (`--ema-bn`; the fastgan cfgs' default is presets.FASTGAN_EMA_BN,
chosen by measured FID, docs/benchmarks.md):

* 'copy': G's running statistics, as copied (what every run did before the
  option existed);
* 'recompute': G_ema's own, from `recompute_bn_stats()` (a cumulative
  average over seeded random batches with train-mode BN, "precise BN") on
  a copy of G_ema before each grid and snapshot; the snapshot holds them;
* 'batch': the statistics of each generated batch, as the official
  evaluation: the loop makes G_ema with `with_eval_bn('batch')`, which
  records `eval_bn='batch'` among its constructor arguments, so pickles and
  weights-only model files of it do the same in eval mode (pictures then
  depend on the batch: metrics generate 64 at a time on the CPU, 4 on a GPU).

`eval_bn` ('running' | 'batch') only changes eval mode; train mode always
normalises with the batch and updates the buffers. Networks recorded before
the option have no `eval_bn` and keep running statistics.

Discriminator interface
-----------------------
`D(img, c, img_small=None, features=False, recon=False, part=None)`:
img at the full resolution; img_small is G's auxiliary image for fakes, and
when None D makes it by nearest resizing of img to min(res, 128) (the
official real-image path). Returns:

* nothing extra asked: logits [N, 50] (the 5x5 big-path and 5x5 small-path
  logit maps, flattened and concatenated; elementwise losses mean over all),
  so upstream losses work unchanged;
* `features=True`: `(logits, feat)`, feat [N, 8 ndf] is the last 8x8 map of
  the big path (after its SLE), mean-pooled: the penultimate feature for a
  distillation student head (`D.feature_dim`);
* `recon=True`: `(logits, rec)` with rec a dict: 'big', 'small', 'part' the
  three decoder outputs [N, C, r, r] with r = min(res, 128)
  (`D.recon_resolution`), 'target_big', 'target_small', 'target_part' their
  targets (img nearest-resized to r, or its quadrant nearest-resized to r),
  and 'part_index' the quadrant (0 top-left, 1 top-right, 2 bottom-left,
  3 bottom-right; the decoder reads the same quadrant of the 16x16 map),
  drawn once per call from torch's global RNG unless `part` is given. The
  targets are the image D was given, so pass the augmented real batch;
* both: `(logits, feat, rec)`.

Conditioning (c_dim > 0): G uses class-conditional BatchNorm (BN without
affine, then a per-class weight and bias: linear maps of the one-hot label,
initialised N(1, 0.02) and 0); D adds a projection term, the inner product of
a spectrally normalised label embedding with `feat`, to every logit.
"""

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils import persistence

# Keys of StyleGAN2's G/D kwargs that the harness may add (e.g. `--fp32`,
# `--nhwc`) and that mean nothing for FastGAN, which always runs in the
# precision of its inputs. They are accepted and ignored.
_IGNORED_G_KEYS = ('num_fp16_res', 'conv_clamp', 'fp16_channels_last')
_IGNORED_D_KEYS = ('num_fp16_res', 'conv_clamp')
_SUPPORTED_RESOLUTIONS = (32, 64, 128, 256, 512, 1024)

# Channel multipliers of ngf by spatial size (official generator).
_G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
# Up block type per spatial size: True = UpComp (two convs + noise).
_G_COMP = {8: True, 16: False, 32: True, 64: False, 128: True, 256: False, 512: True, 1024: False}
# SLE target size -> source size (official generator; none at 1024).
_G_SLE = {64: 4, 128: 8, 256: 16, 512: 32}
# Discriminator big-path channel multipliers of ndf by spatial size (256-pixel trunk).
_D_MULT = {256: 0.25, 128: 0.5, 64: 1, 32: 2, 16: 4, 8: 8}
# Discriminator in-D SLEs: source size -> target size.
_D_SLE = {256: 32, 128: 16, 64: 8}
# Small path channels by spatial size (multipliers of ndf).
_D_SMALL_MULT = {64: 0.5, 32: 1, 16: 2, 8: 4}
# Decoder channels by spatial size. 'fixed': the official code's widths at every ndf (what
# discriminators built before `decoder_widths` existed have); 'ndf': multipliers of ndf that give
# exactly those widths at ndf = 64, so a narrow D no longer carries full-width decoders.
_DEC_CH = {16: 128, 32: 64, 64: 64, 128: 32}
_DEC_MULT = {16: 2, 32: 1, 64: 1, 128: 0.5}
DECODER_WIDTHS = ('fixed', 'ndf')
# How an Up block computes its first convolution: 'nearest' upsamples by 2 and applies the 3x3
# kernel (the reference arithmetic); 'folded' applies the same linear map as one stride-2 4x4
# transposed convolution whose taps are sums of the 3x3 taps (4/9 of the multiply-adds; equal up to
# float rounding). The parameters are the same either way.
UP_CONVS = ('nearest', 'folded')
# Which statistics G's batch norms use in eval mode: 'running' (the buffers; per-sample deterministic
# outputs) or 'batch' (those of the batch being generated, as in the official evaluation, where G is
# sampled in train mode). Train mode always normalises with batch statistics and updates the buffers.
EVAL_BNS = ('running', 'batch')


def decoder_channels(ndf, decoder_widths):
    """{spatial size: channels} of the reconstruction decoders."""
    if decoder_widths == 'fixed':
        return dict(_DEC_CH)
    if decoder_widths == 'ndf':
        return {s: max(1, int(m * ndf)) for s, m in _DEC_MULT.items()}
    raise ValueError(f'decoder_widths must be one of {DECODER_WIDTHS}, got {decoder_widths!r}')


def _check_up_conv(up_conv):
    if up_conv not in UP_CONVS:
        raise ValueError(f'up_conv must be one of {UP_CONVS}, got {up_conv!r}')
    return up_conv


def _check_resolution(res):
    if res not in _SUPPORTED_RESOLUTIONS:
        raise ValueError(f'FastGAN supports img_resolution in {_SUPPORTED_RESOLUTIONS}, got {res}')


def _pop_ignored(kwargs, ignored, owner):
    kwargs = dict(kwargs)
    for key in ignored:
        kwargs.pop(key, None)
    if kwargs:
        raise TypeError(f'{owner}: unsupported arguments {sorted(kwargs)}')

# Spectrally normalised layers (bias-free).
#
# The raw weight is the parameter `weight_orig`; the power-iteration vectors
# are the buffers `weight_u` and `weight_v`, the layout torch's
# `nn.utils.spectral_norm` uses, so parameter counts match the official code.
# In training mode each forward runs one power iteration and stores the
# vectors; in eval mode the stored vectors are used as they are.


def _sn_normalize(vec, eps=1e-12):
    return vec / vec.norm().clamp_min(eps)


class _SpectralNormBase(torch.nn.Module):
    def _init_sn(self, shape, dim):
        self.sn_dim = dim
        self.weight_orig = torch.nn.Parameter(torch.empty(shape).normal_(0, 0.02))
        rows = shape[dim]
        cols = int(np.prod(shape)) // rows
        self.register_buffer('weight_u', _sn_normalize(torch.randn(rows)))
        self.register_buffer('weight_v', _sn_normalize(torch.randn(cols)))

    def normalized_weight(self):
        # Autocast off: the power iteration and sigma stay in the parameters' precision (fp32);
        # callers cast the normalised weight to their activations' dtype.
        with torch.autocast(device_type=self.weight_orig.device.type, enabled=False):
            return self._normalized_weight()

    def _normalized_weight(self):
        w = self.weight_orig
        mat = w.movedim(self.sn_dim, 0).reshape(w.shape[self.sn_dim], -1)
        if self.training:
            with torch.no_grad():
                mat_d = mat.detach().to(self.weight_u.dtype)
                v = _sn_normalize(mat_d.t() @ self.weight_u)
                u = _sn_normalize(mat_d @ v)
                self.weight_v.copy_(v)
                self.weight_u.copy_(u)
        else:
            # Clones: the buffers may be rewritten by a later training-mode call before backward.
            u = self.weight_u.clone()
            v = self.weight_v.clone()
        sigma = torch.dot(u.to(mat.dtype), mat @ v.to(mat.dtype))
        return w / sigma


@persistence.persistent_class
class SNConv2d(_SpectralNormBase):
    """Bias-free spectrally normalised (transposed) convolution."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, transposed=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.padding = padding
        self.transposed = transposed
        k = kernel_size
        if transposed:   # torch layout [in, out, k, k]; normalised over the output dimension.
            self._init_sn([in_channels, out_channels, k, k], dim=1)
        else:
            self._init_sn([out_channels, in_channels, k, k], dim=0)

    def forward(self, x):
        w = self.normalized_weight().to(x.dtype)
        if self.transposed:
            return F.conv_transpose2d(x, w, None, stride=self.stride, padding=self.padding)
        return F.conv2d(x, w, None, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return (f'{self.in_channels}, {self.out_channels}, kernel={self.weight_orig.shape[-1]}, '
                f'stride={self.stride}, padding={self.padding}, transposed={self.transposed}')


@persistence.persistent_class
class SNLinear(_SpectralNormBase):
    """Bias-free spectrally normalised linear layer."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self._init_sn([out_features, in_features], dim=0)

    def forward(self, x):
        return F.linear(x, self.normalized_weight().to(x.dtype))

# Normalisation and small blocks.

# Row/column taps of the folded up-convolution: a 3x3 conv after nearest x2 upsampling equals a
# stride-2, padding-1 transposed conv with 4x4 taps, tap t = sum of the 3x3 taps that land on the
# same input pixel for the output parity t selects.
_FOLD = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def folded_up_conv(x, weight):
    """conv3x3(nearest_up2(x), weight, padding=1) as one transposed convolution; weight [O, I, 3, 3]."""
    fold = torch.tensor(_FOLD, dtype=weight.dtype, device=weight.device)
    kernel = torch.einsum('pk,oikl,ql->iopq', fold, weight, fold)
    return F.conv_transpose2d(x, kernel.to(x.dtype), None, stride=2, padding=1)


def _init_bn(bn):
    with torch.no_grad():
        bn.weight.normal_(1.0, 0.02)
        bn.bias.zero_()


def _bn(channels):
    bn = torch.nn.BatchNorm2d(channels)
    _init_bn(bn)
    return bn


@persistence.persistent_class
class CondBatchNorm(torch.nn.Module):
    """BatchNorm2d with affine weight and bias; with c_dim > 0 the affine
    weight and bias are per class: linear maps of the label (one-hot rows of
    `embed_weight` / `embed_bias`), initialised N(1, 0.02) and 0."""

    def __init__(self, channels, c_dim=0):
        super().__init__()
        self.channels = channels
        self.c_dim = c_dim
        if c_dim == 0:
            self.bn = _bn(channels)
        else:
            self.bn = torch.nn.BatchNorm2d(channels, affine=False)
            self.embed_weight = torch.nn.Parameter(torch.empty(c_dim, channels).normal_(1.0, 0.02))
            self.embed_bias = torch.nn.Parameter(torch.zeros(c_dim, channels))

    eval_batch_stats = False   # Set by the Generator from its eval_bn (instances record their own).

    def forward(self, x, c=None):
        if self.bn.training or not self.eval_batch_stats:   # (recompute_bn_stats trains the bn alone)
            x = self.bn(x)
        else:   # Batch statistics without touching the running buffers.
            x = F.batch_norm(x, None, None, self.bn.weight, self.bn.bias, True, 0.0, self.bn.eps)
        if self.c_dim == 0:
            return x
        gamma = (c.to(x.dtype) @ self.embed_weight.to(x.dtype))[:, :, None, None]
        beta = (c.to(x.dtype) @ self.embed_bias.to(x.dtype))[:, :, None, None]
        return x * gamma + beta


@persistence.persistent_class
class NoiseInjection(torch.nn.Module):
    """x + strength * noise, noise [N, 1, H, W]; strength is a learned scalar, initialised to 0."""

    def __init__(self, resolution):
        super().__init__()
        self.resolution = resolution
        self.weight = torch.nn.Parameter(torch.zeros(1))
        # [H, W] like StyleGAN2's buffer of the same name, which projector.py optimises and regularises.
        self.register_buffer('noise_const', torch.randn([resolution, resolution]))

    def make_noise(self, batch, noise_mode, device, dtype):
        if noise_mode == 'random':
            return torch.randn([batch, 1, self.resolution, self.resolution], device=device, dtype=dtype)
        if noise_mode == 'const':
            return self.noise_const.to(dtype)[None, None]
        if noise_mode == 'none':
            return None
        raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")

    def forward(self, x, noise):
        if noise is None:
            return x
        return x + self.weight.to(x.dtype) * noise


@persistence.persistent_class
class InitLayer(torch.nn.Module):
    """z [N, nz] -> 4x4 transposed conv nz -> 2C -> BN -> GLU -> [N, C, 4, 4]."""

    def __init__(self, nz, channels, c_dim=0):
        super().__init__()
        self.conv = SNConv2d(nz, channels * 2, 4, 1, 0, transposed=True)
        self.norm = CondBatchNorm(channels * 2, c_dim)

    def forward(self, z, c=None):
        x = self.conv(z.reshape(z.shape[0], -1, 1, 1))
        return F.glu(self.norm(x, c), dim=1)


@persistence.persistent_class
class UpBlock(torch.nn.Module):
    """Up(i -> o): nearest x2 -> 3x3 conv i -> 2o -> BN -> GLU.
    With comp=True, UpComp(i -> o): nearest x2 -> 3x3 conv i -> 2o -> noise -> BN -> GLU
    -> 3x3 conv o -> 2o -> noise -> BN -> GLU. `up_conv` picks how the first two steps are
    computed ('nearest' or 'folded', see UP_CONVS)."""

    def __init__(self, in_channels, out_channels, resolution, comp=False, c_dim=0, up_conv='nearest'):
        super().__init__()
        self.comp = comp
        self.resolution = resolution
        self.up_conv = _check_up_conv(up_conv)
        self.conv1 = SNConv2d(in_channels, out_channels * 2, 3, 1, 1)
        self.norm1 = CondBatchNorm(out_channels * 2, c_dim)
        if comp:
            self.noise1 = NoiseInjection(resolution)
            self.conv2 = SNConv2d(out_channels, out_channels * 2, 3, 1, 1)
            self.noise2 = NoiseInjection(resolution)
            self.norm2 = CondBatchNorm(out_channels * 2, c_dim)

    def make_noise(self, batch, noise_mode, device, dtype):
        if not self.comp:
            return None
        return (self.noise1.make_noise(batch, noise_mode, device, dtype),
                self.noise2.make_noise(batch, noise_mode, device, dtype))

    def forward(self, x, c=None, noise=None):
        if self.up_conv == 'folded':
            x = folded_up_conv(x, self.conv1.normalized_weight())
        else:
            x = self.conv1(F.interpolate(x, scale_factor=2, mode='nearest'))
        if self.comp:
            x = self.noise1(x, noise[0])
        x = F.glu(self.norm1(x, c), dim=1)
        if self.comp:
            x = self.conv2(x)
            x = self.noise2(x, noise[1])
            x = F.glu(self.norm2(x, c), dim=1)
        return x


@persistence.persistent_class
class SLEBlock(torch.nn.Module):
    """Skip-layer excitation: pool small map to 4x4 -> 4x4 valid conv -> Swish -> 1x1 conv
    -> sigmoid, multiplied channel-wise into the big map."""

    def __init__(self, small_channels, big_channels):
        super().__init__()
        self.conv1 = SNConv2d(small_channels, big_channels, 4, 1, 0)
        self.conv2 = SNConv2d(big_channels, big_channels, 1, 1, 0)

    def forward(self, small, big):
        s = F.adaptive_avg_pool2d(small, 4)
        s = torch.sigmoid(self.conv2(F.silu(self.conv1(s))))
        return big * s

# Generator.


@persistence.persistent_class
class FastGANMapping(torch.nn.Module):
    """No mapping network: w = z (with the label appended for a conditional G),
    broadcast to num_ws slots. `w_avg` is a zero buffer (the mean of z) kept
    for tools that truncate toward it; it is never updated."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, **unused):
        misc.assert_shape(z, [None, self.z_dim])
        w = z.to(torch.float32)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            avg = self.w_avg[:self.z_dim].to(ws.dtype)
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            head = avg.lerp(ws[:, :cutoff], truncation_psi)
            ws = torch.cat([head, ws[:, cutoff:]], dim=1)
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f'this generator is conditional (c_dim={self.c_dim}): pass labels c')
            misc.assert_shape(c, [z.shape[0], self.c_dim])
            labels = c.to(ws.dtype).unsqueeze(1).repeat(1, self.num_ws, 1)
            ws = torch.cat([ws, labels], dim=2)
        return ws


@persistence.persistent_class
class FastGANSynthesis(torch.nn.Module):
    """ws [N, 2, w_dim] -> image (and the auxiliary min(res, 128) image). See the module docstring."""

    def __init__(self, z_dim, c_dim, img_resolution, img_channels, ngf=64, lite=False, output_tanh=None,
                 up_conv='nearest'):
        super().__init__()
        _check_resolution(img_resolution)
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = z_dim + c_dim
        self.num_ws = 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.aux_resolution = min(img_resolution, 128)
        self.lite = lite
        self.output_tanh = (img_resolution >= 1024) if output_tanh is None else bool(output_tanh)
        ch = {s: int(m * ngf) for s, m in _G_MULT.items()}
        self.channels = ch

        self.init = InitLayer(z_dim, ch[4], c_dim)
        self.block_sizes = [s for s in (8, 16, 32, 64, 128, 256, 512, 1024) if s <= img_resolution]
        for s in self.block_sizes:
            comp = _G_COMP[s] and not lite
            setattr(self, f'feat_{s}', UpBlock(ch[s // 2], ch[s], s, comp=comp, c_dim=c_dim, up_conv=up_conv))
        self.sle_sizes = [s for s in sorted(_G_SLE) if s <= img_resolution]
        for s in self.sle_sizes:
            setattr(self, f'se_{s}', SLEBlock(ch[_G_SLE[s]], ch[s]))
        # Largest trunk size that feeds an SLE: a second low-res pass stops there (at 32 there is
        # no SLE, so style index 1 changes nothing).
        self.max_source = max([_G_SLE[s] for s in self.sle_sizes], default=4)
        self.to_big = SNConv2d(ch[img_resolution], img_channels, 3, 1, 1)
        self.to_128 = SNConv2d(ch[self.aux_resolution], img_channels, 1, 1, 0)

    def _draw_noise(self, batch, noise_mode, device, dtype):
        return {s: getattr(self, f'feat_{s}').make_noise(batch, noise_mode, device, dtype) for s in self.block_sizes}

    def _low_res(self, w, c, noise):
        """Trunk feature maps at 4 .. max_source for one latent (the SLE inputs)."""
        feats = {4: self.init(w, c)}
        s = 8
        while s <= self.max_source:
            feats[s] = getattr(self, f'feat_{s}')(feats[s // 2], c, noise[s])
            s *= 2
        return feats

    def forward(self, ws, noise_mode='random', return_aux=False, force_fp32=False, fused_modconv=None, **unused):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        if unused:
            raise TypeError(f'FastGANSynthesis.forward: unexpected arguments {sorted(unused)}')
        batch = ws.shape[0]
        w0 = ws[:, 0, :self.z_dim]
        w1 = ws[:, 1, :self.z_dim]
        c0 = ws[:, 0, self.z_dim:] if self.c_dim > 0 else None
        c1 = ws[:, 1, self.z_dim:] if self.c_dim > 0 else None
        same = ws.stride(1) == 0 or torch.equal(ws[:, 0], ws[:, 1])
        noise = self._draw_noise(batch, noise_mode, ws.device, ws.dtype)

        feats = self._low_res(w0, c0, noise)
        sources = feats if same else self._low_res(w1, c1, noise)
        x = feats[self.max_source]
        for s in self.block_sizes:
            if s <= self.max_source:
                continue
            x = getattr(self, f'feat_{s}')(x, c0, noise[s])
            if s in _G_SLE:
                x = getattr(self, f'se_{s}')(sources[_G_SLE[s]], x)
            feats[s] = x
        # SLE targets at or below max_source (only 64 at 64 px, where max_source = 4).
        img = self.to_big(feats[self.img_resolution])
        aux = self.to_128(feats[self.aux_resolution])
        if self.output_tanh:
            img = torch.tanh(img)
            aux = torch.tanh(aux)
        if return_aux:
            return img, aux
        return img


@persistence.persistent_class
class Generator(torch.nn.Module):
    """FastGAN generator with the harness interface; see the module docstring.

    Arguments: z_dim (nz, 256 in the official code), c_dim, w_dim (must be
    z_dim or z_dim + c_dim; None allowed: FastGAN's w is z, plus the label
    for a conditional G), img_resolution in 64..1024, img_channels,
    mapping_kwargs (empty: there is no mapping network), synthesis_kwargs
    (may hold ngf / lite / output_tanh / up_conv; StyleGAN2-only precision keys
    are ignored), ngf (64), lite (every up block plain: Up instead of UpComp),
    output_tanh (None: official, tanh only at 1024), up_conv ('nearest', the
    reference arithmetic and the default of networks that recorded none, or
    'folded', see UP_CONVS), eval_bn ('running', the default of networks that
    recorded none, or 'batch', see EVAL_BNS and `with_eval_bn`).
    """

    def __init__(self, z_dim=256, c_dim=0, w_dim=None, img_resolution=256, img_channels=3, mapping_kwargs={},
                 synthesis_kwargs={}, ngf=64, lite=False, output_tanh=None, up_conv='nearest', eval_bn='running'):
        super().__init__()
        _check_resolution(img_resolution)
        if eval_bn not in EVAL_BNS:
            raise ValueError(f"eval_bn must be one of {', '.join(EVAL_BNS)}, got {eval_bn!r}")
        if w_dim not in (None, z_dim, z_dim + c_dim):
            raise ValueError(f'FastGAN has no mapping network, so w is z: w_dim must be z_dim ({z_dim}) '
                             f'(or z_dim + c_dim), got {w_dim}')
        if mapping_kwargs:
            raise TypeError(f'FastGAN has no mapping network; unsupported mapping_kwargs {sorted(mapping_kwargs)}')
        arch = dict(ngf=ngf, lite=lite, output_tanh=output_tanh, up_conv=up_conv)
        rest = {}
        for key, value in synthesis_kwargs.items():
            if key in arch:
                arch[key] = value
            else:
                rest[key] = value
        _pop_ignored(rest, _IGNORED_G_KEYS, 'FastGAN synthesis_kwargs')
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = z_dim + c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = FastGANSynthesis(z_dim, c_dim, img_resolution, img_channels, **arch)
        self.num_ws = self.synthesis.num_ws
        self.aux_resolution = self.synthesis.aux_resolution
        self.mapping = FastGANMapping(z_dim, c_dim, self.w_dim, self.num_ws)
        self.eval_bn = eval_bn
        for module in self.modules():
            if isinstance(module, CondBatchNorm):
                module.eval_batch_stats = eval_bn == 'batch'

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        if truncation_cutoff is None:
            ws = ws[:, :1].expand(-1, self.num_ws, -1)   # Identical slots, known without a sync.
        return self.synthesis(ws, **synthesis_kwargs)

    def recompute_bn_stats(self, num_batches=32, batch_size=16, c=None, noise_mode='random', seed=0):
        """Re-estimate every BatchNorm's running statistics for this network's own weights.

        Runs `num_batches` batches of random z (and labels: rows drawn from `c`
        [M, c_dim] if given, else uniform one-hot classes) with BN in train mode
        and a cumulative average, everything else in eval mode; restores the
        modes and momenta and leaves torch's global random streams untouched.
        """
        bns = [m for m in self.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        modes = {m: m.training for m in self.modules()}
        momenta = [bn.momentum for bn in bns]
        device = next(self.parameters()).device
        devices = [device] if device.type == 'cuda' else []
        gen = torch.Generator(device=device).manual_seed(seed)
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(seed)
                self.eval()
                for bn in bns:
                    bn.reset_running_stats()
                    bn.momentum = None
                    bn.train()
                for _ in range(num_batches):
                    z = torch.randn([batch_size, self.z_dim], device=device, generator=gen)
                    labels = None
                    if self.c_dim > 0:
                        if c is None:
                            idx = torch.randint(self.c_dim, [batch_size], device=device, generator=gen)
                            labels = F.one_hot(idx, self.c_dim).to(torch.float32)
                        else:
                            rows = torch.randint(c.shape[0], [batch_size], device=device, generator=gen)
                            labels = c.to(device)[rows].to(torch.float32)
                    self(z, labels, noise_mode=noise_mode)
        finally:
            for bn, momentum in zip(bns, momenta):
                bn.momentum = momentum
            for m, mode in modes.items():
                m.training = mode
        return self

    def with_eval_bn(self, eval_bn):
        """This network with `eval_bn` (EVAL_BNS) among its recorded constructor arguments, so that
        its pickles, weights-only model files and rebuilds keep the setting: a new instance holding
        the same tensors, devices, modes and requires_grad flags (`self` when it already has it).
        Building it leaves torch's global random streams as they were."""
        if eval_bn == self.eval_bn:
            return self
        with torch.random.fork_rng(devices=[]):
            twin = type(self)(*self.init_args, **dict(self.init_kwargs, eval_bn=eval_bn))
        device = next(self.parameters()).device
        twin = twin.to(device)
        misc.copy_params_and_buffers(self, twin, require_all=True)
        for mine, theirs in zip(twin.modules(), self.modules()):
            mine.training = theirs.training
        for mine, theirs in zip(twin.parameters(), self.parameters()):
            mine.requires_grad_(theirs.requires_grad)
        return twin

# Discriminator.


@persistence.persistent_class
class DownBlock(torch.nn.Module):
    """Down(i -> o): 4x4 stride-2 conv -> BN -> LReLU(0.2)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = SNConv2d(in_channels, out_channels, 4, 2, 1)
        self.norm = _bn(out_channels)

    def forward(self, x):
        return F.leaky_relu(self.norm(self.conv(x)), 0.2)


@persistence.persistent_class
class DownCompBlock(torch.nn.Module):
    """DownComp(i -> o) = (main + direct) / 2; main: 4x4 s2 conv -> BN -> LReLU -> 3x3 conv
    -> BN -> LReLU; direct: 2x2 avg-pool -> 1x1 conv -> BN -> LReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = SNConv2d(in_channels, out_channels, 4, 2, 1)
        self.norm1 = _bn(out_channels)
        self.conv2 = SNConv2d(out_channels, out_channels, 3, 1, 1)
        self.norm2 = _bn(out_channels)
        self.conv_direct = SNConv2d(in_channels, out_channels, 1, 1, 0)
        self.norm_direct = _bn(out_channels)

    def forward(self, x):
        main = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        main = F.leaky_relu(self.norm2(self.conv2(main)), 0.2)
        direct = F.leaky_relu(self.norm_direct(self.conv_direct(F.avg_pool2d(x, 2))), 0.2)
        return (main + direct) / 2


@persistence.persistent_class
class SimpleDecoder(torch.nn.Module):
    """Adaptive avg-pool to 8x8 -> Up blocks (channels by size: `channels`, default the official
    16:128, 32:64, 64:64, 128:32) up to out_resolution -> 3x3 conv -> tanh."""

    def __init__(self, in_channels, img_channels, out_resolution=128, channels=None, up_conv='nearest'):
        super().__init__()
        self.out_resolution = out_resolution
        channels = dict(_DEC_CH if channels is None else channels)
        blocks = []
        prev, s = in_channels, 16
        while s <= out_resolution:
            blocks.append(UpBlock(prev, channels[s], s, up_conv=up_conv))
            prev, s = channels[s], s * 2
        self.blocks = torch.nn.ModuleList(blocks)
        self.to_img = SNConv2d(prev, img_channels, 3, 1, 1)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(x, 8)
        for block in self.blocks:
            x = block(x)
        return torch.tanh(self.to_img(x))


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """FastGAN discriminator with the harness interface; see the module docstring.

    Arguments: c_dim, img_resolution in 32..1024, img_channels, ndf (64),
    decoder_widths ('fixed': the official decoder widths whatever ndf is, the
    default of networks that recorded none; 'ndf': scaled with ndf, equal to
    the official ones at ndf = 64), up_conv (the decoders' Up blocks, see
    UP_CONVS). StyleGAN2-only keys the harness may add (num_fp16_res, conv_clamp,
    block_kwargs.fp16_channels_last, epilogue_kwargs.mbstd_*; FastGAN has no
    minibatch-stddev layer) are ignored; Freeze-D is not supported.
    """

    def __init__(self, c_dim=0, img_resolution=256, img_channels=3, ndf=64, block_kwargs={}, mapping_kwargs={},
                 epilogue_kwargs={}, decoder_widths='fixed', up_conv='nearest', **kwargs):
        super().__init__()
        _check_resolution(img_resolution)
        dec_ch = decoder_channels(ndf, decoder_widths)
        _check_up_conv(up_conv)
        _pop_ignored(kwargs, _IGNORED_D_KEYS, 'FastGAN Discriminator')
        if block_kwargs.get('freeze_layers'):
            raise ValueError('FastGAN Discriminator: Freeze-D (freeze_layers > 0) is not supported')
        _pop_ignored(block_kwargs, ('fp16_channels_last', 'freeze_layers'), 'FastGAN Discriminator block_kwargs')
        _pop_ignored(epilogue_kwargs, ('mbstd_group_size', 'mbstd_num_channels'), 'FastGAN Discriminator epilogue')
        if mapping_kwargs:
            raise TypeError('FastGAN Discriminator: mapping_kwargs are not supported (projection needs none)')
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.small_resolution = min(img_resolution, 128)
        self.recon_resolution = min(img_resolution, 128)
        self.num_logits = 50
        ch = {s: int(m * ndf) for s, m in _D_MULT.items()}
        self.feature_dim = ch[8]

        # Stem: image -> map at min(res, 256).
        trunk = min(img_resolution, 256)
        self.trunk_resolution = trunk
        if img_resolution == 1024:
            self.stem = torch.nn.ModuleList([SNConv2d(img_channels, ch[256] // 2, 4, 2, 1),
                                             SNConv2d(ch[256] // 2, ch[256], 4, 2, 1)])
            self.stem_norm = _bn(ch[256])
        elif img_resolution == 512:
            self.stem = torch.nn.ModuleList([SNConv2d(img_channels, ch[256], 4, 2, 1)])
        else:
            self.stem = torch.nn.ModuleList([SNConv2d(img_channels, ch[trunk], 3, 1, 1)])
        self.down_sizes = []
        s = trunk
        while s > 8:
            setattr(self, f'down_{s // 2}', DownCompBlock(ch[s], ch[s // 2]))
            self.down_sizes.append(s // 2)
            s //= 2
        self.sle_sources = [src for src in sorted(_D_SLE, reverse=True) if src <= trunk]
        for src in self.sle_sources:
            setattr(self, f'se_{src}_{_D_SLE[src]}', SLEBlock(ch[src], ch[_D_SLE[src]]))
        self.rf_big_conv1 = SNConv2d(ch[8], ch[8] * 2, 1, 1, 0)
        self.rf_big_norm = _bn(ch[8] * 2)
        self.rf_big_conv2 = SNConv2d(ch[8] * 2, 1, 4, 1, 0)

        # Small path: image at min(res, 128) -> 8x8.
        sch = {s: int(m * ndf) for s, m in _D_SMALL_MULT.items()}
        s = self.small_resolution // 2
        self.small_stem = SNConv2d(img_channels, sch[s], 4, 2, 1)
        small_blocks = []
        while s > 8:
            small_blocks.append(DownBlock(sch[s], sch[s // 2]))
            s //= 2
        self.small_blocks = torch.nn.ModuleList(small_blocks)
        self.rf_small = SNConv2d(sch[8], 1, 4, 1, 0)

        # Decoders (real images only).
        self.part_channels = ch[16]
        dec = dict(channels=dec_ch, up_conv=up_conv)
        self.decoder_big = SimpleDecoder(ch[8], img_channels, self.recon_resolution, **dec)
        self.decoder_small = SimpleDecoder(sch[8], img_channels, self.recon_resolution, **dec)
        self.decoder_part = SimpleDecoder(ch[16], img_channels, self.recon_resolution, **dec)

        if c_dim > 0:
            self.embed = SNLinear(c_dim, ch[8])

    def _resize(self, img, size):
        if img.shape[-1] == size and img.shape[-2] == size:
            return img
        return F.interpolate(img, size=(size, size), mode='nearest')

    def forward(self, img, c=None, img_small=None, features=False, recon=False, part=None):
        misc.assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        batch = img.shape[0]
        if img_small is None:
            img_small = self._resize(img, self.small_resolution)
        misc.assert_shape(img_small, [batch, self.img_channels, self.small_resolution, self.small_resolution])

        # Big path.
        x = img
        for i, conv in enumerate(self.stem):
            x = conv(x)
            if i == 1:
                x = self.stem_norm(x)
            x = F.leaky_relu(x, 0.2)
        feats = {self.trunk_resolution: x}
        for s in self.down_sizes:
            x = getattr(self, f'down_{s}')(x)
            for src in self.sle_sources:
                if _D_SLE[src] == s:
                    x = getattr(self, f'se_{src}_{s}')(feats[src], x)
            feats[s] = x
        feat_last = x
        big = self.rf_big_conv2(F.leaky_relu(self.rf_big_norm(self.rf_big_conv1(feat_last)), 0.2))

        # Small path.
        y = F.leaky_relu(self.small_stem(img_small), 0.2)
        for block in self.small_blocks:
            y = block(y)
        small = self.rf_small(y)

        logits = torch.cat([big.flatten(1), small.flatten(1)], dim=1)
        pooled = feat_last.mean(dim=[2, 3]) if (features or self.c_dim > 0) else None
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f'this discriminator is conditional (c_dim={self.c_dim}): pass labels c')
            misc.assert_shape(c, [batch, self.c_dim])
            proj = (self.embed(c.to(pooled.dtype)) * pooled).sum(dim=1, keepdim=True)
            logits = logits + proj

        out = [logits]
        if features:
            out.append(pooled)
        if recon:
            if part is None:
                part = int(torch.randint(4, []).item())
            part = int(part)
            if part not in (0, 1, 2, 3):
                raise ValueError(f'part must be a quadrant index 0..3, got {part}')
            fp = feats[16]
            h = fp.shape[-1] // 2
            rows = slice(0, h) if part < 2 else slice(h, 2 * h)
            cols = slice(0, h) if part % 2 == 0 else slice(h, 2 * h)
            H = img.shape[-1] // 2
            irows = slice(0, H) if part < 2 else slice(H, 2 * H)
            icols = slice(0, H) if part % 2 == 0 else slice(H, 2 * H)
            target = self._resize(img, self.recon_resolution)
            out.append(dict(
                big=self.decoder_big(feat_last),
                small=self.decoder_small(y),
                part=self.decoder_part(fp[:, :, rows, cols]),
                target_big=target,
                target_small=target,
                target_part=self._resize(img[:, :, irows, icols], self.recon_resolution),
                part_index=part,
            ))
        return out[0] if len(out) == 1 else tuple(out)
