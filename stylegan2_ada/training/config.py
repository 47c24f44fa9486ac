"""train.py's command line -> the keyword arguments of training_loop.

One entry point, `resolve(Flags(...))`, returns a `Resolution`: the options
(upstream's structure, minus run_dir), the run-folder description, where
each `--cfg`/`--loss`/`--aug` name came from, a data-set summary and the
temporary folder a dry run drew a built-in data set into.

Precedence, lowest first (one run of `resolve`, in this order):

0. a resume of a train.py run (`--resume=<run folder, outdir, checkpoint or
   snapshot>`) first fills every option the caller did not give from that
   run's training_options.json (training.recorded_options): they then count
   as that run's explicit flags, so they beat its cfg's presets (steps 1-4)
   and lose to the options given now (`Flags.explicit`, from the command
   line); a given option that moves an exact resume off the recorded run's
   trajectory is refused in one line naming it;
1. the built-in table row (training.cfg_specs) of `--cfg`, or of a plug-in
   cfg's `base` (default `auto`);
2. the `defaults` of the cfg preset, then the loss preset, then the aug
   preset (kdgan_plugins.registry; `p` and `target` only steer the aug);
3. hyper-parameter flags that the table owns: --batch, --kimg, --gamma,
   --map-depth, --mbstd-group, --cbase (as fmaps), --ema and --ema-rampup;
4. the option sections built from the result (cfg_specs.network_kwargs),
   patched by the cfg preset (plus presets.loop_options), then the loss
   preset (presets.apply_loss_preset, which can wrap the cfg's D), then the
   aug preset; `--loss=stylegan2` on a cfg whose default loss is another
   puts the built-in loss back;
5. explicit flags as one patch merged last, so they beat every preset:
   --gamma, --freezed, --ngf/--ndf, --cbase, --cmax, --map-depth,
   --mbstd-group, --fp32, --nhwc, then --teacher/--kd-*/--recon/--lecam
   through presets.cli_patch.

A DiffAugment pipe's ops: --diffaug, else the last `policy` default of the
cfg, loss and aug presets, else the aug preset's own policy.

A resume that restores only the networks sets ada_kimg=100 and
ema_rampup=None (upstream's transfer-learning defaults); an exact resume
keeps what the resumed run had; an explicit --ada-kimg or --ema-rampup beats both.

Metric names (and, outside a dry run, their detector files) are checked
before torch is imported, so an offline machine hears about a missing file
at once. Problems raise `ConfigError`s, which train.py shows the way click
shows its own errors. Nothing here imports torch at module level.
"""

import copy
import dataclasses
import json
import math
import os
import re
import sys
import tempfile

import dnnlib
from training import cfg_specs
from training import shapes as shapes_lib


class ConfigError(Exception):
    """An option set that cannot be resolved. `flag` names the option at fault."""

    def __init__(self, message, flag=None):
        super().__init__(message)
        self.message = message
        self.flag = flag


class BadValue(ConfigError):
    """One option's value is out of range (click: BadParameter for `flag`)."""


class Conflict(ConfigError):
    """Options that do not go together, or a name that is not known (click: UsageError)."""


class Unavailable(ConfigError):
    """Something the options point at is missing or unreadable (click: ClickException)."""


BUILTIN_LOSS = 'stylegan2'
BUILTIN_AUGS = ('ada', 'noaug', 'fixed')
CPU_GRID_CELLS = 8  # At most 8 x 8 cells per grid on the CPU: 32 x 32 costs seconds per snapshot there.
DEFAULT_ADA_TARGET = 0.6
DEFAULT_ADA_KIMG = 500  # kimg for ADA's p to travel from 0 to 1.
TRANSFER_ADA_KIMG = 100  # After a networks-only resume ADA must react to the new data quickly.
DEFAULT_AUGPIPE = 'bgc'
# training_loop's ema_bn: how G_ema's batch norms are evaluated (cfgs whose G has them set it).
EMA_BN_MODES = ('recompute', 'copy', 'batch')
# training.augment.augpipe_specs' names, repeated so that option parsing needs no torch
# (tests/test_train_cli.py checks that the two lists agree).
AUGPIPE_NAMES = ('blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc')

_NVIDIA_PRETRAINED = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets'
_TRANSFER_SOURCES = (
    ('ffhq256', 'ffhq-res256-mirror-paper256-noaug.pkl'),
    ('ffhq512', 'ffhq-res512-mirror-stylegan2-noaug.pkl'),
    ('ffhq1024', 'ffhq-res1024-mirror-stylegan2-noaug.pkl'),
    ('celebahq256', 'celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl'),
    ('lsundog256', 'lsundog-res256-paper256-kimg100000-noaug.pkl'),
)
# `--resume` shortcuts: the network pickles NVIDIA published for transfer learning.
resume_specs = {name: f'{_NVIDIA_PRETRAINED}/{file}' for name, file in _TRANSFER_SOURCES}


