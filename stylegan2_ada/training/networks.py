"""StyleGAN2 generator and discriminator, compatible with StyleGAN2-ADA pickles.

Class names, constructor signatures and parameter/buffer names follow the
public StyleGAN2-ADA interface (docs/CONTRACT.md), because official pickles and
`misc.copy_params_and_buffers` match tensors by name. Every class is a
persistent class: a pickle embeds this file's source and re-executes it when
loaded, so this module may import only numpy, torch and the torch_utils names
below.
"""

import numpy as np
import torch
from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import conv2d_resample
from torch_utils.ops import upfirdn2d
from torch_utils.ops import bias_act
from torch_utils.ops import fma

# Helpers.

def _pick_dtype(use_fp16, device, force_fp32=False):
    """The single place that decides a layer's compute precision.

    Half precision is used only on CUDA: on CPU, fp16 convolutions are orders
    of magnitude slower than fp32 ones, so "fp16" layers quietly run in fp32
    there (their outputs then match the fp32 network up to conv_clamp).
    """
    if use_fp16 and not force_fp32 and torch.device(device).type == 'cuda':
        return torch.float16
    return torch.float32


def _pick_memory_format(channels_last, dtype):
    """NHWC only helps the fp16 tensor-core kernels; everything else stays NCHW."""
    if channels_last and dtype == torch.float16:
        return torch.channels_last
    return torch.contiguous_format


@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale each vector to unit root-mean-square (pixel norm on latents)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


@misc.profiled_function
def modulated_conv2d(
    x,                      # Input activations, [N, in_channels, H, W].
    weight,                 # Shared weights, [out_channels, in_channels, kh, kw].
    styles,                 # Per-sample input-channel scales, [N, in_channels].
    noise=None,             # Optional noise added after the conv, broadcastable to the output.
    up=1,                   # Integer upsampling factor.
    down=1,                 # Integer downsampling factor.
    padding=0,              # Padding with respect to the upsampled image.
    resample_filter=None,   # FIR filter from upfirdn2d.setup_filter().
    demodulate=True,        # Normalise each output channel's effective weights to unit norm?
    flip_weight=True,       # False = true convolution (needed by the transposed-conv path).
    fused_modconv=True,     # One grouped conv for the whole batch instead of scaling activations?
):
    """StyleGAN2's weight modulation/demodulation.

    The fused path folds the styles into per-sample weights and runs one
    grouped convolution (fast for inference); the unfused path scales the
    activations instead, which trains faster and keeps one shared weight.
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    misc.assert_shape(weight, [out_channels, in_channels, kh, kw])
    misc.assert_shape(x, [batch_size, in_channels, None, None])
    misc.assert_shape(styles, [batch_size, in_channels])

    # In fp16 the products below can overflow; rescaling first is harmless
    # because demodulation divides the scale out again.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)

    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter,
                                            up=up, down=down, padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1), noise.to(x.dtype))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        elif noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x

    # Fused: treat the batch as groups of one grouped convolution.
    with misc.suppress_tracer_warnings():
        batch_size = int(batch_size)
    misc.assert_shape(x, [batch_size, in_channels, None, None])
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down,
                                        padding=padding, groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise.to(x.dtype))
    return x

# Basic layers with equalised learning rate.

@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer; weights are stored at unit scale and multiplied by
    lr_multiplier/sqrt(fan_in) at run time (equalised learning rate)."""

    def __init__(self,
        in_features,            # Number of input features.
        out_features,           # Number of output features.
        bias=True,              # Learn a bias?
        activation='linear',    # Activation name from bias_act.activation_funcs.
        lr_multiplier=1,        # Learning-rate multiplier.
        bias_init=0,            # Initial value of the bias.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act.bias_act(x, b, act=self.activation)

    def extra_repr(self):
        return f'in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation:s}'


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling,
    fused bias + activation + clamp. `trainable=False` stores weights as
    buffers, which is how Freeze-D freezes the first discriminator layers."""

    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        kernel_size,                    # Width and height of the kernel.
        bias=True,                      # Learn a bias?
        activation='linear',            # Activation name from bias_act.activation_funcs.
        up=1,                           # Integer upsampling factor.
        down=1,                         # Integer downsampling factor.
        resample_filter=[1, 3, 3, 1],   # Low-pass filter used when resampling.
        conv_clamp=None,                # Clamp the output to +-X (None = off).
        channels_last=False,            # Store the weight in NHWC order?
        trainable=True,                 # Parameters (True) or frozen buffers (False)?
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            if bias is not None:
                self.register_buffer('bias', bias)
            else:
                self.bias = None

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        # The transposed-conv path of conv2d_resample needs a true convolution.
        flip_weight = (self.up == 1)
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up,
                                            down=self.down, padding=self.padding, flip_weight=flip_weight)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, '
                f'activation={self.activation:s}, up={self.up}, down={self.down}')

# Mapping network.

@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z (and optionally an embedded class label c) -> w, broadcast to num_ws.

    Keeps a running average `w_avg` for the truncation trick. The discriminator
    reuses this class with z_dim=0 to turn c into its projection vector cmap.
    """

    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality, 0 = no latent.
        c_dim,                      # Conditioning label (C) dimensionality, 0 = no label.
        w_dim,                      # Intermediate latent (W) dimensionality.
        num_ws,                     # Number of ws to output, None = do not broadcast.
        num_layers=8,               # Number of mapping layers.
        embed_features=None,        # Label embedding width, None = w_dim.
        layer_features=None,        # Hidden layer width, None = w_dim.
        activation='lrelu',         # Activation of the hidden layers.
        lr_multiplier=0.01,         # Learning-rate multiplier of the mapping layers.
        w_avg_beta=0.995,           # Decay of the running w average, None = do not track.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)

        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        # Normalise the inputs so neither z nor c dominates by scale.
        x = None
        with torch.autograd.profiler.record_function('input'):
            if self.z_dim > 0:
                misc.assert_shape(z, [None, self.z_dim])
                x = normalize_2nd_moment(z.to(torch.float32))
            if self.c_dim > 0:
                assert c is not None, f'this network is conditional: pass c of shape [N, {self.c_dim}]'
                misc.assert_shape(c, [None, self.c_dim])
                y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
                x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        # Track the mean w while training; truncation pulls towards it.
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            with torch.autograd.profiler.record_function('update_w_avg'):
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            with torch.autograd.profiler.record_function('broadcast'):
                x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            with torch.autograd.profiler.record_function('truncate'):
                assert self.w_avg_beta is not None, 'truncation needs w_avg tracking (w_avg_beta)'
                if self.num_ws is None or truncation_cutoff is None:
                    x = self.w_avg.lerp(x, truncation_psi)
                else:
                    x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self):
        return f'z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, num_ws={self.num_ws}'

