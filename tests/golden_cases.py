"""Golden cases: fixed-seed computations whose results were recorded from the
implementation before issue 11's rewrite (files under tests/golden/).

Each case is a function that builds its inputs with fixed seeds and returns a
flat dict {name: tensor | float | int | str | list}. Only public interfaces
are used (constructors, forward, loss.accumulate_gradients, training_loop,
metric_main.calc_metric, legacy.load_network_pkl, the ops' functions, the
train.py command line), so the same code runs against any tree whose
`stylegan2_ada/` comes first on sys.path.

Network weights are not taken from the constructors' random initialisation:
after construction every parameter and buffer (except the fixed FIR filters)
is overwritten with values drawn from a generator seeded by its *name*
(`fill_by_name`), so these cases do not depend on the order in which a
constructor draws its random numbers. The `networks_init` and `training`
cases do depend on it on purpose: a seed must give the same network and the
same run as before.

CASES maps a case name to (function, tolerance). Tolerance 0 means bit-exact
(`torch.equal`, `==`); the few non-zero ones are relative and explained where
they are declared.
"""
import contextlib
import json
import os
import pickle
import re
import sys
import tempfile
import zlib

import numpy as np
import torch

CASES = {}


def case(name, tol=0.0):
    """Register a case; `tol` is a relative tolerance (0 = bit-exact)."""
    def wrap(fn):
        assert name not in CASES, name
        CASES[name] = (fn, tol)
        return fn
    return wrap


# Helpers


def gen(seed):
    return torch.Generator().manual_seed(int(seed))


def randn(shape, seed):
    return torch.randn(list(shape), generator=gen(seed))


def name_seed(name, seed):
    return (zlib.crc32(name.encode()) + 7919 * int(seed)) % (2 ** 31)


def fill_by_name(module, seed):
    """Overwrite every parameter and buffer (not FIR filters, not ADA's p) with values that
    depend only on (name, shape, seed): independent of how the constructor drew its numbers."""
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            leaf = name.rsplit('.', 1)[-1]
            if leaf in ('resample_filter', 'p') or leaf.startswith('H') or not t.is_floating_point():
                continue
            r = randn(t.shape, name_seed(name, seed))
            if name.endswith('affine.bias'):
                value = 1 + 0.2 * r
            elif leaf in ('bias', 'noise_strength'):
                value = 0.2 * r
            elif leaf == 'w_avg':
                value = 0.3 * r
            else:
                value = r
            t.copy_(value)
    return module


def out_grads(prefix, out, inputs, module, seed):
    """`prefix`.out, and the gradients of <out, fixed random projection> w.r.t. the named
    `inputs` and every parameter of `module` that requires grad."""
    res = {f'{prefix}.out': out.detach().clone()}
    proj = randn(out.shape, seed)
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    targets = list(inputs.items()) + [(f'param.{n}', p) for n, p in params]
    grads = torch.autograd.grad((out * proj).sum(), [t for _, t in targets], allow_unused=True)
    for (n, _), g in zip(targets, grads):
        if g is not None:
            res[f'{prefix}.grad.{n}'] = g.detach().clone()
    return res


def state(prefix, module):
    return {f'{prefix}.{n}': t.detach().clone() for n, t in module.state_dict().items()}


@contextlib.contextmanager
def env_var(name, value):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def make_G(res=32, c_dim=0, z_dim=8, w_dim=8, map_layers=2, seed=0, **synthesis_kwargs):
    from training import networks
    synthesis_kwargs = {**dict(channel_base=128, channel_max=8), **synthesis_kwargs}
    G = networks.Generator(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=map_layers), synthesis_kwargs=synthesis_kwargs)
    return fill_by_name(G, seed)


def make_D(res=32, c_dim=0, seed=0, **kwargs):
    from training import networks
    kwargs = {**dict(channel_base=128, channel_max=8), **kwargs}
    D = networks.Discriminator(c_dim=c_dim, img_resolution=res, img_channels=3, **kwargs)
    return fill_by_name(D, seed + 1)


def labels(n, c_dim, seed):
    if c_dim == 0:
        return torch.zeros([n, 0])
    return torch.eye(c_dim)[torch.randint(c_dim, [n], generator=gen(seed))]