@dataclasses.dataclass
class Flags:
    """The options of train.py by their keyword names; None = not given."""
    gpus: int = 1
    snap: int = 50
    metrics: tuple = ('fid50k_full',)
    seed: int = 0
    data: str | None = None
    cond: bool | None = None
    subset: int | None = None
    mirror: bool | None = None
    cfg: str = 'auto'
    gamma: float | None = None
    kimg: float | None = None
    batch: int | None = None
    lr: float | None = None
    aug: str | None = None
    p: float | None = None
    target: float | None = None
    ada_kimg: float | None = None
    augpipe: str | None = None
    resume: str | None = None
    resume_mode: str = 'auto'
    freezed: int = 0
    fp32: bool | None = None
    nhwc: bool | None = None
    nobench: bool | None = None
    allow_tf32: bool | None = None
    workers: int = 3
    device: str = 'auto'
    tick: float = 4
    loss: str | None = None
    cbase: int | None = None
    cmax: int | None = None
    map_depth: int | None = None
    mbstd_group: int | None = None
    dry_run: bool = False
    ngf: int | None = None
    ndf: int | None = None
    grid: int | None = None
    ema: float | None = None
    ema_rampup: float | str | None = None   # 'none' turns the cfg's ramp-up off
    detector_dir: str | None = None
    teacher: str | None = None
    teacher_weights: str | None = None
    teacher_config: str | None = None
    teacher_dir: str | None = None
    kd_p: float | None = None
    kd_agkd_weight: float | None = None
    kd_cgkd_weight: float | None = None
    kd_dist: str | None = None
    kd_labels: str | None = None
    kd_template: str | None = None
    kd_diversity: float | None = None
    recon: str | None = None
    recon_weight: float | None = None
    lecam: float | None = None
    precision: str | None = None
    fake_reuse: bool | None = None
    diffaug: str | None = None
    ema_bn: str | None = None
    explicit: tuple | None = None   # names given by the caller; None = those that differ from the defaults

    def plugin_options(self):
        """The options that only kdgan_plugins.presets.cli_patch understands."""
        return {key: getattr(self, key) for key in _PLUGIN_OPTIONS}


_PLUGIN_OPTIONS = ('teacher', 'teacher_weights', 'teacher_config', 'teacher_dir', 'kd_p', 'kd_agkd_weight',
                   'kd_cgkd_weight', 'kd_dist', 'kd_labels', 'kd_template', 'kd_diversity', 'recon', 'recon_weight',
                   'lecam', 'precision', 'fake_reuse')


@dataclasses.dataclass
class Resolution:
    """What `resolve` found; `astuple()` is setup_training_loop_kwargs' answer."""
    desc: str
    args: dnnlib.EasyDict
    resolved: dict
    summary: dict
    cleanup: object = None  # A tempfile.TemporaryDirectory to remove after a dry run.

    def astuple(self):
        return self.desc, self.args, self.resolved, self.summary, self.cleanup