# Synthesis network.

@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling) + per-pixel noise + bias/act."""

    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        w_dim,                          # Intermediate latent (W) dimensionality.
        resolution,                     # Output resolution of this layer.
        kernel_size=3,                  # Convolution kernel size.
        up=1,                           # Integer upsampling factor.
        use_noise=True,                 # Add per-pixel noise?
        activation='lrelu',             # Activation name.
        resample_filter=[1, 3, 3, 1],   # Low-pass filter used when upsampling.
        conv_clamp=None,                # Clamp the output to +-X (None = off).
        channels_last=False,            # Store the weight in NHWC order?
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        # Styles start at 1 (bias_init=1) so the initial modulation is identity.
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        assert noise_mode in ['random', 'const', 'none'], f'unknown noise_mode {noise_mode!r}'
        in_resolution = self.resolution // self.up
        misc.assert_shape(x, [None, self.weight.shape[1], in_resolution, in_resolution])
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        if self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        flip_weight = (self.up == 1)
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=flip_weight, fused_modconv=fused_modconv)

        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}, '
                f'resolution={self.resolution:d}, up={self.up}, activation={self.activation:s}')


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        # Without demodulation the equalised-lr gain has to go into the styles.
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}'


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One resolution of the generator: (const | upsampling conv0) + conv1,
    and a ToRGB whose output is added to the upsampled running image."""

    def __init__(self,
        in_channels,                    # Input channels, 0 = first block (learned constant input).
        out_channels,                   # Output channels.
        w_dim,                          # Intermediate latent (W) dimensionality.
        resolution,                     # Resolution of this block.
        img_channels,                   # Number of output colour channels.
        is_last,                        # Is this the last block?
        architecture='skip',            # 'orig', 'skip' or 'resnet'.
        resample_filter=[1, 3, 3, 1],   # Low-pass filter used when upsampling.
        conv_clamp=None,                # Clamp conv outputs to +-X (None = off).
        use_fp16=False,                 # Compute in fp16 (on CUDA) in this block?
        fp16_channels_last=False,       # Use NHWC for the fp16 computation?
        **layer_kwargs,                 # Passed on to SynthesisLayer.
    ):
        assert architecture in ['orig', 'skip', 'resnet'], f'unknown architecture {architecture!r}'
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1

        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last)
            self.num_torgb += 1

        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype = _pick_dtype(self.use_fp16, ws.device, force_fp32)
        memory_format = _pick_memory_format(self.channels_last, dtype)
        if fused_modconv is None:
            # Grouped convs are fastest for inference; per-sample weights cost
            # memory in training, and fp16 grouped convs are slow for N > 1.
            with misc.suppress_tracer_warnings():
                fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y

        assert x.dtype == dtype
        assert img is None or img.dtype == torch.float32
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}, use_fp16={self.use_fp16}'


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, res, res].

    Blocks run from 4x4 up to img_resolution; the highest `num_fp16_res`
    resolutions (never below 8x8) are marked fp16. Consecutive blocks share
    one w between a block's ToRGB and the next block's first conv, so
    num_ws = sum of num_conv + the last block's num_torgb.
    """

    def __init__(self,
        w_dim,                  # Intermediate latent (W) dimensionality.
        img_resolution,         # Output resolution (power of two >= 4).
        img_channels,           # Number of colour channels.
        channel_base=32768,     # Channels at resolution r = min(channel_base // r, channel_max).
        channel_max=512,        # Maximum number of channels in any layer.
        num_fp16_res=0,         # Use fp16 for this many of the highest resolutions.
        **block_kwargs,         # Passed on to SynthesisBlock.
    ):
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0, \
            f'img_resolution must be a power of two >= 4, got {img_resolution}'
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res // 2] if res > 4 else 0
            is_last = (res == self.img_resolution)
            block = SynthesisBlock(in_channels, channels_dict[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last,
                                   use_fp16=(res >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f'b{res}', block)

    def forward(self, ws, **block_kwargs):
        block_ws = []
        with torch.autograd.profiler.record_function('split_ws'):
            misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
            ws = ws.to(torch.float32)
            w_idx = 0
            for res in self.block_resolutions:
                block = getattr(self, f'b{res}')
                block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
                w_idx += block.num_conv

        x = img = None
        for res, cur_ws in zip(self.block_resolutions, block_ws):
            x, img = getattr(self, f'b{res}')(x, img, cur_ws, **block_kwargs)
        return img

    def extra_repr(self):
        return f'w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}'


@persistence.persistent_class
class Generator(torch.nn.Module):
    """Mapping + synthesis: (z, c) -> image."""

    def __init__(self,
        z_dim,                  # Input latent (Z) dimensionality.
        c_dim,                  # Conditioning label (C) dimensionality.
        w_dim,                  # Intermediate latent (W) dimensionality.
        img_resolution,         # Output resolution.
        img_channels,           # Number of output colour channels.
        mapping_kwargs={},      # Arguments for MappingNetwork.
        synthesis_kwargs={},    # Arguments for SynthesisNetwork.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

# Discriminator.

@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: [fromrgb] + conv0 + downsampling
    conv1 (+ a downsampling 1x1 skip for 'resnet').

    Layers are numbered across the whole discriminator from the input side;
    those with index < freeze_layers are built frozen (Freeze-D).
    """

    def __init__(self,
        in_channels,                    # Input channels, 0 = first block.
        tmp_channels,                   # Channels of the intermediate layers.
        out_channels,                   # Output channels.
        resolution,                     # Resolution of this block.
        img_channels,                   # Number of input colour channels.
        first_layer_idx,                # Global index of this block's first layer.
        architecture='resnet',          # 'orig', 'skip' or 'resnet'.
        activation='lrelu',             # Activation name.
        resample_filter=[1, 3, 3, 1],   # Low-pass filter used when downsampling.
        conv_clamp=None,                # Clamp conv outputs to +-X (None = off).
        use_fp16=False,                 # Compute in fp16 (on CUDA) in this block?
        fp16_channels_last=False,       # Use NHWC for the fp16 computation?
        freeze_layers=0,                # Freeze-D: number of leading layers to freeze.
    ):
        assert in_channels in [0, tmp_channels]
        assert architecture in ['orig', 'skip', 'resnet'], f'unknown architecture {architecture!r}'
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))

        self.num_layers = 0
        def next_trainable():
            idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=next_trainable(), conv_clamp=conv_clamp,
                                       channels_last=self.channels_last)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=next_trainable(), conv_clamp=conv_clamp,
                                 channels_last=self.channels_last)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=next_trainable(), resample_filter=resample_filter,
                                 conv_clamp=conv_clamp, channels_last=self.channels_last)
        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=next_trainable(), resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(self, x, img, force_fp32=False):
        device = x.device if x is not None else img.device
        dtype = _pick_dtype(self.use_fp16, device, force_fp32)
        memory_format = _pick_memory_format(self.channels_last, dtype)

        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)

        assert x.dtype == dtype
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}, use_fp16={self.use_fp16}'


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
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        with misc.suppress_tracer_warnings():
            N = int(N)
            G = min(int(self.group_size), N) if self.group_size is not None else N
            while N % G != 0:
                G -= 1
        F = self.num_channels
        c = C // F
        y = x.reshape(G, -1, F, c, H, W)         # [G, n, F, c, H, W]: split into groups and channel groups.
        y = y - y.mean(dim=0)                    # Deviation from the group mean.
        y = y.square().mean(dim=0)               # Variance over the group.
        y = (y + 1e-8).sqrt()                    # Standard deviation.
        y = y.mean(dim=[2, 3, 4])                # Average over channels and pixels: [n, F].
        y = y.reshape(-1, F, 1, 1)
        y = y.repeat(G, 1, H, W)                 # Back to [N, F, H, W].
        return torch.cat([x, y], dim=1)

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels:d}'


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head: minibatch stddev, conv, fc, and the output layer (a logit, or
    a cmap_dim vector projected onto the label embedding)."""

    def __init__(self,
        in_channels,            # Number of input channels.
        cmap_dim,               # Projection dimensionality, 0 = unconditional.
        resolution,             # Resolution of this block (4).
        img_channels,           # Number of input colour channels.
        architecture='resnet',  # 'orig', 'skip' or 'resnet'.
        mbstd_group_size=4,     # Minibatch-stddev group size, None = whole batch.
        mbstd_num_channels=1,   # Minibatch-stddev features, 0 = off.
        activation='lrelu',     # Activation name.
        conv_clamp=None,        # Clamp conv outputs to +-X (None = off).
    ):
        assert architecture in ['orig', 'skip', 'resnet'], f'unknown architecture {architecture!r}'
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * (resolution ** 2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        _ = force_fp32  # The epilogue always runs in fp32.
        dtype = torch.float32
        x = x.to(dtype=dtype, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=torch.contiguous_format)
            x = x + self.fromrgb(img)

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)

        # Projection discriminator: score = <features, label embedding> / sqrt(dim).
        if self.cmap_dim > 0:
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))

        assert x.dtype == dtype
        return x

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}'


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """image (+ label) -> logits [N, 1]. Blocks run from img_resolution down
    to 8x8, then the 4x4 epilogue `b4`. Conditioning is a projection onto a
    label embedding produced by a MappingNetwork (`mapping`)."""

    def __init__(self,
        c_dim,                  # Conditioning label (C) dimensionality.
        img_resolution,         # Input resolution (power of two >= 4).
        img_channels,           # Number of input colour channels.
        architecture='resnet',  # 'orig', 'skip' or 'resnet'.
        channel_base=32768,     # Channels at resolution r = min(channel_base // r, channel_max).
        channel_max=512,        # Maximum number of channels in any layer.
        num_fp16_res=0,         # Use fp16 for this many of the highest resolutions.
        conv_clamp=None,        # Clamp conv outputs to +-X (None = off).
        cmap_dim=None,          # Projection dimensionality, None = channels at 4x4.
        block_kwargs={},        # Arguments for DiscriminatorBlock.
        mapping_kwargs={},      # Arguments for MappingNetwork.
        epilogue_kwargs={},     # Arguments for DiscriminatorEpilogue.
    ):
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0, \
            f'img_resolution must be a power of two >= 4, got {img_resolution}'
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        if cmap_dim is None:
            cmap_dim = channels_dict[4]
        if c_dim == 0:
            cmap_dim = 0

        common_kwargs = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels_dict[res], channels_dict[res // 2], resolution=res,
                                       first_layer_idx=cur_layer_idx, use_fp16=(res >= fp16_resolution),
                                       **block_kwargs, **common_kwargs)
            setattr(self, f'b{res}', block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels_dict[4], cmap_dim=cmap_dim, resolution=4,
                                        **epilogue_kwargs, **common_kwargs)

    def forward(self, img, c, **block_kwargs):
        misc.assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)

        cmap = None
        if self.c_dim > 0:
            cmap = self.mapping(None, c)
        return self.b4(x, img, cmap)

    def extra_repr(self):
        return f'c_dim={self.c_dim:d}, img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d}'

