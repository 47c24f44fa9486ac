"""The built-in `--cfg` presets of train.py, kept as data.

The table below is CONTRACT.md's, written the way the contract shows it so
that the two can be compared by eye. It is parsed once, at import, into
frozen `TableRow`s; nothing else in the harness holds these numbers.
`auto` leaves the columns that depend on the data set and the GPU count
open (`*`); `resolve_cfg` fills them with the contract's formulas.

Callers (training/config.py, the tests, the benches) use three names:
`cfg_specs` (name -> plain dict of the columns, `-1` where `auto` computes
the value), `resolve_cfg` and `network_kwargs`.
"""

import copy
import dataclasses

import dnnlib

_TABLE = """
| cfg       | ref_gpus | kimg   | mb | mbstd | fmaps | lrate  | gamma | ema | ramp | map |
| auto      | *        | 25000  | *  | *     | *     | *      | *     | *   | 0.05 | 2   |
| stylegan2 | 8        | 25000  | 32 | 4     | 1     | 0.002  | 10    | 10  | -    | 8   |
| paper256  | 8        | 25000  | 64 | 8     | 0.5   | 0.0025 | 1     | 20  | -    | 8   |
| paper512  | 8        | 25000  | 64 | 8     | 1     | 0.0025 | 0.5   | 20  | -    | 8   |
| paper1024 | 8        | 25000  | 32 | 4     | 1     | 0.002  | 2     | 10  | -    | 8   |
| cifar     | 2        | 100000 | 64 | 32    | 1     | 0.0025 | 0.01  | 500 | 0.05 | 2   |
"""

COMPUTED = -1  # How `cfg_specs` shows an `auto` cell that resolve_cfg works out.


@dataclasses.dataclass(frozen=True)
class TableRow:
    """One preset. mb is the total batch, mbstd the minibatch-stddev group,
    fmaps scales channel_base (fmaps * 32768), lrate is Adam's learning rate,
    gamma the R1 weight, ema the G_ema half-life in kimg, ramp its ramp-up
    (None: off), map the number of mapping layers, ref_gpus the GPU count the
    batch was tuned for."""
    ref_gpus: int
    kimg: int
    mb: int
    mbstd: int
    fmaps: float
    lrate: float
    gamma: float
    ema: float
    ramp: float | None
    map: int


def _cell(text):
    """A table cell as a Python value: ints stay ints so that JSON and run
    names print `1`, not `1.0`."""
    if text == '-':
        return None
    if text == '*':
        return COMPUTED
    return int(text) if text.isdigit() else float(text)


def _parse_table(text):
    lines = [line.strip().strip('|') for line in text.strip().splitlines()]
    header, *body = [[cell.strip() for cell in line.split('|')] for line in lines]
    columns = [f.name for f in dataclasses.fields(TableRow)]
    assert header == ['cfg'] + columns, header
    return {cells[0]: TableRow(*map(_cell, cells[1:])) for cells in body}


TABLE = _parse_table(_TABLE)
cfg_specs = {name: dataclasses.asdict(row) for name, row in TABLE.items()}

# What every preset shares.
CHANNEL_MAX = 512
NUM_FP16_RES = 4
CONV_CLAMP = 256
ADAM_BETAS = [0.0, 0.99]
ADAM_EPS = 1e-8
Z_DIM = 512
W_DIM = 512
CHANNELS_PER_FMAP = 32768

# Settings a preset owns beyond the table: extra StyleGAN2Loss keywords and
# the discriminator architecture (cifar: no path length, no style mixing, 'orig' D).
_LOSS_EXTRAS = {'cifar': {'pl_weight': 0, 'style_mixing_prob': 0}}
_D_ARCHITECTURE = {'cifar': 'orig'}


def _auto_columns(res, gpus):
    """CONTRACT.md's `auto` formulas. The batch is as many images per GPU as
    the resolution allows (at most 32), capped at 64 in total but never below
    one image per GPU; R1 gamma and the EMA half-life scale with it."""
    fit_per_gpu = min(4096 // res, 32)
    batch = max(min(fit_per_gpu * gpus, 64), gpus)
    return dict(
        ref_gpus=gpus,
        mb=batch,
        mbstd=min(batch // gpus, 4),
        fmaps=0.5 if res < 512 else 1,
        lrate=0.0025 if res < 1024 else 0.002,
        gamma=res * res * 0.0002 / batch,
        ema=10 * batch / 32,
    )


def resolve_cfg(cfg, res, gpus=1):
    """The columns of preset `cfg` for `res` x `res` images on `gpus` GPUs, as a
    fresh EasyDict that the caller may change."""
    row = TABLE.get(cfg)
    if row is None:
        raise ValueError(f'unknown cfg {cfg!r}; the table has {", ".join(TABLE)}')
    if not isinstance(res, int) or res < 4 or res & (res - 1):
        raise ValueError(f'image resolution {res!r} is not a power of two >= 4')
    if not isinstance(gpus, int) or gpus < 1:
        raise ValueError(f'gpus must be an int >= 1, got {gpus!r}')
    if cfg == 'auto':
        row = dataclasses.replace(row, **_auto_columns(res, gpus))
    return dnnlib.EasyDict(dataclasses.asdict(row))


def _generator(spec, channel_base):
    E = dnnlib.EasyDict
    synthesis = E(channel_base=channel_base, channel_max=CHANNEL_MAX, num_fp16_res=NUM_FP16_RES,
                  conv_clamp=CONV_CLAMP)
    return E(class_name='training.networks.Generator', z_dim=Z_DIM, w_dim=W_DIM,
             mapping_kwargs=E(num_layers=spec.map), synthesis_kwargs=synthesis)


def _discriminator(spec, channel_base):
    E = dnnlib.EasyDict
    return E(class_name='training.networks.Discriminator', block_kwargs=E(), mapping_kwargs=E(),
             epilogue_kwargs=E(mbstd_group_size=spec.mbstd), channel_base=channel_base,
             channel_max=CHANNEL_MAX, num_fp16_res=NUM_FP16_RES, conv_clamp=CONV_CLAMP)


def _adam(lr):
    return dnnlib.EasyDict(class_name='torch.optim.Adam', lr=lr, betas=list(ADAM_BETAS), eps=ADAM_EPS)


def network_kwargs(spec, cfg=None, c_dim=None, img_resolution=None, img_channels=None):
    """What a resolved spec means for the training loop: G_kwargs and D_kwargs
    (with `class_name`, ready for dnnlib.util.construct_class_by_name), the two
    Adam optimisers and loss_kwargs, as one EasyDict.

    c_dim, img_resolution and img_channels belong to the data set; they are
    written into G and D only when given (train.py leaves them to the loop).
    """
    channel_base = int(spec.fmaps * CHANNELS_PER_FMAP)
    G_kwargs = _generator(spec, channel_base)
    D_kwargs = _discriminator(spec, channel_base)
    from_data = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels)
    for key, value in from_data.items():
        if value is not None:
            G_kwargs[key] = D_kwargs[key] = value
    if cfg in _D_ARCHITECTURE:
        D_kwargs.architecture = _D_ARCHITECTURE[cfg]
    loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=spec.gamma)
    loss_kwargs.update(copy.deepcopy(_LOSS_EXTRAS.get(cfg, {})))
    return dnnlib.EasyDict(G_kwargs=G_kwargs, D_kwargs=D_kwargs, G_opt_kwargs=_adam(spec.lrate),
                           D_opt_kwargs=_adam(spec.lrate), loss_kwargs=loss_kwargs)