def _whole(x):
    """4.0 -> 4, so JSON and run names print what upstream prints; anything else as it is."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


# Metrics: names and detector files, checked before torch is imported.

def check_metrics(metrics, detector_dir=None, check_files=True):
    """The metric names as a list, each known and (with `check_files`) with its detector
    file at hand (metric_main.validate_metrics looks in `detector_dir`,
    $KDGAN_DETECTOR_DIR, the cache, then tries one quick download). Imports no torch."""
    from metrics import detectors, metric_main
    try:
        return metric_main.validate_metrics(list(metrics), detector_dir=detector_dir, check_files=check_files)
    except detectors.AssetUnavailableError as err:
        raise Unavailable(str(err.for_metrics(list(metrics), metric_main.required_detectors, 'train.py'))) from err
    except ValueError as err:
        raise Conflict(f'--metrics: {err}; or none') from err


# The plug-in registry (absent in an upstream tree without kdgan_plugins).

def _import_registry():
    try:
        from kdgan_plugins import registry
        return registry
    except ModuleNotFoundError as err:
        if err.name != 'kdgan_plugins':
            raise
    # Run from a checkout: the plug-ins sit beside the harness.
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(checkout, 'kdgan_plugins', 'registry.py')):
        return None
    sys.path.append(checkout)
    from kdgan_plugins import registry
    return registry


def load_registry():
    """kdgan_plugins.registry with the project's presets and $KDGAN_PLUGINS' modules
    registered, or None where kdgan_plugins is not installed."""
    registry = _import_registry()
    if registry is None:
        return None
    try:
        # register_all is idempotent: the project's presets are back even if a caller removed them.
        presets = load_presets()
        if presets is not None:
            presets.register_all()
        registry.load_plugins()
    except ImportError as err:
        raise Unavailable(str(err)) from err
    return registry


def load_presets():
    """kdgan_plugins.presets, or None in a tree whose kdgan_plugins has only the registry."""
    try:
        from kdgan_plugins import presets
    except ModuleNotFoundError as err:
        if err.name != 'kdgan_plugins.presets':
            raise
        return None
    return presets


def resolve_name(kind, name, builtins, registry, flag):
    """'builtin' or 'plugin': where a --cfg/--loss/--aug name is defined."""
    if name in builtins:
        return 'builtin'
    if registry is not None and registry.is_registered(kind, name):
        return 'plugin'
    known = ', '.join(list(builtins) + (registry.names(kind) if registry is not None else []))
    why = ' (kdgan_plugins is not installed, so only built-in names exist)' if registry is None else ''
    raise Conflict(f'{flag}: unknown name {name!r}; choose from {known}{why}')


@dataclasses.dataclass
class Names:
    """The three names after defaults, where each is defined, and its preset ({} if built in)."""
    cfg: str
    loss: str
    aug: str
    base: str
    source: dict
    preset: dict
    loss_given: bool
    aug_given: bool

    def is_plugin(self, kind):
        return self.source[kind] == 'plugin'

    @property
    def cfg_loss(self):
        """The loss that --cfg brings when --loss is not given."""
        return self.preset['cfg'].get('loss', BUILTIN_LOSS)


def _resolve_names(flags, registry):
    """--cfg first: a plug-in cfg names the default --loss and --aug."""
    source, preset = {}, {}
    source['cfg'] = resolve_name('cfg', flags.cfg, cfg_specs.cfg_specs, registry, '--cfg')
    preset['cfg'] = registry.lookup('cfg', flags.cfg) if source['cfg'] == 'plugin' else {}
    loss = flags.loss if flags.loss is not None else preset['cfg'].get('loss', BUILTIN_LOSS)
    source['loss'] = resolve_name('loss', loss, (BUILTIN_LOSS,), registry, '--loss')
    aug = flags.aug if flags.aug is not None else preset['cfg'].get('aug', 'ada')
    source['aug'] = resolve_name('aug', aug, BUILTIN_AUGS, registry, '--aug')
    for kind, name in (('loss', loss), ('aug', aug)):
        preset[kind] = registry.lookup(kind, name) if source[kind] == 'plugin' else {}
    base = preset['cfg'].get('base', 'auto') if source['cfg'] == 'plugin' else flags.cfg
    return Names(cfg=flags.cfg, loss=loss, aug=aug, base=base, source=source, preset=preset,
                 loss_given=flags.loss is not None, aug_given=flags.aug is not None)


# Data.

def materialize_data(data, dry_run):
    """(path for ImageFolderDataset, dry-run info) for a --data value. `builtin:NAME` is
    drawn once into dnnlib's cache (`<cache>/datasets/`); a dry run draws it into a
    temporary folder instead and the info is (that folder, the cache path a run would use)."""
    if not shapes_lib.is_builtin(data):
        return os.path.expanduser(data), None
    cache = dnnlib.util.make_cache_dir_path('datasets')
    try:
        if not dry_run:
            return shapes_lib.materialize_builtin(data, cache), None
        scratch = tempfile.TemporaryDirectory(prefix='kdgan-dry-run-')
        drawn = shapes_lib.materialize_builtin(data, scratch.name)
        return drawn, (scratch, os.path.join(cache, os.path.basename(drawn)))
    except ValueError as err:
        raise BadValue(str(err), '--data') from err
    except OSError as err:
        raise Unavailable(f'cannot write built-in data set {data} into {cache}: {err}; '
                          f'set $DNNLIB_CACHE_DIR to a writable folder') from err


def open_dataset(training_set_kwargs):
    from training.dataset import DatasetError
    try:
        return dnnlib.util.construct_class_by_name(**training_set_kwargs)
    except DatasetError as err:
        raise Unavailable(f'bad --data: {err}') from err


@dataclasses.dataclass
class DataInfo:
    """What the run needs to know about the data set beyond its kwargs."""
    name: str
    num_images: int
    resolution: int
    label_dim: int
    class_names: list | None
    channels: int = 3


def _measure(set_kwargs):
    """Open the data set once: fill in what only the files know, and describe it. Labels and
    (for zips up to a size) every member's checksum are checked here, before any run folder."""
    from training.dataset import DatasetError
    dataset = open_dataset(set_kwargs)
    try:
        set_kwargs.resolution = dataset.resolution
        set_kwargs.use_labels = dataset.has_labels
        set_kwargs.max_size = len(dataset)
        if hasattr(dataset, 'check_members'):
            dataset.check_members()
        return DataInfo(name=dataset.name, num_images=len(dataset), resolution=dataset.resolution,
                        label_dim=dataset.label_dim if dataset.has_labels else 0,
                        class_names=getattr(dataset, 'class_names', None), channels=dataset.num_channels)
    except DatasetError as err:
        raise Unavailable(f'bad --data: {err}') from err
    finally:
        dataset.close()


def _data_options(flags, device, tags):
    """training_set_kwargs, data_loader_kwargs, DataInfo and the dry-run folder; --cond,
    --subset and --mirror add their parts of the run name to `tags`."""
    if flags.data is None:
        raise Conflict("Missing option '--data'")
    path, dry = materialize_data(flags.data, flags.dry_run)
    set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=True,
                                 max_size=None, xflip=False)
    loader_kwargs = dnnlib.EasyDict(pin_memory=device == 'cuda', num_workers=flags.workers,
                                    prefetch_factor=2 if flags.workers > 0 else None)
    info = _measure(set_kwargs)
    if dry:
        set_kwargs.path = dry[1]  # The dry run reports where a real run keeps the drawn set.
    if not flags.cond:
        set_kwargs.use_labels = False
    elif set_kwargs.use_labels:
        tags.append('cond')
    else:
        raise Conflict(f'--cond=1 needs labels, but {flags.data} has none: add a dataset.json with '
                       f'"labels" (dataset_tool.py writes one), or drop --cond')
    if flags.subset is not None:
        total = info.num_images
        if not 1 <= flags.subset <= total:
            raise BadValue(f'{flags.subset} is outside 1..{total} (the data set has {total} images)', '--subset')
        tags.append(f'subset{flags.subset}')
        if flags.subset < total:
            set_kwargs.max_size = flags.subset
            set_kwargs.random_seed = flags.seed
    if flags.mirror:
        tags.append('mirror')
        set_kwargs.xflip = True
    return set_kwargs, loader_kwargs, info, dry[0] if dry else None


# Resume.

def _resume_checkpoint_module():
    try:
        from training import checkpoint
    except ModuleNotFoundError as err:
        if err.name != 'training.checkpoint':
            raise
        return None
    return checkpoint