def G_outputs(G, n, seed, modes=('eval', 'train'), **G_kwargs):
    """G's image and gradients in eval mode (fused modconv) and train mode (unfused)."""
    res = {}
    for mode in modes:
        G.train(mode == 'train')
        z = randn([n, G.z_dim], seed).requires_grad_(True)
        c = labels(n, G.c_dim, seed + 1)
        G_kwargs.setdefault('noise_mode', 'const')
        img = G(z, c, **G_kwargs)
        res.update(out_grads(f'G.{mode}', img, dict(z=z), G, seed + 2))
        res[f'G.{mode}.w_avg'] = G.mapping.w_avg.detach().clone()
    G.eval()
    return res


def D_outputs(D, n, seed, prefix='D', **D_kwargs):
    img = randn([n, D.img_channels, D.img_resolution, D.img_resolution], seed).requires_grad_(True)
    c = labels(n, D.c_dim, seed + 1)
    logits = D(img, c, **D_kwargs)
    return out_grads(prefix, logits, dict(img=img), D, seed + 2)


# Networks


@case('networks_init')
def networks_init():
    """The constructors' own initialisation under a fixed seed (the training run starts here)."""
    from training import networks
    res = {}
    torch.manual_seed(0)
    G = networks.Generator(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=8,
                                                                                     num_fp16_res=2, conv_clamp=256))
    res.update(state('G', G))
    torch.manual_seed(1)
    D = networks.Discriminator(c_dim=3, img_resolution=16, img_channels=3, channel_base=128, channel_max=8,
                               num_fp16_res=2, conv_clamp=256)
    res.update(state('D', D))
    return res


def _auto_case(res_px, seed):
    # 'auto' as train.py resolves it: map 2, mbstd min(mb, 4), num_fp16_res 4, conv_clamp 256; small channels.
    G = make_G(res_px, num_fp16_res=4, conv_clamp=256, seed=seed)
    D = make_D(res_px, num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=4), seed=seed)
    out = G_outputs(G, 2 if res_px <= 32 else 1, seed + 10)
    out.update(D_outputs(D, 4 if res_px <= 32 else 2, seed + 20))
    return out


@case('networks_auto32')
def networks_auto32():
    return _auto_case(32, 100)


@case('networks_auto64')
def networks_auto64():
    return _auto_case(64, 200)


@case('networks_paper256')
def networks_paper256():
    """paper256's row at 32x32: mapping 8, mbstd 8, fp16 res 4, clamp 256 (channels reduced)."""
    G = make_G(32, map_layers=8, num_fp16_res=4, conv_clamp=256, channel_base=128, channel_max=8, seed=300)
    D = make_D(32, num_fp16_res=4, conv_clamp=256, channel_base=128, channel_max=8,
               epilogue_kwargs=dict(mbstd_group_size=8), seed=300)
    out = G_outputs(G, 2, 310)
    out.update(D_outputs(D, 8, 320))
    return out


@case('networks_cifar')
def networks_cifar():
    """cifar's row: conditional (c_dim=10), D architecture 'orig', mapping 2, mbstd 32."""
    G = make_G(32, c_dim=10, num_fp16_res=4, conv_clamp=256, seed=400)
    D = make_D(32, c_dim=10, architecture='orig', num_fp16_res=4, conv_clamp=256,
               epilogue_kwargs=dict(mbstd_group_size=32), seed=400)
    out = G_outputs(G, 2, 410)
    out.update(D_outputs(D, 4, 420))
    return out


def _G_arch(arch, seed):
    G = make_G(16, architecture=arch, seed=seed)
    return G_outputs(G, 2, seed + 10)


def _D_arch(arch, seed, **kwargs):
    D = make_D(16, architecture=arch, seed=seed, **kwargs)
    return D_outputs(D, 4, seed + 10)


@case('networks_G_orig')
def networks_G_orig():
    return _G_arch('orig', 500)


@case('networks_G_skip')
def networks_G_skip():
    return _G_arch('skip', 510)


@case('networks_G_resnet')
def networks_G_resnet():
    return _G_arch('resnet', 520)


@case('networks_D_orig')
def networks_D_orig():
    return _D_arch('orig', 530)


@case('networks_D_skip')
def networks_D_skip():
    return _D_arch('skip', 540, epilogue_kwargs=dict(mbstd_group_size=2, mbstd_num_channels=2))


@case('networks_D_resnet')
def networks_D_resnet():
    return _D_arch('resnet', 550)


@case('networks_D_freezed_cond')
def networks_D_freezed_cond():
    """Freeze-D (first layers as buffers) and a conditional D with its own cmap_dim and mapping."""
    D = make_D(16, c_dim=4, cmap_dim=6, block_kwargs=dict(freeze_layers=3), mapping_kwargs=dict(num_layers=3),
               seed=560)
    return D_outputs(D, 4, 570)


