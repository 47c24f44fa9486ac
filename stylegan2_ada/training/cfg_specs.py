"""The `--cfg` presets of train.py, as data, in one place.

`cfg_specs` is the table from docs/CONTRACT.md; `resolve_cfg` fills in the
formulas of 'auto'; `network_kwargs` turns a resolved spec into the G/D
constructor arguments (plus the few loss/optimiser settings a preset owns).
train.py, the tests and the benchmarks all read this module so there is one
implementation of the table.
"""

import copy

import dnnlib

# Columns: ref_gpus, kimg, mb (total batch), mbstd (minibatch-stddev group),
# fmaps (channel_base = fmaps * 32768), lrate, gamma (R1), ema (kimg),
# ramp (EMA ramp-up, None = off), map (mapping layers).
# -1 marks a value that resolve_cfg() computes for 'auto'.
cfg_specs = {
    'auto':      dict(ref_gpus=-1, kimg=25000,  mb=-1, mbstd=-1, fmaps=-1,  lrate=-1,     gamma=-1,   ema=-1,  ramp=0.05, map=2),
    'stylegan2': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=1,   lrate=0.002,  gamma=10,   ema=10,  ramp=None, map=8),
    'paper256':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  fmaps=0.5, lrate=0.0025, gamma=1,    ema=20,  ramp=None, map=8),
    'paper512':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  fmaps=1,   lrate=0.0025, gamma=0.5,  ema=20,  ramp=None, map=8),
    'paper1024': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=1,   lrate=0.002,  gamma=2,    ema=10,  ramp=None, map=8),
    'cifar':     dict(ref_gpus=2,  kimg=100000, mb=64, mbstd=32, fmaps=1,   lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, map=2),
}

# Settings shared by every preset.
CHANNEL_MAX = 512
NUM_FP16_RES = 4
CONV_CLAMP = 256
ADAM_BETAS = [0.0, 0.99]
ADAM_EPS = 1e-8
Z_DIM = 512
W_DIM = 512

# Per-preset deviations beyond the table's columns.
cfg_extras = {
    'cifar': dict(loss_kwargs=dict(pl_weight=0, style_mixing_prob=0), D_architecture='orig'),
}


def resolve_cfg(cfg, res, gpus=1):
    """Return the spec of preset `cfg` for a dataset of resolution `res` on
    `gpus` GPUs as an EasyDict (a copy; 'auto' gets its formulas applied)."""
    if cfg not in cfg_specs:
        raise ValueError(f'unknown cfg {cfg!r}; choose from {", ".join(cfg_specs)}')
    if not (isinstance(res, int) and res >= 4 and res & (res - 1) == 0):
        raise ValueError(f'resolution must be a power of two >= 4, got {res!r}')
    if not (isinstance(gpus, int) and gpus >= 1):
        raise ValueError(f'gpus must be a positive integer, got {gpus!r}')
    spec = dnnlib.EasyDict(copy.deepcopy(cfg_specs[cfg]))
    if cfg == 'auto':
        spec.ref_gpus = gpus
        spec.mb = max(min(gpus * min(4096 // res, 32), 64), gpus)  # Keep the GPUs busy, cap memory.
        spec.mbstd = min(spec.mb // gpus, 4)  # Other hyperparameters behave better when mbstd = 4.
        spec.fmaps = 1 if res >= 512 else 0.5
        spec.lrate = 0.002 if res >= 1024 else 0.0025
        spec.gamma = 0.0002 * (res ** 2) / spec.mb  # Rule of thumb for R1.
        spec.ema = spec.mb * 10 / 32
    return spec


def network_kwargs(spec, cfg=None, c_dim=None, img_resolution=None, img_channels=None):
    """G/D constructor kwargs for a resolved spec (`class_name` included, for
    dnnlib.util.construct_class_by_name), plus loss and optimiser settings.

    Returns an EasyDict with G_kwargs, D_kwargs, G_opt_kwargs, D_opt_kwargs,
    loss_kwargs. Dataset-dependent values (c_dim, img_resolution,
    img_channels) are added only when given; the training loop normally
    supplies them from the dataset.
    """
    E = dnnlib.EasyDict
    G_kwargs = E(class_name='training.networks.Generator', z_dim=Z_DIM, w_dim=W_DIM,
                 mapping_kwargs=E(), synthesis_kwargs=E())
    D_kwargs = E(class_name='training.networks.Discriminator', block_kwargs=E(), mapping_kwargs=E(),
                 epilogue_kwargs=E())
    channel_base = int(spec.fmaps * 32768)
    G_kwargs.synthesis_kwargs.channel_base = D_kwargs.channel_base = channel_base
    G_kwargs.synthesis_kwargs.channel_max = D_kwargs.channel_max = CHANNEL_MAX
    G_kwargs.mapping_kwargs.num_layers = spec.map
    G_kwargs.synthesis_kwargs.num_fp16_res = D_kwargs.num_fp16_res = NUM_FP16_RES
    G_kwargs.synthesis_kwargs.conv_clamp = D_kwargs.conv_clamp = CONV_CLAMP
    D_kwargs.epilogue_kwargs.mbstd_group_size = spec.mbstd
    for kwargs in (G_kwargs, D_kwargs):
        if c_dim is not None:
            kwargs.c_dim = c_dim
        if img_resolution is not None:
            kwargs.img_resolution = img_resolution
        if img_channels is not None:
            kwargs.img_channels = img_channels

    G_opt_kwargs = E(class_name='torch.optim.Adam', lr=spec.lrate, betas=list(ADAM_BETAS), eps=ADAM_EPS)
    D_opt_kwargs = E(class_name='torch.optim.Adam', lr=spec.lrate, betas=list(ADAM_BETAS), eps=ADAM_EPS)
    loss_kwargs = E(class_name='training.loss.StyleGAN2Loss', r1_gamma=spec.gamma)

    extras = cfg_extras.get(cfg, {})
    loss_kwargs.update(copy.deepcopy(extras.get('loss_kwargs', {})))
    if 'D_architecture' in extras:
        D_kwargs.architecture = extras['D_architecture']
    return E(G_kwargs=G_kwargs, D_kwargs=D_kwargs, G_opt_kwargs=G_opt_kwargs, D_opt_kwargs=D_opt_kwargs,
             loss_kwargs=loss_kwargs)