def _latest_snapshot(folder, given):
    pickles = sorted(f for f in os.listdir(folder) if re.fullmatch(r'network-snapshot-\d+\.pkl', f))
    if not pickles:
        raise BadValue(f'{given}: run folder holds no network-snapshot-*.pkl', '--resume')
    return os.path.join(folder, pickles[-1])


def resolve_resume(resume, mode='auto'):
    """(resume_pkl, exact, description) for a --resume value and --resume-mode.

    A shortcut name means NVIDIA's pickle; a URL passes through; a local file,
    run folder or outdir goes to training.checkpoint.resolve_resume, which also
    says whether the whole training state comes back (`exact`; never with
    mode='networks'). A tree without that module resumes a run folder from its
    latest network pickle."""
    if resume in resume_specs:
        return resume_specs[resume], False, f'{resume} ({resume_specs[resume]})'
    if dnnlib.util.is_url(resume):
        return resume, False, resume
    path = os.path.expanduser(resume)
    if not os.path.exists(path):
        raise BadValue(f'{resume}: no such file or folder; give a network pickle, a checkpoint, a run '
                       f'folder, a URL, or one of {", ".join(resume_specs)}', '--resume')
    checkpoint = _resume_checkpoint_module()
    if checkpoint is None:
        path = _latest_snapshot(path, resume) if os.path.isdir(path) else path
        return path, False, path
    try:
        info = checkpoint.resolve_resume(path, mode=mode)
    except (OSError, ValueError) as err:
        raise BadValue(str(err).replace('--resume: ', ''), '--resume') from err
    if info is None:
        return path, False, path
    target = str(info.get('pkl') or info.get('ckpt') or path)
    exact = bool(info.get('exact'))
    what = f'{target} (checkpoint {info["ckpt"]})' if exact and info.get('ckpt') else target
    if not exact and info.get('ckpt'):
        what = f'{target} (networks only, weights from {info["ckpt"]})'
    return target, exact, what


def previous_transfer_options(resume_path):
    """ada_kimg and ema_rampup of the run that wrote an exact-resume checkpoint (its
    training_options.json), so that resuming a resumed run keeps them."""
    if os.path.isdir(resume_path):
        folder = resume_path
    else:
        folder = os.path.dirname(os.path.abspath(resume_path))
    try:
        with open(os.path.join(folder, 'training_options.json'), encoding='utf-8') as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return {key: saved[key] for key in ('ada_kimg', 'ema_rampup') if key in saved}


def with_recorded(flags):
    """Precedence step 0: (flags with the options not given filled from the resumed run's
    training_options.json, that RecordedRun), or (flags, None) when --resume names no train.py
    run. Merging twice changes nothing, so train.py may call it before `resolve` does."""
    from training import recorded_options
    if flags.resume is None or flags.resume == 'noresume' or flags.resume in resume_specs:
        return flags, None
    recorded = recorded_options.load(flags.resume, flags.resume_mode)
    if recorded is None:
        return flags, None
    return recorded_options.merge(flags, recorded), recorded


# Steps of `resolve`, in its order.

def _run_options(flags):
    """Processes, device, snapshot cadence, seed and grid size."""
    import torch
    if not (isinstance(flags.gpus, int) and flags.gpus >= 1):
        raise BadValue('must be a positive integer', '--gpus')
    device = flags.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise Conflict('--device=cuda, but no CUDA device is available; use --device=cpu')
    local_processes = int(os.environ.get('LOCAL_WORLD_SIZE', flags.gpus))   # torchrun: this node's share
    if device == 'cuda' and local_processes > torch.cuda.device_count():
        raise Conflict(f'--gpus={flags.gpus}, but only {torch.cuda.device_count()} CUDA device(s) exist; '
                       f'lower --gpus (or use --device=cpu, which runs {flags.gpus} processes with gloo)')
    if flags.snap < 1:
        raise BadValue('must be at least 1', '--snap')
    if not flags.tick > 0:
        raise BadValue('must be positive (kimg per tick)', '--tick')
    out = dnnlib.EasyDict(num_gpus=flags.gpus, device=device, image_snapshot_ticks=flags.snap,
                          network_snapshot_ticks=flags.snap, kimg_per_tick=flags.tick, random_seed=flags.seed)
    grid = flags.grid if flags.grid is not None else (CPU_GRID_CELLS if device == 'cpu' else None)
    if grid is not None:
        if grid < 1:
            raise BadValue('must be at least 1', '--grid')
        out.grid_max_cells = int(grid)
    return out


# Registry `defaults` keys that the table spells differently.
_TABLE_COLUMN = {'batch': 'mb', 'lr': 'lrate'}


def _table_spec(flags, names, resolution):
    """Precedence steps 1-3: the table row, the presets' defaults, the table-owned flags."""
    spec = cfg_specs.resolve_cfg(names.base, resolution, flags.gpus)
    for kind in ('cfg', 'loss', 'aug'):
        for key, value in names.preset[kind].get('defaults', {}).items():
            if key not in ('p', 'target', 'policy'):
                spec[_TABLE_COLUMN.get(key, key)] = value
    by_flag = dict(mb=flags.batch, lrate=flags.lr, kimg=flags.kimg, gamma=flags.gamma, map=flags.map_depth,
                   mbstd=flags.mbstd_group, fmaps=None if flags.cbase is None else flags.cbase / 32768)
    spec.update({column: value for column, value in by_flag.items() if value is not None})
    if flags.ema is not None:
        if not flags.ema > 0:
            raise BadValue('must be positive (kimg)', '--ema')
        spec.ema = flags.ema
    if flags.ema_rampup is not None:
        spec.ramp = ema_rampup_value(flags.ema_rampup)
    return spec