@case('networks_truncation_w_avg')
def networks_truncation_w_avg():
    G = make_G(16, c_dim=2, seed=600)
    res = {}
    z = randn([4, G.z_dim], 610)
    c = labels(4, 2, 611)
    G.mapping.train()
    for i in range(3):
        G.mapping(randn([4, G.z_dim], 620 + i), labels(4, 2, 630 + i))
        res[f'w_avg.after{i}'] = G.mapping.w_avg.detach().clone()
    G.mapping(z, c, skip_w_avg_update=True)
    res['w_avg.after_skip'] = G.mapping.w_avg.detach().clone()
    res['train.ws'] = G.mapping(z, c, truncation_psi=0.7).detach().clone()
    res['w_avg.after_psi'] = G.mapping.w_avg.detach().clone()
    G.eval()
    for psi, cutoff in [(1, None), (0.7, None), (0.7, 2), (0.5, 4), (-0.3, None)]:
        key = f'psi{psi}_cut{cutoff}'
        res[f'ws.{key}'] = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff).detach().clone()
        res[f'img.{key}'] = G(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode='const').detach()
    res['w_avg.final'] = G.mapping.w_avg.detach().clone()
    return res


@case('networks_noise_modes')
def networks_noise_modes():
    G = make_G(16, seed=700)
    res = {}
    z = randn([3, G.z_dim], 710)
    c = labels(3, 0, 0)
    for train in (False, True):
        G.train(train)
        for mode in ('random', 'const', 'none'):
            torch.manual_seed(720)
            img = G(z, c, noise_mode=mode)
            res[f'{"train" if train else "eval"}.{mode}'] = img.detach().clone()
    torch.manual_seed(721)
    res.update(G_outputs(G, 2, 730, modes=('train',), noise_mode='random'))
    return res


@case('networks_fp16_cpu')
def networks_fp16_cpu():
    """num_fp16_res > 0 as it runs on the CPU, with and without force_fp32, NHWC flag, clamp."""
    res = {}
    G = make_G(16, num_fp16_res=2, conv_clamp=1, fp16_channels_last=True, seed=800)
    D = make_D(16, num_fp16_res=2, conv_clamp=1, block_kwargs=dict(fp16_channels_last=True), seed=800)
    for force in (False, True):
        torch.manual_seed(0)
        res.update({f'force{force}.{k}': v for k, v in G_outputs(G, 2, 810, force_fp32=force).items()})
        res.update({f'force{force}.{k}': v for k, v in D_outputs(D, 2, 820, force_fp32=force).items()})
    return res


@case('networks_fused_modconv')
def networks_fused_modconv():
    """Both modulation paths explicitly, through the synthesis network alone."""
    G = make_G(16, seed=900)
    res = {}
    for train in (False, True):
        G.train(train)
        for fused in (False, True):
            ws = randn([2, G.num_ws, G.w_dim], 910).requires_grad_(True)
            img = G.synthesis(ws, noise_mode='const', fused_modconv=fused)
            tag = f'{"train" if train else "eval"}.fused{fused}'
            res.update(out_grads(tag, img, dict(ws=ws), G.synthesis, 920))
    return res


# Ops


def _x(shape, seed):
    return randn(shape, seed).requires_grad_(True)


def same(a, b):
    """1 when two result dicts hold the same keys and bit-identical tensors, else 0."""
    return int(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a))


def _grads_of(prefix, out, named, seed):
    res = {f'{prefix}.out': out.detach().clone()}
    proj = randn(out.shape, seed)
    grads = torch.autograd.grad((out * proj).sum(), list(named.values()), allow_unused=True)
    for n, g in zip(named, grads):
        if g is not None:
            res[f'{prefix}.grad.{n}'] = g.detach().clone()
    return res


