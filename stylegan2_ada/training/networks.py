"""StyleGAN2's generator and discriminator, composed from a few equalised-lr layers.

Constraints that shape this file:

* Class names, constructor arguments, parameter and buffer names are fixed by
  the StyleGAN2-ADA interface (docs/CONTRACT.md): official pickles, legacy.py's
  TensorFlow conversion and `misc.copy_params_and_buffers` match tensors by name.
* Every module class is persistent: a pickle carries this file's source and runs
  it again when loaded, so the only imports allowed are numpy, torch and the
  torch_utils modules below.
* Two ideas carry the architecture and are written once each: weights stored at
  unit scale and multiplied by their He constant on use (equalised learning
  rate), and per-sample weight modulation with optional demodulation.
* Weights are drawn from the global RNG while the modules are built, so the
  order in which layers are created is what makes a seed reproduce a network.
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_resample
from torch_utils.ops import fma
from torch_utils.ops import upfirdn2d

_ARCHITECTURES = ('orig', 'skip', 'resnet')
_NOISE_MODES = ('random', 'const', 'none')
_RESIDUAL_GAIN = np.sqrt(0.5)  # Summing two unit-variance branches would double the variance.
_FILTER = [1, 3, 3, 1]


def _pick_dtype(use_fp16, device, force_fp32=False):
    """The single place that decides a layer's compute precision.

    Half precision is used only on CUDA: on CPU, fp16 convolutions are orders
    of magnitude slower than fp32 ones, so "fp16" layers quietly run in fp32
    there (their outputs then match the fp32 network up to conv_clamp).
    """
    if use_fp16 and not force_fp32 and torch.device(device).type == 'cuda':
        return torch.float16
    return torch.float32


def _block_precision(use_fp16, channels_last, device, force_fp32):
    """(dtype, memory format) of a block's activations; NHWC only pays off
    for the half-precision tensor-core kernels."""
    dtype = _pick_dtype(use_fp16, device, force_fp32)
    nhwc = channels_last and dtype == torch.float16
    return dtype, (torch.channels_last if nhwc else torch.contiguous_format)


def _expect_maps(t, channels, side):
    """Feature maps or images entering a block: [any batch, channels, side, side]."""
    misc.assert_shape(t, [None, channels, side, side])


def _check_resolution(resolution):
    ok = resolution >= 4 and resolution & (resolution - 1) == 0
    assert ok, f'img_resolution must be a power of two >= 4, got {resolution}'


def _channels(resolution, channel_base, channel_max):
    """Feature maps shrink as resolution grows, capped at channel_max."""
    return min(channel_base // resolution, channel_max)


def _uses_fp16(resolution, img_resolution, num_fp16_res):
    """Half precision for the `num_fp16_res` finest resolutions, never at 4x4,
    where the blocks are widest and the speed-up is smallest."""
    return resolution >= 8 and resolution * 2 ** num_fp16_res > img_resolution


def _he_gain(fan_in, lr_multiplier=1):
    """Run-time weight scale of an equalised layer. Storing unit-scale weights
    and scaling on use makes Adam's step size the same for every layer;
    lr_multiplier additionally slows a layer down (the mapping network)."""
    return lr_multiplier / np.sqrt(fan_in)


def _unit_normal(shape, lr_multiplier=1, channels_last=False):
    """Initial weight, divided by lr_multiplier so the scaled weight starts at N(0, 1/fan_in)."""
    w = torch.randn(shape) / lr_multiplier
    return w.to(memory_format=torch.channels_last) if channels_last else w


def _scaled(weight, gain, dtype):
    """Scale in the stored precision, then cast, so fp16 layers round once."""
    return (weight * gain).to(dtype)


def _keep_args(module, args, names):
    """Copy the named constructor arguments onto the module as plain
    attributes: the hyperparameters that extra_repr, tools and other modules
    read back."""
    for name in names.split():
        setattr(module, name, args[name])


def _attach(module, name, tensor, trainable):
    """Register `tensor` as a parameter, or as a buffer for Freeze-D's frozen
    layers: same name either way, so weights still copy across by name."""
    if tensor is None:
        setattr(module, name, None)
    elif trainable:
        setattr(module, name, torch.nn.Parameter(tensor))
    else:
        module.register_buffer(name, tensor)


def _finish(x, bias, activation, act_gain, clamp, gain=1):
    """Bias, activation, gain and clamp in one fused op. A residual branch
    passes its gain here, and the fp16 safety clamp scales along with it."""
    bias = None if bias is None else bias.to(x.dtype)
    clamp = None if clamp is None else clamp * gain
    return bias_act.bias_act(x, bias, act=activation, gain=act_gain * gain, clamp=clamp)


def _unit_rms(x, eps=1e-8):
    """Rescale each row to unit root-mean-square, so that z and the label
    embedding enter the mapping network on equal footing."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def _modulate(weight, styles, demodulate):
    """Per-sample kernels [N, O, I, kh, kw] = weight scaled by each sample's
    styles, and (when demodulating) the per-sample, per-output factors that
    bring every such kernel back to unit L2 norm: [N, O] or None."""
    kernels = weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)
    if not demodulate:
        return kernels, None
    return kernels, (kernels.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()


def _fp16_prescale(weight, styles):
    """Bring weight and styles to O(1) before the products of half-precision
    modulation can overflow; demodulation divides the scale out again."""
    peak_w = torch.linalg.vector_norm(weight, ord=float('inf'), dim=(1, 2, 3), keepdim=True)
    peak_s = torch.linalg.vector_norm(styles, ord=float('inf'), dim=1, keepdim=True)
    return weight * (_he_gain(weight[0].numel()) / peak_w), styles / peak_s


def _grouped_modconv(x, weight, styles, demodulate, noise, conv_args):
    """Fold the styles into the kernels and run the batch as the groups of
    one convolution: quickest for inference."""
    kernels, factors = _modulate(weight, styles, demodulate)
    if factors is not None:
        kernels = kernels * factors.reshape(*factors.shape, 1, 1, 1)
    with misc.suppress_tracer_warnings():
        batch = int(x.shape[0])
    y = conv2d_resample.conv2d_resample(x=x.reshape(1, -1, *x.shape[2:]), groups=batch,
                                        w=kernels.reshape(-1, *weight.shape[1:]).to(x.dtype), **conv_args)
    y = y.reshape(batch, -1, *y.shape[2:])
    return y if noise is None else y.add_(noise.to(y.dtype))


def _shared_modconv(x, weight, styles, demodulate, noise, conv_args):
    """Scale the activations instead of the kernels: one shared weight for the
    whole batch, which trains faster and needs far less memory."""
    # The factors are built before the conv: autograd sums a tensor's gradient
    # contributions in creation order, and this order is the one that
    # reproduces the reference gradients bit for bit.
    factors = _modulate(weight, styles, True)[1] if demodulate else None
    y = x * styles.to(x.dtype).reshape(*styles.shape, 1, 1)
    y = conv2d_resample.conv2d_resample(x=y, w=weight.to(x.dtype), **conv_args)
    if factors is not None:
        factors = factors.to(y.dtype).reshape(*factors.shape, 1, 1)
        return y * factors if noise is None else fma.fma(y, factors, noise.to(y.dtype))
    return y if noise is None else y.add_(noise.to(y.dtype))


def modulated_conv(x, weight, styles, *, demodulate=True, fused=True, noise=None, up=1, padding=0,
                   resample_filter=None, flip_weight=True):
    """StyleGAN2's style-modulated convolution of x [N, I, H, W] with a shared
    weight [O, I, kh, kw] and per-sample styles [N, I]; `noise` (broadcastable
    to the output) is added before the bias. Both ways of computing it
    (`fused` or not) give the same result up to rounding."""
    misc.assert_shape(x, [styles.shape[0], weight.shape[1], None, None])
    misc.assert_shape(styles, [x.shape[0], weight.shape[1]])
    if demodulate and x.dtype == torch.float16:
        weight, styles = _fp16_prescale(weight, styles)
    conv_args = dict(f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
    run = _grouped_modconv if fused else _shared_modconv
    return run(x, weight, styles, demodulate, noise, conv_args)


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Equalised-lr dense layer. Also the style affine of the synthesis layers,
    where bias_init=1 starts every style at identity modulation."""

    def __init__(self, in_features, out_features, bias=True, activation='linear', lr_multiplier=1, bias_init=0):
        super().__init__()
        _keep_args(self, locals(), 'in_features out_features activation')
        self.weight = torch.nn.Parameter(_unit_normal([out_features, in_features], lr_multiplier))
        initial_bias = torch.full([out_features], float(bias_init), dtype=torch.float32)
        self.bias = torch.nn.Parameter(initial_bias) if bias else None
        self.weight_gain = _he_gain(in_features, lr_multiplier)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        weight_t = _scaled(self.weight, self.weight_gain, x.dtype).t()
        if self.bias is None:
            return bias_act.bias_act(x.matmul(weight_t), None, act=self.activation)
        bias = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            bias = bias * self.bias_gain
        if self.activation == 'linear':
            return torch.addmm(bias.unsqueeze(0), x, weight_t)  # Bias folded into the GEMM.
        return bias_act.bias_act(x.matmul(weight_t), bias, act=self.activation)

    def extra_repr(self):
        return f'{self.in_features} -> {self.out_features}, activation={self.activation}'


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Equalised-lr convolution with optional FIR up/downsampling and a fused
    bias/activation/clamp. `trainable=False` holds the weights as buffers
    (Freeze-D)."""

    def __init__(self, in_channels, out_channels, kernel_size, *, activation='linear', bias=True,
                 up=1, down=1, conv_clamp=None, resample_filter=_FILTER, channels_last=False, trainable=True):
        super().__init__()
        _keep_args(self, locals(), 'in_channels out_channels activation up down conv_clamp')
        self.padding = kernel_size // 2
        self.weight_gain = _he_gain(in_channels * kernel_size ** 2)
        self.act_gain = bias_act.activation_funcs[activation].def_gain
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        shape = [out_channels, in_channels, kernel_size, kernel_size]
        _attach(self, 'weight', _unit_normal(shape, channels_last=channels_last), trainable)
        _attach(self, 'bias', torch.zeros([out_channels]) if bias else None, trainable)

    def forward(self, x, gain=1):
        kernel = _scaled(self.weight, self.weight_gain, x.dtype)
        # Upsampling runs as a transposed conv, which wants a true (flipped) convolution.
        x = conv2d_resample.conv2d_resample(x, kernel, self.resample_filter, self.up, self.down, self.padding,
                                            flip_weight=self.up == 1)
        return _finish(x, self.bias, self.activation, self.act_gain, self.conv_clamp, gain)

    def extra_repr(self):
        return (f'{self.in_channels} -> {self.out_channels}, activation={self.activation}, '
                f'up={self.up}, down={self.down}')


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z (and/or an embedded label c) -> w, optionally broadcast to num_ws copies.

    Keeps a running mean `w_avg` for the truncation trick. The discriminator
    reuses it with z_dim=0 to turn a label into its projection vector.
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation='lrelu', lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        _keep_args(self, locals(), 'z_dim c_dim w_dim num_ws num_layers w_avg_beta')
        embed_width = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        hidden_width = w_dim if layer_features is None else layer_features
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_width)
        widths = [z_dim + embed_width] + [hidden_width] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            setattr(self, f'fc{idx}', FullyConnectedLayer(widths[idx], widths[idx + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier))
        tracks_mean = w_avg_beta is not None and num_ws is not None
        if tracks_mean:
            self.register_buffer('w_avg', torch.zeros(w_dim))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        w = self._inputs(z, c)
        for idx in range(self.num_layers):
            w = getattr(self, f'fc{idx}')(w)
        if self.training and self.w_avg_beta is not None and not skip_w_avg_update:
            batch_mean = w.detach().mean(dim=0)
            self.w_avg.copy_(torch.lerp(batch_mean, self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            w = w.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            w = self._truncate(w, truncation_psi, truncation_cutoff)
        return w

    def _inputs(self, z, c):
        """Both inputs are normalised, so neither dominates by its scale."""
        parts = []
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            parts.append(_unit_rms(z.to(torch.float32)))
        if self.c_dim > 0:
            assert c is not None, f'this network is conditional: pass c of shape [N, {self.c_dim}]'
            misc.assert_shape(c, [None, self.c_dim])
            parts.append(_unit_rms(self.embed(c.to(torch.float32))))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _truncate(self, w, psi, cutoff):
        """Pull w towards w_avg; with a cutoff only the first `cutoff` ws (the
        coarse resolutions) are pulled."""
        assert self.w_avg_beta is not None, 'truncation needs w_avg tracking (w_avg_beta)'
        if cutoff is None or self.num_ws is None:
            return self.w_avg.lerp(w, psi)
        return torch.cat([self.w_avg.lerp(w[:, :cutoff], psi), w[:, cutoff:]], dim=1)

    def extra_repr(self):
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'


def _style_parts(in_channels, out_channels, w_dim, kernel_size, channels_last):
    """What both modulated layers own: a style affine (drawn first) and a kernel."""
    affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
    shape = [out_channels, in_channels, kernel_size, kernel_size]
    return affine, torch.nn.Parameter(_unit_normal(shape, channels_last=channels_last))


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated, demodulated conv (2x upsampling when up=2) + per-pixel noise
    scaled by a learned strength + bias/activation/clamp."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, *, up=1, kernel_size=3, activation='lrelu',
                 use_noise=True, conv_clamp=None, resample_filter=_FILTER, channels_last=False):
        super().__init__()
        _keep_args(self, locals(), 'in_channels out_channels w_dim resolution up use_noise activation conv_clamp')
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.affine, self.weight = _style_parts(in_channels, out_channels, w_dim, kernel_size, channels_last)
        if use_noise:
            # One fixed noise image (for noise_mode='const'); its strength starts at zero.
            self.register_buffer('noise_const', torch.randn(resolution, resolution))
            self.noise_strength = torch.nn.Parameter(torch.tensor(0.0))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        side = self.resolution // self.up
        _expect_maps(x, self.in_channels, side)
        styles = self.affine(w)
        x = modulated_conv(x, self.weight, styles, fused=fused_modconv, noise=self._noise(x, noise_mode),
                           up=self.up, padding=self.padding, resample_filter=self.resample_filter,
                           flip_weight=(self.up == 1))
        return _finish(x, self.bias, self.activation, self.act_gain, self.conv_clamp, gain)

    def _noise(self, x, mode):
        """'const' reuses the stored noise image (reproducible renders);
        'random' draws a fresh one per sample from the global RNG."""
        assert mode in _NOISE_MODES, f'unknown noise_mode {mode!r}'
        if mode == 'none' or not self.use_noise:
            return None
        if mode == 'const':
            return self.noise_const * self.noise_strength
        fresh = torch.randn(x.shape[0], 1, *self.noise_const.shape, device=x.device)
        return fresh * self.noise_strength

    def extra_repr(self):
        return (f'{self.in_channels} -> {self.out_channels}, w_dim={self.w_dim}, resolution={self.resolution}, '
                f'up={self.up}, activation={self.activation}')


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv to image channels. Without demodulation nothing
    normalises the kernel, so the He constant is applied to the styles."""

    def __init__(self, in_channels, out_channels, w_dim, *, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        _keep_args(self, locals(), 'in_channels out_channels w_dim conv_clamp')
        self.affine, self.weight = _style_parts(in_channels, out_channels, w_dim, kernel_size, channels_last)
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = _he_gain(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        return _finish(x, self.bias, 'linear', 1, self.conv_clamp)

    def extra_repr(self):
        return f'{self.in_channels} -> {self.out_channels}, w_dim={self.w_dim}'


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One generator resolution: the learned constant (first block) or an
    upsampling conv0, then conv1; a ToRGB whose output is added to the
    upsampled image of the coarser blocks ('skip', and always the last block);
    an upsampling 1x1 shortcut around the convs for 'resnet'."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, *, img_channels, is_last, architecture='skip',
                 conv_clamp=None, use_fp16=False, fp16_channels_last=False, resample_filter=_FILTER,
                 **layer_kwargs):
        assert architecture in _ARCHITECTURES, f'unknown architecture {architecture!r}'
        super().__init__()
        _keep_args(self, locals(), 'in_channels w_dim resolution img_channels is_last architecture use_fp16')
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        shared = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter,
                                        **shared, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **shared, **layer_kwargs)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1 if (is_last or architecture == 'skip') else 0
        if self.num_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, 1, up=2, channels_last=self.channels_last,
                                    resample_filter=resample_filter, bias=False)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, None, self.w_dim])
        assert ws.shape[1] == self.num_conv + self.num_torgb, 'one w per conv and ToRGB of this block'
        dtype, memory_format = _block_precision(self.use_fp16, self.channels_last, ws.device, force_fp32)
        if fused_modconv is None:
            fused_modconv = self._prefer_fused(dtype, ws.shape[0])
        per_layer = ws.unbind(dim=1)
        x = self._enter(x, ws.shape[0], dtype, memory_format)
        x = self._convolve(x, per_layer[:self.num_conv], dict(fused_modconv=fused_modconv, **layer_kwargs))
        img = self._paint(x, img, per_layer[self.num_conv:], fused_modconv)
        assert x.dtype == dtype and (img is None or img.dtype == torch.float32)
        return x, img

    def _prefer_fused(self, dtype, batch):
        """Grouped convs are fastest for inference; in training the per-sample
        kernels cost memory, and half-precision grouped convs are slow."""
        with misc.suppress_tracer_warnings():
            return not self.training and (dtype == torch.float32 or int(batch) == 1)

    def _enter(self, x, batch, dtype, memory_format):
        if self.in_channels == 0:
            return self.const.to(dtype=dtype, memory_format=memory_format).unsqueeze(0).repeat([batch, 1, 1, 1])
        _expect_maps(x, self.in_channels, self.resolution // 2)
        return x.to(dtype=dtype, memory_format=memory_format)

    def _convolve(self, x, ws, conv_kwargs):
        if self.in_channels == 0:
            return self.conv1(x, ws[0], **conv_kwargs)
        if self.architecture != 'resnet':
            return self.conv1(self.conv0(x, ws[0], **conv_kwargs), ws[1], **conv_kwargs)
        shortcut = self.skip(x, gain=_RESIDUAL_GAIN)
        main = self.conv1(self.conv0(x, ws[0], **conv_kwargs), ws[1], gain=_RESIDUAL_GAIN, **conv_kwargs)
        return shortcut.add_(main)

    def _paint(self, x, img, ws, fused_modconv):
        """Upsample the running image and add this block's RGB contribution (in fp32)."""
        if img is not None:
            _expect_maps(img, self.img_channels, self.resolution // 2)
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if not self.num_torgb:
            return img
        rgb = self.torgb(x, ws[0], fused_modconv=fused_modconv)
        rgb = rgb.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        return rgb if img is None else img.add_(rgb)

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, res, res], one block per
    resolution from 4x4 up. A block's ToRGB and the next block's first conv
    read the same w, so num_ws = all convs + the last block's ToRGB."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        _check_resolution(img_resolution)
        super().__init__()
        _keep_args(self, locals(), 'w_dim img_resolution img_channels')
        self.block_resolutions = [4 << i for i in range(int(np.log2(img_resolution)) - 1)]
        for res in self.block_resolutions:
            block = SynthesisBlock(_channels(res // 2, channel_base, channel_max) if res > 4 else 0,
                                   _channels(res, channel_base, channel_max), w_dim, res,
                                   img_channels=img_channels, is_last=(res == img_resolution),
                                   use_fp16=_uses_fp16(res, img_resolution, num_fp16_res), **block_kwargs)
            setattr(self, f'b{res}', block)
        blocks = self._blocks()
        self.num_ws = sum(block.num_conv for block in blocks) + blocks[-1].num_torgb

    def _blocks(self):
        return [getattr(self, f'b{res}') for res in self.block_resolutions]

    def forward(self, ws, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = img = None
        first = 0
        for block in self._blocks():
            x, img = block(x, img, ws.narrow(1, first, block.num_conv + block.num_torgb), **block_kwargs)
            first += block.num_conv
        return img

    def extra_repr(self):
        return f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}'


@persistence.persistent_class
class Generator(torch.nn.Module):
    """(z, c) -> image: the mapping network feeding the synthesis network."""

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={}):
        super().__init__()
        _keep_args(self, locals(), 'z_dim c_dim w_dim img_resolution img_channels')
        # Synthesis is built (and drawn from the RNG) first: it decides num_ws.
        self.synthesis = SynthesisNetwork(img_resolution=img_resolution, img_channels=img_channels, w_dim=w_dim,
                                          **synthesis_kwargs)
        ws_needed = self.synthesis.num_ws
        self.num_ws = ws_needed
        self.mapping = MappingNetwork(num_ws=ws_needed, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), **synthesis_kwargs)


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One discriminator resolution: [fromrgb] + conv0 + downsampling conv1,
    plus a downsampling 1x1 shortcut for 'resnet'.

    Freeze-D counts conv layers across the whole discriminator from the input
    side; this block's come after `first_layer_idx` earlier ones, and those
    with a global index below `freeze_layers` are built frozen.
    """

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, *, img_channels, first_layer_idx,
                 architecture='resnet', activation='lrelu', conv_clamp=None, use_fp16=False,
                 fp16_channels_last=False, freeze_layers=0, resample_filter=_FILTER):
        assert in_channels in (0, tmp_channels)
        assert architecture in _ARCHITECTURES, f'unknown architecture {architecture!r}'
        super().__init__()
        _keep_args(self, locals(), 'in_channels resolution img_channels first_layer_idx architecture use_fp16')
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        wanted = [('fromrgb', in_channels == 0 or architecture == 'skip'), ('conv0', True), ('conv1', True),
                  ('skip', architecture == 'resnet')]
        names = [name for name, keep in wanted if keep]
        self.num_layers = len(names)
        live = {name: first_layer_idx + i >= freeze_layers for i, name in enumerate(names)}
        conv = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        down = dict(down=2, resample_filter=resample_filter)
        if 'fromrgb' in live:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, trainable=live['fromrgb'], **conv)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, trainable=live['conv0'], **conv)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, trainable=live['conv1'], **conv, **down)
        if 'skip' in live:
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, trainable=live['skip'],
                                    channels_last=self.channels_last, **down)

    def forward(self, x, img, force_fp32=False):
        device = img.device if x is None else x.device
        dtype, memory_format = _block_precision(self.use_fp16, self.channels_last, device, force_fp32)
        cast = dict(dtype=dtype, memory_format=memory_format)
        if x is not None:
            _expect_maps(x, self.in_channels, self.resolution)
            x = x.to(**cast)
        if hasattr(self, 'fromrgb'):
            x, img = self._read_image(x, img, cast)
        if self.architecture == 'resnet':
            x = self.skip(x, gain=_RESIDUAL_GAIN).add_(self.conv1(self.conv0(x), gain=_RESIDUAL_GAIN))
        else:
            x = self.conv1(self.conv0(x))
        assert x.dtype == dtype
        return x, img

    def _read_image(self, x, img, cast):
        """Add the image's fromrgb features; only 'skip' passes the
        (downsampled) image on to the next block."""
        _expect_maps(img, self.img_channels, self.resolution)
        img = img.to(**cast)
        features = self.fromrgb(img)
        x = features if x is None else x + features
        return x, (upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None)

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends the per-group standard deviation of features as extra channels,
    so D can see a lack of variety within a batch.

    Groups are strided (sample i joins group i mod N/G). The group size is
    min(group_size, N); when that does not divide N it falls back to the
    largest divisor of N below it instead of failing.
    """

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        _keep_args(self, locals(), 'group_size num_channels')

    def _group(self, batch):
        size = batch if self.group_size is None else min(int(self.group_size), batch)
        while batch % size:
            size -= 1
        return size

    def forward(self, x):
        batch, channels, height, width = x.shape
        with misc.suppress_tracer_warnings():
            group = self._group(int(batch))
        # [group, batch/group, stat channels, channels per stat, H, W]
        members = x.reshape(group, -1, self.num_channels, channels // self.num_channels, height, width)
        spread = members - members.mean(dim=0)
        stddev = (spread.square().mean(dim=0) + 1e-8).sqrt()
        stats = stddev.mean(dim=[2, 3, 4]).reshape(-1, self.num_channels, 1, 1)
        return torch.cat([x, stats.repeat(group, 1, height, width)], dim=1)

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels}'


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 head, always in fp32: minibatch stddev, conv, fc, and the output
    layer (a logit, or a cmap_dim vector projected onto the label embedding)."""

    def __init__(self, in_channels, *, cmap_dim, resolution, img_channels, architecture='resnet',
                 mbstd_group_size=4, mbstd_num_channels=1, activation='lrelu', conv_clamp=None):
        assert architecture in _ARCHITECTURES, f'unknown architecture {architecture!r}'
        super().__init__()
        _keep_args(self, locals(), 'in_channels cmap_dim resolution img_channels architecture')
        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x, img, cmap, force_fp32=False):
        side = self.resolution
        _expect_maps(x, self.in_channels, side)
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            _expect_maps(img, self.img_channels, side)
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim == 0:
            return x
        # Projection discriminator: the score is <features, label embedding>, He-scaled.
        misc.assert_shape(cmap, [None, self.cmap_dim])
        return (x * cmap).sum(dim=1, keepdim=True) * _he_gain(self.cmap_dim)

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}'


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """image (+ label) -> logits [N, 1]: blocks from img_resolution down to 8x8,
    then the 4x4 epilogue `b4`. A label is used by projection onto an
    embedding that a MappingNetwork (`mapping`) computes from it."""

    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768,
                 channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, block_kwargs={},
                 mapping_kwargs={}, epilogue_kwargs={}):
        _check_resolution(img_resolution)
        super().__init__()
        _keep_args(self, locals(), 'c_dim img_resolution img_channels')
        self.block_resolutions = [img_resolution >> i for i in range(int(np.log2(img_resolution)) - 2)]

        def width(res):
            return _channels(res, channel_base, channel_max)

        if c_dim == 0:
            cmap_dim = 0
        elif cmap_dim is None:
            cmap_dim = width(4)
        shared = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layers_so_far = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(0 if res == img_resolution else width(res), width(res), width(res // 2), res,
                                       first_layer_idx=layers_so_far,
                                       use_fp16=_uses_fp16(res, img_resolution, num_fp16_res),
                                       **block_kwargs, **shared)
            setattr(self, f'b{res}', block)
            layers_so_far += block.num_layers
        if c_dim > 0:
            # Labels only: no z, one output vector, no running mean.
            self.mapping = MappingNetwork(c_dim=c_dim, w_dim=cmap_dim, z_dim=0, w_avg_beta=None, num_ws=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(width(4), resolution=4, cmap_dim=cmap_dim, **shared, **epilogue_kwargs)

    def forward(self, img, c, **block_kwargs):
        _expect_maps(img, self.img_channels, self.img_resolution)
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)

    def extra_repr(self):
        return f'c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}'