def ema_rampup_value(value):
    """--ema-rampup as training_loop's ema_rampup: a positive number (G_ema's half-life is at most
    that fraction of the images seen so far), or None for 'none'/'off' (the cfg's half-life from
    the first image: early snapshots then barely move from the initial G)."""
    if isinstance(value, str) and value.strip().lower() in ('none', 'off'):
        return None
    try:
        ramp = float(value)
    except (TypeError, ValueError):
        raise BadValue(f'{value!r} is not a number; give e.g. 0.05, or none to turn the ramp-up off',
                       '--ema-rampup') from None
    if not 0 < ramp < float('inf'):
        raise BadValue(f'{value} is out of range: must be > 0 (e.g. 0.05), or none to turn the ramp-up off',
                       '--ema-rampup')
    return _whole(ramp)


def _hyper_tags(flags, names, tags):
    """Check the table-owned flags and name them in the run folder."""
    tags.append(flags.cfg)
    if flags.gamma is not None:
        if flags.gamma < 0:
            raise BadValue('must be >= 0', '--gamma')
        tags.append(f'gamma{flags.gamma:g}')
    if flags.kimg is not None:
        if not flags.kimg > 0:
            raise BadValue('must be positive', '--kimg')
        tags.append(f'kimg{flags.kimg}')
    if flags.lr is not None and not flags.lr > 0:
        raise BadValue('must be positive', '--lr')
    if flags.batch is not None:
        if flags.batch < 1:
            raise BadValue('must be at least 1', '--batch')
        if flags.batch % flags.gpus != 0:
            suggestion = max(flags.gpus, flags.batch - flags.batch % flags.gpus)
            raise Conflict(f'--batch={flags.batch} must be divisible by --gpus={flags.gpus}, e.g. '
                           f'--batch={suggestion}')
        tags.append(f'batch{flags.batch}')
    if names.loss_given and names.loss != names.cfg_loss:
        tags.append(names.loss)