@case('ops_upfirdn2d')
def ops_upfirdn2d():
    from torch_utils.ops import upfirdn2d
    res = {}
    filters = {
        'f4': upfirdn2d.setup_filter([1, 3, 3, 1]),
        'f2d': upfirdn2d.setup_filter(randn([3, 4], 1).abs() + 0.1),
        'sep8': upfirdn2d.setup_filter([1, 2, 4, 6, 6, 4, 2, 1]),
        'sep8_2d': upfirdn2d.setup_filter([1, 2, 4, 6, 6, 4, 2, 1], separable=False),
        'f4_flip_gain': upfirdn2d.setup_filter([1, 2, 3, 1], flip_filter=True, gain=3, normalize=False),
        'none': None,
    }
    for fname, f in filters.items():
        res[f'filter.{fname}'] = f if f is not None else torch.zeros([])
    configs = [
        dict(),
        dict(up=2),
        dict(down=2),
        dict(up=2, down=2, padding=1),
        dict(up=(2, 1), down=(1, 2), padding=(1, 2)),
        dict(up=3, padding=(2, 1, 0, -1)),
        dict(down=3, padding=[-1, 2, 1, 0]),
        dict(padding=2, flip_filter=True, gain=2.5),
        dict(up=2, padding=(1, 1, 2, 2), flip_filter=True, gain=4),
    ]
    for fname, f in filters.items():
        for i, kw in enumerate(configs):
            both = {}
            for impl in ('ref', 'cuda'):
                x = _x([1, 2, 10, 11], 10 + i)
                y = upfirdn2d.upfirdn2d(x, f, impl=impl, **kw)
                both[impl] = _grads_of(f'{fname}.{i}', y, dict(x=x), 20 + i)
            res.update(both['ref'])
            res[f'{fname}.{i}.cuda_impl_on_cpu_equals_ref'] = same(both['ref'], both['cuda'])
    # A filter that requires grad (gradient w.r.t. the filter too).
    x = _x([2, 2, 8, 8], 30)
    f = (randn([4, 4], 31).abs() + 0.1).requires_grad_(True)
    res.update(_grads_of('f_grad', upfirdn2d.upfirdn2d(x, f, up=2, down=1, padding=2), dict(x=x, f=f), 32))
    # The wrappers.
    f = filters['f4']
    for name, fn, kw in [('upsample2d', upfirdn2d.upsample2d, dict()), ('upsample2d_up4', upfirdn2d.upsample2d,
                                                                         dict(up=4, padding=1, gain=2)),
                         ('downsample2d', upfirdn2d.downsample2d, dict()),
                         ('downsample2d_pad', upfirdn2d.downsample2d, dict(down=(2, 1), padding=(1, 0), gain=3)),
                         ('filter2d', upfirdn2d.filter2d, dict()),
                         ('filter2d_pad', upfirdn2d.filter2d, dict(padding=(2, 1), flip_filter=True, gain=2))]:
        for fname in ('f4', 'sep8', 'f2d'):
            x = _x([1, 2, 8, 8], 40)
            res.update(_grads_of(f'{name}.{fname}', fn(x, filters[fname], **kw), dict(x=x), 41))
    return res


@case('ops_conv2d_resample')
def ops_conv2d_resample():
    from torch_utils.ops import conv2d_resample, upfirdn2d
    f4 = upfirdn2d.setup_filter([1, 3, 3, 1])
    f2d = upfirdn2d.setup_filter(randn([4, 3], 1).abs() + 0.1)
    configs = {
        'plain_k3': dict(k=3, padding=1),
        'plain_k3_noflip': dict(k=3, padding=1, flip_weight=False),
        'plain_asym_pad': dict(k=3, padding=[1, 2, 0, 1]),
        'plain_k1': dict(k=1),
        'down2_k3': dict(k=3, down=2, padding=1, f=f4),
        'down2_k3_noflip': dict(k=3, down=2, padding=1, f=f4, flip_weight=False),
        'down2_k1': dict(k=1, down=2, f=f4),
        'down2_k1_none': dict(k=1, down=2, f=None),
        'down2_k3_f2d': dict(k=3, down=2, padding=1, f=f2d),
        'up2_k3_transposed': dict(k=3, up=2, padding=1, f=f4, flip_weight=False),
        'up2_k3_flip': dict(k=3, up=2, padding=1, f=f4, flip_weight=True),
        'up2_k1': dict(k=1, up=2, f=f4),
        'up2_k3_f2d_flipfilter': dict(k=3, up=2, padding=1, f=f2d, flip_filter=True, flip_weight=False),
        'up2_down2_k3': dict(k=3, up=2, down=2, padding=1, f=f4, flip_weight=False),
        'up2_k4_pad0': dict(k=4, up=2, padding=0, f=f4, flip_weight=False),
        'groups2_plain': dict(k=3, padding=1, groups=2),
        'groups2_down2': dict(k=3, down=2, padding=1, f=f4, groups=2),
        'groups2_up2': dict(k=3, up=2, padding=1, f=f4, groups=2, flip_weight=False),
        'groups2_up2_k1': dict(k=1, up=2, f=f4, groups=2),
    }
    res = {}
    for i, (name, cfg) in enumerate(configs.items()):
        cfg = dict(cfg)
        k = cfg.pop('k')
        groups = cfg.get('groups', 1)
        x = _x([2, 4, 8, 8], 100 + i)
        w = _x([6, 4 // groups, k, k], 200 + i)
        y = conv2d_resample.conv2d_resample(x=x, w=w, **cfg)
        res.update(_grads_of(name, y, dict(x=x, w=w), 300 + i))
    # Double backward through the custom convs (what R1 and path length need).
    from torch_utils.ops import conv2d_gradfix
    x = _x([2, 4, 8, 8], 400)
    w = _x([4, 4, 3, 3], 401)
    y = conv2d_resample.conv2d_resample(x=x, w=w, f=f4, up=2, padding=1, flip_weight=False)
    (gx,) = torch.autograd.grad((y * randn(y.shape, 402)).sum(), [x], create_graph=True)
    res.update(_grads_of('double_backward', gx.square().sum().reshape([1]), dict(x=x, w=w), 403))
    with conv2d_gradfix.no_weight_gradients():
        y = conv2d_resample.conv2d_resample(x=x, w=w, f=f4, down=2, padding=1)
        (gx,) = torch.autograd.grad((y * randn(y.shape, 404)).sum(), [x], create_graph=True)
    res.update(_grads_of('no_weight_gradients', gx.square().sum().reshape([1]), dict(x=x, w=w), 405))
    return res


@case('ops_bias_act')
def ops_bias_act():
    from torch_utils.ops import bias_act
    res = {}
    acts = ['linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish']
    options = [dict(), dict(gain=0.7, clamp=0.9), dict(alpha=0.3, gain=2.0)]
    for i, act in enumerate(acts):
        for j, opt in enumerate(options):
            both = {}
            for impl in ('ref', 'cuda'):
                x = _x([2, 5, 3, 3], 10 * i + j)
                b = _x([5], 10 * i + j + 500)
                y = bias_act.bias_act(x, b, act=act, impl=impl, **opt)
                both[impl] = _grads_of(f'{act}.{j}', y, dict(x=x, b=b), 1000 + i)
            res.update(both['ref'])
            res[f'{act}.{j}.cuda_impl_on_cpu_equals_ref'] = same(both['ref'], both['cuda'])
    x = _x([3, 4, 5], 2000)
    b = _x([5], 2001)
    res.update(_grads_of('dim2', bias_act.bias_act(x, b, dim=2, act='lrelu', clamp=0.5), dict(x=x, b=b), 2002))
    x = _x([3, 5, 2, 2], 2003)
    res.update(_grads_of('nobias', bias_act.bias_act(x, act='lrelu', gain=1.3), dict(x=x), 2004))
    return res


@case('ops_fma')
def ops_fma():
    from torch_utils.ops import fma
    res = {}
    shapes = [([2, 3, 4], [2, 3, 4], [2, 3, 4]), ([2, 3, 1, 1], [1, 3, 4, 4], [2, 1, 4, 4]),
              ([3, 1], [4], [1]), ([2, 5, 4, 4], [2, 5, 1, 1], [1, 1, 4, 4])]
    for i, (sa, sb, sc) in enumerate(shapes):
        a, b, c = _x(sa, 10 * i), _x(sb, 10 * i + 1), _x(sc, 10 * i + 2)
        res.update(_grads_of(f'fma{i}', fma.fma(a, b, c), dict(a=a, b=b, c=c), 10 * i + 3))
    a = _x([2, 3], 100)
    res.update(_grads_of('scalar', fma.fma(a, 2.5, 0.5), dict(a=a), 101))
    return res


# Loss


def _loss_setup(cond, seed, **loss_kwargs):
    import dnnlib
    from training.augment import augpipe_specs
    c_dim = 3 if cond else 0
    G = make_G(16, c_dim=c_dim, num_fp16_res=4, conv_clamp=256, seed=seed)
    D = make_D(16, c_dim=c_dim, num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=2),
               seed=seed)
    G.train().requires_grad_(False)
    D.train().requires_grad_(False)
    aug = dnnlib.util.construct_class_by_name(class_name='training.augment.AugmentPipe', **augpipe_specs['bgc'])
    aug.train().requires_grad_(False)
    aug.p.copy_(torch.as_tensor(0.5))
    loss = dnnlib.util.construct_class_by_name(class_name='training.loss.StyleGAN2Loss', device=torch.device('cpu'),
                                               G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, augment_pipe=aug,
                                               **loss_kwargs)
    return G, D, loss, c_dim


def _loss_phases(G, D, loss, c_dim, seed, phases):
    from torch_utils import training_stats
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    res = {}
    n = 4
    for k, (phase, gain) in enumerate(phases):
        real_img = randn([n, 3, 16, 16], seed + 10 * k).clamp(-1, 1)
        real_c = labels(n, c_dim, seed + 10 * k + 1)
        gen_z = randn([n, G.z_dim], seed + 10 * k + 2)
        gen_c = labels(n, c_dim, seed + 10 * k + 3)
        module = G if phase.startswith('G') else D
        for p in module.parameters():
            p.grad = None
        collector.update()  # Drop anything reported before this phase.
        module.requires_grad_(True)
        torch.manual_seed(seed + 10 * k + 4)
        loss.accumulate_gradients(phase=phase, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                  sync=True, gain=gain)
        module.requires_grad_(False)
        tag = f'{k}.{phase}'
        for name, p in module.named_parameters():
            if p.grad is not None:
                res[f'{tag}.grad.{name}'] = p.grad.detach().clone()
        collector.update()
        for name in collector.names():
            if collector.num(name):
                res[f'{tag}.stat.{name}.num'] = int(collector.num(name))
                res[f'{tag}.stat.{name}.mean'] = float(collector.mean(name))
        res[f'{tag}.pl_mean'] = loss.pl_mean.detach().clone()
        res[f'{tag}.w_avg'] = G.mapping.w_avg.detach().clone()
    return res


@case('loss_stylegan2')
def loss_stylegan2():
    """Gmain, Greg (path length), Dmain, Dreg (R1 through bgc at p=0.5), then Gboth and Dboth,
    with the gains the training loop uses for lazy regularisation (4 and 16)."""
    G, D, loss, c_dim = _loss_setup(False, 1000, r1_gamma=0.8)
    phases = [('Gmain', 1), ('Greg', 4), ('Dmain', 1), ('Dreg', 16), ('Greg', 4), ('Gboth', 1), ('Dboth', 1)]
    return _loss_phases(G, D, loss, c_dim, 1100, phases)


@case('loss_cifar')
def loss_cifar():
    """cifar's loss settings: conditional, pl_weight 0, no style mixing."""
    G, D, loss, c_dim = _loss_setup(True, 1200, r1_gamma=0.01, pl_weight=0, style_mixing_prob=0)
    phases = [('Gmain', 1), ('Greg', 4), ('Dmain', 1), ('Dreg', 16)]
    return _loss_phases(G, D, loss, c_dim, 1300, phases)


# Legacy (TensorFlow-era pickles)


@case('legacy_tf_pickle')
def legacy_tf_pickle():
    """A synthetic TF pickle written with tests/test_pickle_roundtrip.py's helpers (with smaller
    static kwargs), converted by legacy.load_network_pkl; source weights filled by name."""
    import pytest
    import legacy
    import test_pickle_roundtrip as tpr
    from training import networks
    G_tf = dict(tpr.TF_G_KWARGS, latent_size=8, dlatent_size=8, fmap_base=64, fmap_max=8)
    D_tf = dict(tpr.TF_D_KWARGS, fmap_base=64, fmap_max=8, mapping_fmaps=6)
    G = networks.Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=32, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=128, channel_max=8, architecture='skip'))
    D = networks.Discriminator(c_dim=3, img_resolution=32, img_channels=3, channel_base=128, channel_max=8,
                               architecture='resnet', cmap_dim=6,
                               mapping_kwargs=dict(num_layers=2, embed_features=6, layer_features=6,
                                                   lr_multiplier=0.1),
                               epilogue_kwargs=dict(mbstd_group_size=2))
    fill_by_name(G, 1400).eval()
    fill_by_name(D, 1401).eval()
    res = {}
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        path = os.path.join(tmp, 'tf.pkl')
        tpr.write_tf_pickle(path, G, D, G_tf, D_tf, mp)
        with open(path, 'rb') as f:
            data = legacy.load_network_pkl(f)
    res['keys'] = sorted(data)
    for key in ('G', 'D', 'G_ema'):
        res.update(state(key, data[key]))
    z = randn([4, 8], 1410)
    c = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        img = data['G_ema'](z, c, truncation_psi=0.5, noise_mode='const')
        res['img_G_ema'] = img
        res['img_G'] = data['G'](z, c, noise_mode='const')
        res['logits_D'] = data['D'](img, c)
    return res