def _split_batch(spec, gpus, from_table, cfg):
    """(batch_size, batch_gpu, note). A table batch keeps its reference per-GPU batch, as
    upstream does; one that does not split over `gpus` (the table assumes a power of two)
    is rounded down, to whole minibatch-stddev groups where it can be."""
    note = None
    if from_table and spec.mb % gpus != 0:
        whole_groups = bool(spec.mbstd) and spec.mb >= gpus * spec.mbstd  # mbstd is None for some plug-ins.
        step = gpus * spec.mbstd if whole_groups else gpus
        before = spec.mb
        spec.mb = max(spec.mb - spec.mb % step, gpus)
        note = f'batch {before} of cfg {cfg} rounded down to {spec.mb} to split over {gpus} processes'
        print(f'Note: {note}; pass --batch to choose another.')
    total = int(spec.mb)
    if from_table:
        per_gpu = max(min(spec.mb // spec.ref_gpus, spec.mb // gpus), 1)
    else:
        per_gpu = spec.mb // gpus
    if total % (per_gpu * gpus) != 0:
        per_gpu = total // gpus
    return total, int(per_gpu), note


def _sections(spec, names, registry, presets):
    """Precedence step 4: the option sections built from `spec`, then patched by the
    presets. Returns (sections, extra top-level loop options)."""
    built = cfg_specs.network_kwargs(spec, cfg=names.base)
    # A copy: a cfg preset patching a section of the same class (biggan_cifar's StyleGAN2Loss) must
    # leave `built` as it was, for --loss=stylegan2 to put back.
    sections = dnnlib.EasyDict(copy.deepcopy(built), augment_kwargs=None)
    loop_extra = {}
    if names.is_plugin('cfg'):
        registry.apply('cfg', names.cfg, sections)
        if presets is not None:
            loop_extra = presets.loop_options(names.cfg)  # FastGAN: no lazy regularisation.
        if not names.is_plugin('loss') and names.cfg_loss != BUILTIN_LOSS:
            sections.loss_kwargs = copy.deepcopy(built.loss_kwargs)  # --loss=stylegan2 on such a cfg.
    if names.is_plugin('loss'):
        if presets is not None:
            presets.apply_loss_preset(names.loss, sections)  # kdgan.* wrap the cfg's D.
        else:
            registry.apply('loss', names.loss, sections)
    return sections, loop_extra


@dataclasses.dataclass
class AugChoice:
    """The augmentation's loop options and how the run name shows them."""
    ada_target: float | None
    augment_p: float
    augpipe: str
    ada_kimg: float | None = None

    @property
    def adaptive(self):
        return self.ada_target is not None


def _check_probability(value, flag):
    if not 0 <= value <= 1:
        raise BadValue('must be between 0 and 1', flag)


# Ranges of the numeric options not checked where they are used: (Flags field, lowest, lowest
# included, highest or None). NaN and infinities always fail.
_RANGES = (
    ('seed', 0, True, 2 ** 32 - 1), ('gamma', 0, True, None), ('kimg', 0, False, None), ('tick', 0, False, None),
    ('kd_p', 0, True, 1), ('kd_agkd_weight', 0, True, None), ('kd_cgkd_weight', 0, True, None),
    ('kd_diversity', 0, True, None), ('recon_weight', 0, True, None), ('lecam', 0, True, None),
)


def _check_ranges(flags):
    """Each numeric option within its range (the same check for the command line and for Flags built in code)."""
    for field, low, low_included, high in _RANGES:
        value = getattr(flags, field, None)
        if value is None:
            continue
        flag = '--' + field.replace('_', '-')
        if not math.isfinite(value):
            raise BadValue(f'{value} is not a finite number', flag)
        if high is not None and not low <= value <= high:
            raise BadValue(f'must be between {low} and {high}', flag)
        if value < low or (value == low and not low_included):
            raise BadValue(f'must be >= {low}' if low_included else 'must be positive', flag)


def _aug_choice(flags, names):
    """Start values for --aug, then --p, --target, --ada-kimg and --augpipe checked against it."""
    aug, plugin = names.aug, names.is_plugin('aug')
    preset_defaults = names.preset['aug'].get('defaults', {})
    if aug == 'fixed' and flags.p is None:
        raise Conflict('--aug=fixed needs --p (the fixed augmentation probability, e.g. --p=0.2)')
    if plugin:
        choice = AugChoice(ada_target=preset_defaults.get('target', None), augment_p=preset_defaults.get('p', 0),
                           augpipe=DEFAULT_AUGPIPE)
    else:
        choice = AugChoice(ada_target=DEFAULT_ADA_TARGET if aug == 'ada' else None, augment_p=0,
                           augpipe=DEFAULT_AUGPIPE)
    if choice.adaptive:
        choice.ada_kimg = DEFAULT_ADA_KIMG
    if flags.p is not None:
        if aug != 'fixed' and not (plugin and 'p' in preset_defaults):
            raise Conflict(f'--p sets the probability of --aug=fixed; it does not apply to --aug={aug}')
        _check_probability(flags.p, '--p')
        choice.augment_p = flags.p
    if flags.target is not None:
        if not choice.adaptive:
            raise Conflict(f'--target sets the ADA target; it needs --aug=ada (got --aug={aug})')
        _check_probability(flags.target, '--target')
        choice.ada_target = flags.target
    if flags.ada_kimg is not None:
        if not choice.adaptive:
            raise Conflict(f'--ada-kimg sets how fast ADA moves p; it needs --aug=ada (got --aug={aug})')
        if flags.ada_kimg <= 0:
            raise BadValue('must be > 0', '--ada-kimg')
    if flags.augpipe is not None:
        if flags.augpipe not in AUGPIPE_NAMES:
            raise BadValue(f'{flags.augpipe!r} is not one of {", ".join(AUGPIPE_NAMES)}', '--augpipe')
        if aug not in ('ada', 'fixed'):
            raise Conflict(f'--augpipe chooses the ADA pipe; it does not apply to --aug={aug}')
        choice.augpipe = flags.augpipe
    return choice


def _aug_tags(flags, names, tags):
    if names.aug != 'ada' or names.aug_given:
        tags.append(names.aug)
    for value, label in ((flags.p, 'p'), (flags.target, 'target'), (flags.ada_kimg, 'adakimg')):
        if value is not None:
            tags.append(f'{label}{value:g}')
    if flags.augpipe is not None:
        tags.append(flags.augpipe)


def _apply_augment(args, choice, names, registry):
    """augment_kwargs: AugmentPipe for ada/fixed; a plug-in aug then patches the options
    (from whatever augment_kwargs the cfg and loss left, or an empty one)."""
    if names.aug in ('ada', 'fixed'):
        from training.augment import augpipe_specs
        args.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe',
                                              **augpipe_specs[choice.augpipe])
    if names.is_plugin('aug'):
        args.augment_kwargs = args.augment_kwargs or dnnlib.EasyDict()
        registry.apply('aug', names.aug, args)


def _apply_diffaug_policy(flags, names, args):
    """A DiffAugment pipe's ops: --diffaug, else the last `policy` default of the cfg,
    loss and aug presets, else the aug preset's own."""
    policy = flags.diffaug
    for kind in ('cfg', 'loss', 'aug') if policy is None else ():
        policy = names.preset[kind].get('defaults', {}).get('policy', policy)
    if policy is None:
        return
    if not str((args.augment_kwargs or {}).get('class_name', '')).endswith('.DiffAugment'):
        if flags.diffaug is not None:
            raise Conflict(f'--diffaug chooses the ops of DiffAugment; add --aug=diffaug (got --aug={names.aug})')
        return
    from kdgan_plugins.augment.diffaugment import parse_policy
    try:
        parse_policy(policy)
    except ValueError as err:
        raise BadValue(str(err), '--diffaug') from err
    args.augment_kwargs.policy = policy


def _apply_resume(flags, args, tags):
    """resume_pkl and, for a networks-only resume, upstream's transfer settings.
    Returns (exact, description) or None."""
    args.resume_pkl = None
    if flags.resume is None or flags.resume == 'noresume':
        return None
    args.resume_pkl, exact, what = resolve_resume(flags.resume, flags.resume_mode)
    if flags.resume_mode != 'auto':
        args.resume_mode = flags.resume_mode
    tags.append(f'resume{flags.resume}' if flags.resume in resume_specs else 'resumecustom')
    if exact:
        args.update(previous_transfer_options(args.resume_pkl))  # It continues as it was.
    else:
        args.ada_kimg = TRANSFER_ADA_KIMG
        args.ema_rampup = None  # A trained network's EMA needs no ramp-up.
    return exact, what


# Explicit flags: one patch, merged last (precedence step 5). Each capacity flag's
# targets, in the order the patch is built.
_CAPACITY_TARGETS = (
    ('cbase', ('G_kwargs.synthesis_kwargs.channel_base', 'D_kwargs.channel_base')),
    ('cmax', ('G_kwargs.synthesis_kwargs.channel_max', 'D_kwargs.channel_max')),
    ('map_depth', ('G_kwargs.mapping_kwargs.num_layers',)),
    ('mbstd_group', ('D_kwargs.epilogue_kwargs.mbstd_group_size',)),
)
_FP32_SETTINGS = (('G_kwargs.synthesis_kwargs.num_fp16_res', 0), ('D_kwargs.num_fp16_res', 0),
                  ('G_kwargs.synthesis_kwargs.conv_clamp', None), ('D_kwargs.conv_clamp', None))
_NHWC_SETTINGS = (('G_kwargs.synthesis_kwargs.fp16_channels_last', True),
                  ('D_kwargs.block_kwargs.fp16_channels_last', True))


def _apply_ema_bn(flags, args):
    """--ema-bn beats the cfg's ema_bn; only cfgs that set one (their G has batch norm) take it."""
    if flags.ema_bn is None:
        return
    if flags.ema_bn not in EMA_BN_MODES:
        raise BadValue(f"must be one of {', '.join(EMA_BN_MODES)}", '--ema-bn')
    if 'ema_bn' not in args:
        raise Conflict(f'--ema-bn applies to cfgs that offer a choice of batch-norm statistics for G_ema '
                       f'(fastgan, fastgan_lite); --cfg={flags.cfg} does not')
    args.ema_bn = flags.ema_bn


def _put(patch, where, value):
    """patch['a']['b']['c'] = value for where = 'a.b.c', making the levels on the way."""
    *parents, leaf = where.split('.')
    node = patch
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def _width_flags(flags, args):
    """{target: value} for --ngf/--ndf. StyleGAN2 networks are sized by --cbase/--cmax (and
    have --map-depth); a cfg whose G takes `ngf` (FastGAN) is sized by --ngf/--ndf instead.
    Which kind a cfg is comes from its resolved G_kwargs, not from a list of names."""
    by_width = 'ngf' in (args.G_kwargs or {})
    for flag, value in (('--cbase', flags.cbase), ('--cmax', flags.cmax), ('--map-depth', flags.map_depth)):
        if value is not None and by_width:
            extra = ', and has no mapping network' if flag == '--map-depth' else ''
            raise Conflict(f'{flag} sets StyleGAN2 capacity; --cfg={flags.cfg} sizes its networks by '
                           f'ngf/ndf (use --ngf/--ndf){extra}')
    widths = {}
    for flag, value, section in (('--ngf', flags.ngf, 'G_kwargs'), ('--ndf', flags.ndf, 'D_kwargs')):
        if value is None:
            continue
        key = flag[2:]
        if not by_width or key not in (args[section] or {}):
            raise Conflict(f'{flag} applies to cfgs whose networks take {key} (--cfg=fastgan, '
                           f'fastgan_lite); for --cfg={flags.cfg} use --cbase/--cmax')
        if value < 1:
            raise BadValue('must be positive', flag)
        widths[f'{section}.{key}'] = int(value)
    return widths


def _plugin_patch(flags, args, presets, info):
    """--teacher/--kd-*/--recon as a section patch (kdgan_plugins.presets.cli_patch)."""
    options = flags.plugin_options()
    if presets is None:
        given = [key for key, value in options.items() if value is not None]
        if given:
            raise Conflict('--' + given[0].replace('_', '-') + ' needs kdgan_plugins.presets, which is not '
                           'installed in this tree')
        return {}
    try:
        return presets.cli_patch(args, class_names=info.class_names, detector_dir=flags.detector_dir,
                                 seed=flags.seed, **options)
    except ValueError as err:
        raise Conflict(str(err)) from err


def _deep_merge(dst, patch):
    """registry.deep_merge's rule, for a tree without kdgan_plugins: dicts merge key by
    key, anything else replaces (copied)."""
    for key, value in patch.items():
        if not isinstance(value, dict):
            dst[key] = copy.deepcopy(value)
        elif isinstance(dst.get(key), dict):
            _deep_merge(dst[key], value)
        else:
            dst[key] = _deep_merge(dnnlib.EasyDict(), value)
    return dst


def _explicit_patch(flags, args, merge, presets, info):
    """Every explicit flag that lands in a section, as {section: nested patch}."""
    widths = _width_flags(flags, args)
    patch = {}
    if flags.gamma is not None:
        _put(patch, 'loss_kwargs.r1_gamma', flags.gamma)
    if flags.freezed:
        _put(patch, 'D_kwargs.block_kwargs.freeze_layers', flags.freezed)
    for where, value in widths.items():
        _put(patch, where, value)
    for name, targets in _CAPACITY_TARGETS:
        value = getattr(flags, name)
        for where in targets if value is not None else ():
            _put(patch, where, int(value))
    settings = (_FP32_SETTINGS if flags.fp32 else ()) + (_NHWC_SETTINGS if flags.nhwc else ())
    for where, value in settings:
        _put(patch, where, value)
    for section, part in _plugin_patch(flags, args, presets, info).items():
        merge(patch.setdefault(section, {}), part)
    return patch


# The report of where each name came from.

_BUILTIN_HOME = {'cfg': 'training.cfg_specs', 'loss': 'training.loss', 'aug': 'training.augment.augpipe_specs'}


def _source_text(names, kind):
    if names.is_plugin(kind):
        return 'plug-in (kdgan_plugins.registry)'
    return f'built-in ({_BUILTIN_HOME[kind]})'


def _term_summary(loss_kwargs):
    """{term: 'Class (kind or dist)'} for a loss made of composable terms."""
    terms = (loss_kwargs or {}).get('terms') or {}
    if isinstance(terms, dict):
        pairs = list(terms.items())
    else:
        pairs = [(term.get('name'), term) for term in terms if isinstance(term, dict)]
    summary = {}
    for name, term in pairs:
        if not (isinstance(term, dict) and term.get('class_name')):
            continue
        detail = term.get('kind') or term.get('dist')
        label = term['class_name'].rsplit('.', 1)[-1]
        summary[str(name)] = f'{label} ({detail})' if detail else label
    return summary


def _report(flags, names, spec, args, choice, explicit, batch_note, resume):
    """The `resolved` dict that --dry-run prints under 'Resolved names'."""
    columns = [field.name for field in dataclasses.fields(cfg_specs.TableRow)]
    D_kwargs = args.D_kwargs or {}
    report = dict(
        cfg=dict(name=names.cfg, source=_source_text(names, 'cfg'), base=names.base,
                 table={column: spec[column] for column in columns}),
        loss=dict(name=names.loss, source=_source_text(names, 'loss'),
                  class_name=(args.loss_kwargs or {}).get('class_name'), terms=_term_summary(args.loss_kwargs)),
        D=dict(class_name=D_kwargs.get('class_name'), backbone_class_name=D_kwargs.get('backbone_class_name')),
        aug=dict(name=names.aug, source=_source_text(names, 'aug'),
                 class_name=(args.augment_kwargs or {}).get('class_name'), adaptive=choice.adaptive,
                 augpipe=choice.augpipe if names.aug in ('ada', 'fixed') else None),
        explicit_flags=explicit,
    )
    if batch_note is not None:
        report['cfg']['batch_note'] = batch_note
    for kind in ('cfg', 'loss', 'aug'):
        if names.is_plugin(kind):
            report[kind]['preset'] = names.preset[kind]
    if resume is not None:
        exact = resume[0]
        note = 'restores the full training state' if exact else \
            'networks only: ada_kimg=100, ema_rampup=None (as upstream)'
        report['resume'] = dict(value=flags.resume, resume_pkl=args.resume_pkl, exact=exact, note=note)
    return report


def resolve(flags):
    """The whole resolution, in the precedence order of the module docstring."""
    flags, recorded = with_recorded(flags)
    _check_ranges(flags)
    flags = dataclasses.replace(flags, kimg=_whole(flags.kimg), tick=_whole(flags.tick))
    args = dnnlib.EasyDict()
    args.metrics = check_metrics(flags.metrics, detector_dir=flags.detector_dir, check_files=not flags.dry_run)
    registry = load_registry()
    args.update(_run_options(flags))
    tags = []
    args.training_set_kwargs, args.data_loader_kwargs, info, cleanup = _data_options(flags, args.device, tags)
    names = _resolve_names(flags, registry)
    spec = _table_spec(flags, names, info.resolution)
    _hyper_tags(flags, names, tags)
    args.batch_size, args.batch_gpu, batch_note = _split_batch(spec, flags.gpus, flags.batch is None, flags.cfg)
    args.total_kimg, args.ema_kimg, args.ema_rampup = spec.kimg, spec.ema, spec.ramp

    presets = load_presets() if registry is not None else None
    sections, loop_extra = _sections(spec, names, registry, presets)
    args.update(sections)
    args.update(loop_extra)

    choice = _aug_choice(flags, names)
    _aug_tags(flags, names, tags)
    args.ada_target, args.augment_p = choice.ada_target, choice.augment_p
    if choice.ada_kimg is not None:
        args.ada_kimg = choice.ada_kimg
    _apply_augment(args, choice, names, registry)
    _apply_diffaug_policy(flags, names, args)

    resume = _apply_resume(flags, args, tags)
    if flags.ada_kimg is not None:
        args.ada_kimg = flags.ada_kimg  # Beats the resume default and upstream's 500.
    if flags.ema_rampup is not None:
        args.ema_rampup = spec.ramp  # Beats the resume default too.
    _apply_ema_bn(flags, args)
    if flags.freezed:
        if flags.freezed < 0:
            raise BadValue('must be >= 0', '--freezed')
        tags.append(f'freezed{flags.freezed:d}')

    merge = registry.deep_merge if registry is not None else _deep_merge
    explicit = _explicit_patch(flags, args, merge, presets, info)
    for section, part in explicit.items():
        merge(args[section], part)
    args.cudnn_benchmark = not flags.nobench
    args.allow_tf32 = bool(flags.allow_tf32)
    if flags.workers < 0:
        raise BadValue('must be >= 0', '--workers')

    from training import preflight, recorded_options
    clash = recorded_options.conflict(flags, recorded, args) if recorded and resume and resume[0] else None
    if clash is not None:
        raise Conflict(f'--resume: {clash}')
    preflight.check_run(args, info, dry_run=flags.dry_run)
    report = _report(flags, names, spec, args, choice, explicit, batch_note, resume)
    if recorded is not None:
        report['recorded'] = dict(path=recorded.path, complete=recorded.complete,
                                  text=recorded_options.restored_text(flags, recorded))
    summary = dict(data=flags.data, num_images=info.num_images, resolution=info.resolution,
                   labels=info.label_dim)
    data = flags.data if shapes_lib.is_builtin(flags.data) else os.path.abspath(os.path.expanduser(flags.data))
    summary['record'] = recorded_options.record(dataclasses.replace(flags, data=data))  # for training_options.json
    return Resolution(desc='-'.join([info.name] + tags), args=args, resolved=report, summary=summary,
                      cleanup=cleanup)