# Training


@case('training')
def training():
    """Three ticks of training_loop on builtin:shapes at 32x32 with ADA on: final G, D, G_ema
    and p. Depends on the constructors' RNG order (training_loop seeds, then builds)."""
    import dnnlib
    from training import shapes, training_loop
    E = dnnlib.EasyDict
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = shapes.materialize_builtin('builtin:shapes', os.path.join(tmp, 'data'), resolution=32, num_images=24)
        kw = E(
            training_set_kwargs=E(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False,
                                  xflip=False),
            data_loader_kwargs=E(num_workers=0),
            G_kwargs=E(class_name='training.networks.Generator', z_dim=8, w_dim=8, mapping_kwargs=E(num_layers=2),
                       synthesis_kwargs=E(channel_base=128, channel_max=8, num_fp16_res=4, conv_clamp=256)),
            D_kwargs=E(class_name='training.networks.Discriminator', channel_base=128, channel_max=8,
                       num_fp16_res=4, conv_clamp=256, block_kwargs=E(), mapping_kwargs=E(),
                       epilogue_kwargs=E(mbstd_group_size=4)),
            G_opt_kwargs=E(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8),
            D_opt_kwargs=E(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8),
            augment_kwargs=E(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1, scale=1,
                             rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
            loss_kwargs=E(class_name='training.loss.StyleGAN2Loss', r1_gamma=0.05),
            random_seed=3, batch_size=4, batch_gpu=4, ema_kimg=0.01, ema_rampup=0.05,
            G_reg_interval=4, D_reg_interval=4, ada_target=0.01, ada_interval=2, ada_kimg=0.1,
            total_kimg=0.032, kimg_per_tick=0.016, image_snapshot_ticks=None, network_snapshot_ticks=1,
            device='cpu',
        )
        run_dir = os.path.join(tmp, 'run')
        training_loop.training_loop(run_dir=run_dir, **kw)
        with open(os.path.join(run_dir, 'stats.jsonl')) as f:
            stats = [json.loads(line) for line in f if line.strip()]
        # The newest snapshot. All three were one overwritten file when the record was made; now
        # they are 000000, 000000_with020img, 000000_with032img, in training order by name.
        names = r'network-snapshot-\d+(_with\d{3}img)?\.pkl'
        snaps = sorted(n for n in os.listdir(run_dir) if re.fullmatch(names, n))
        with open(os.path.join(run_dir, snaps[-1]), 'rb') as f:
            snap = pickle.load(f)
    res['ticks'] = [s['Progress/tick']['mean'] for s in stats]
    res['augment_p_per_tick'] = [s['Progress/augment']['mean'] for s in stats]
    for name in ('Loss/G/loss', 'Loss/D/loss', 'Loss/signs/real', 'Loss/r1_penalty', 'Loss/pl_penalty'):
        res[f'stats.{name}'] = [s[name]['mean'] if name in s else None for s in stats]
    res['augment_p'] = snap['augment_pipe'].p.detach().clone()
    for key in ('G', 'D', 'G_ema'):
        res.update(state(key, snap[key]))
    return res


# Dry runs of train.py


DRY_FLAGS = ('--metrics=none', '--device=cpu', '--dry-run')


def dry_run_commands():
    """The command lines: every cfg with its defaults, every cfg x every --loss, every cfg x every
    --aug (fixed with --p), plus a few flag combinations. Names come from the registry.
    Each cfg's defaults run on `builtin:shapes-32` itself; the rest on the same images drawn
    once into a folder (drawing them takes about a second per command)."""
    from kdgan_plugins import presets, registry
    presets.register_all()
    names = {kind: list(registry.BUILTIN_NAMES[kind]) + sorted(registry.names(kind)) for kind in registry.KINDS}
    kd = ['--teacher=random:ViT-B-32']
    cmds = []
    for cfg in names['cfg']:
        cmds.append(['--data=builtin:shapes-32', f'--cfg={cfg}'])
        for loss in names['loss']:
            extra = kd + (['--cond=1'] if loss == 'kdgan.CGKD' else []) if loss.startswith('kdgan.') else []
            cmds.append([f'--cfg={cfg}', f'--loss={loss}'] + extra)
        for aug in names['aug']:
            cmds.append([f'--cfg={cfg}', f'--aug={aug}'] + (['--p=0.25'] if aug == 'fixed' else []))
    cmds += [
        ['--cfg=paper256', '--gamma=2', '--kimg=100', '--batch=8', '--mirror=1', '--fp32=1', '--snap=5'],
        ['--cfg=auto', '--cbase=4096', '--cmax=128', '--map-depth=3', '--mbstd-group=2', '--ema=5', '--tick=2'],
        ['--cfg=stylegan2', '--gpus=3', '--aug=ada', '--target=0.7', '--ada-kimg=50', '--augpipe=bgcfnc'],
        ['--cfg=cifar', '--cond=1', '--subset=10', '--freezed=2', '--nhwc=1', '--seed=4', '--grid=4'],
        ['--cfg=fastgan', '--ngf=8', '--ndf=4', '--recon=l1', '--recon-weight=0.5', '--aug=diffaug'],
        ['--cfg=fastgan_lite', '--loss=kdgan.KDDLGAN', '--cond=1', '--kd-p=0.25', '--kd-agkd-weight=2',
         '--kd-cgkd-weight=3', '--kd-dist=l1', '--kd-template=a drawing of a {label}', '--kd-diversity=0.5'] + kd,
        ['--cfg=auto', '--loss=kdgan.AGKD', '--aug=noaug'],
    ]
    return names, cmds


@case('dryrun')
def dryrun():
    """`train.py --dry-run` output for each command line; the temporary folder (outdir, dnnlib
    cache, data) is replaced by <TMP>."""
    from click.testing import CliRunner
    import train
    from training import shapes
    names, cmds = dry_run_commands()
    res = {'names': json.dumps(names, sort_keys=True)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = os.path.realpath(tmp)
        folder = shapes.materialize_builtin('builtin:shapes-32', os.path.join(tmp, 'data'))
        with env_var('DNNLIB_CACHE_DIR', os.path.join(tmp, 'cache')):
            for cmd in cmds:
                data = [] if cmd[0].startswith('--data=') else [f'--data={folder}']
                args = ['--outdir', os.path.join(tmp, 'runs')] + data + cmd + list(DRY_FLAGS)
                result = CliRunner().invoke(train.main, args)
                text = result.output.replace(tmp, '<TMP>')
                text = re.sub(r'kdgan-dry-run-[A-Za-z0-9_]+', 'kdgan-dry-run-<X>', text)
                if result.exit_code != 0:
                    text += f'\n<exit {result.exit_code}: {result.exception!r}>'
                res['cmd: ' + ' '.join(cmd)] = text
    return res


# Metrics


def _register_metrics(metric_main):
    if not metric_main.is_valid_metric('golden_pr'):
        metric_main.register_builtin('golden_pr', metric_main.make_pr(max_real=None, num_gen=32, nhood_size=3),
                                     ('vgg16',))
        metric_main.register_builtin('golden_ppl_wend', metric_main.make_ppl(
            num_samples=16, space='w', sampling='end', crop=False, batch_size=4), ('vgg16',))
        metric_main.register_builtin('golden_ppl_zfull', metric_main.make_ppl(
            num_samples=16, space='z', sampling='full', crop=True, batch_size=4), ('vgg16',))


@case('metrics', tol=1e-6)
def metrics():
    """FID, KID, precision/recall and PPL with the test detector of tests/test_metrics_e2e.py on
    builtin:shapes-16 (24 images). Relative tolerance 1e-6: FID's sqrtm and the float64 sums in
    numpy/scipy (KID's kernel means, PR's distances) depend on BLAS threading and summation order."""
    import dnnlib
    from metrics import metric_main
    from training import shapes
    import test_metrics_e2e as tme
    _register_metrics(metric_main)
    G = make_G(16, z_dim=8, w_dim=8, channel_base=128, channel_max=8, seed=1500).eval()
    res = {}
    with tempfile.TemporaryDirectory() as tmp, env_var('DNNLIB_CACHE_DIR', os.path.join(tmp, 'cache')):
        data = shapes.materialize_builtin('builtin:shapes-16', os.path.join(tmp, 'data'), num_images=24)
        det_dir = tme.save_test_detectors(os.path.join(tmp, 'det'))
        kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, resolution=16,
                                 use_labels=False, max_size=None, xflip=False)
        for metric in ('fid32_full', 'kid32_full', 'fidkid32_full', 'golden_pr', 'golden_ppl_wend',
                       'golden_ppl_zfull'):
            torch.manual_seed(1510)
            np.random.seed(1511)
            out = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=kwargs, num_gpus=1, rank=0,
                                          device=torch.device('cpu'), detector_dir=det_dir)
            for key, value in out.results.items():
                res[f'{metric}.{key}'] = float(value)
    return res


def run_case(name):
    """Run one case with one intra-op thread (the same reduction order in every process)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    from helpers import torch_threads
    fn, _tol = CASES[name]
    with torch_threads(1):
        return fn()
