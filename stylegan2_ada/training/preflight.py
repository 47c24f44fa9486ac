"""Checks that need the resolved options, run before any run folder exists.

A run that fails minutes in, after its folder was made, leaves a half-written
folder behind (which then is the "newest run" that a resume looks at). What
can be known up front is checked here instead:

- the networks build for this data set (resolution, channels, labels) with the
  cfg's options: each one is constructed once, with its weights as meta tensors
  (shapes, no storage) where that is cheaper than a real build (see _meta_pays);
- a resume source holds tensors of the same shapes as these networks, read
  without unpickling where possible (the checkpoint, or the model file's
  header); a mismatch names a tensor and both shapes;
- the output folder can be created and written.

Errors are config.ConfigError subclasses, so train.py prints them as usage errors.
"""

import functools
import json
import os
import struct
import sys

import dnnlib


def _config():
    from training import config
    return config


_META_NUMEL = 4096   # Tensors this large (weights) are made as meta tensors; smaller ones stay real.


@functools.lru_cache(maxsize=None)
def _meta_mode_class():
    """A TorchFunctionMode under which the factories of large tensors make meta tensors (a shape and a
    dtype, no storage) and moving a meta tensor to a device keeps it meta, so a constructor runs as
    written without computing its weights. Small tensors (filters, constants) stay real: the ops a
    constructor applies to them run faster on data than through meta kernels. Made on first use: this
    module does not import torch up front."""
    import torch
    from torch.overrides import TorchFunctionMode
    factories = frozenset([torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn])
    moves = frozenset([torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda])

    def numel(args, kwargs):
        size = kwargs.get('size', args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else args)
        if not all(isinstance(n, int) for n in size):
            return 0
        total = 1
        for n in size:
            total *= n
        return total

    class MetaTensors(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in factories and numel(args if func is not torch.full else args[:1], kwargs) >= _META_NUMEL:
                kwargs['device'] = 'meta'
            elif func in moves and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
                if func is not torch.Tensor.to:
                    return args[0]
                kwargs.pop('device', None)   # a dtype (given, or another tensor's) still applies
                args = (args[0],) + tuple(a.dtype if isinstance(a, torch.Tensor) else a for a in args[1:]
                                          if not isinstance(a, (torch.device, str)))
            return func(*args, **kwargs)

    return MetaTensors


def _construct(kwargs, dims, meta):
    """One network, with meta weights when `meta`: then on the CPU when its class cannot be built that
    way, and whenever the build fails, so that an error is the one a real build raises."""
    if meta:
        try:
            with _meta_mode_class()():
                return dnnlib.util.construct_class_by_name(**kwargs, **dims)
        except Exception:   # whatever the meta build trips on, the real build below decides
            pass
    return dnnlib.util.construct_class_by_name(**kwargs, **dims)


def build_networks(args, dims, meta=False):
    """G and D built from the resolved kwargs and the data set's dims, outside the caller's random
    stream. `meta`: the large weights as meta tensors (only names and shapes are checked)."""
    import torch
    nets = {}
    with torch.random.fork_rng(devices=[]):
        for key in ('G', 'D'):
            kwargs = args[f'{key}_kwargs']
            try:
                nets[key] = _construct(kwargs, dims, meta)
            except (ValueError, AssertionError, TypeError, KeyError) as err:
                raise _config().Conflict(
                    f'{kwargs.get("class_name")} cannot be built for this data set ({dims["img_resolution"]}x'
                    f'{dims["img_resolution"]}, {dims["img_channels"]} channel(s), {dims["c_dim"]} label dims): '
                    f'{type(err).__name__}: {err}; choose a --cfg that supports it or convert the data with '
                    'dataset_tool.py --resolution') from err
    return nets


def _meta_pays():
    """Meta weights need torch's compiler stack: with it loaded they build 3-8x faster than real ones,
    but importing it costs a few CPU seconds, more than a real build of most networks. Any process that
    builds an optimiser loads it; one that has not yet (a fresh train.py here, which a later start-up
    check may still stop) builds for real."""
    return 'torch._dynamo' in sys.modules


def check_networks(args, info, dry_run=False):
    """Build G and D as the training loop will; returns them for check_resume. A dry run shows options
    that name classes not importable here (returning None) instead of failing on them."""
    dims = dict(c_dim=info.label_dim if args.training_set_kwargs.get('use_labels') else 0,
                img_resolution=info.resolution, img_channels=info.channels)
    try:
        return build_networks(args, dims, meta=_meta_pays())
    except (ImportError, AttributeError):
        if dry_run:
            return None
        raise


def check_run(args, info, dry_run=False):
    """Everything this module checks that needs the resolved options (called by config.resolve)."""
    nets = check_networks(args, info, dry_run)
    if nets is not None:
        check_resume(args, nets, dry_run)


def _shapes_of_model_file(path):
    """{key: {name: shape}} from a model file's header alone."""
    with open(path, 'rb') as f:
        size = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(size))
    shapes = {}
    for full, entry in header.items():
        if full != '__metadata__' and '/' in full:
            key, name = full.split('/', 1)
            shapes.setdefault(key, {})[name] = tuple(entry['shape'])
    return shapes


def _resume_shapes(args):
    """({key: {name: shape}} of G and D in the resume source, description), reading as little as possible."""
    import torch
    from training import checkpoint, model_file
    where = checkpoint.resolve_resume(args.resume_pkl, mode=args.get('resume_mode', 'auto'))
    if where.ckpt is not None:
        try:
            state = torch.load(where.ckpt, map_location='cpu', weights_only=True, mmap=True)
        except RuntimeError:   # not in the zip layout that mmap needs
            state = torch.load(where.ckpt, map_location='cpu', weights_only=True)
        _check_exact_options(state, args, where.ckpt)
        writers = len(state.get('ranks', ()))
        if where.exact and writers and writers != args.num_gpus:
            raise _config().Conflict(f'--resume: {where.ckpt} was written by {writers} process(es) and continues '
                                     f'exactly only with as many: use --gpus={writers} (or --resume-mode=networks)')
        return {key: {name: tuple(t.shape) for name, t in state[key].items()} for key in ('G', 'D')}, where.ckpt
    local = '://' not in where.pkl
    model = model_file.model_path_for(where.pkl) if local else None
    if model is not None and os.path.isfile(model):
        return _shapes_of_model_file(model), model
    import legacy
    nets = legacy.load_network(where.pkl, prefer_model_file=False)
    return {key: {name: tuple(t.shape) for name, t in nets[key].state_dict().items()}
            for key in ('G', 'D') if nets.get(key) is not None}, where.pkl


def _check_exact_options(state, args, ckpt_path):
    """An exact resume continues the recorded run: the options both record must agree (the loop checks
    all of them again with checkpoint.check_options; this names the ones known here before a run folder
    is made)."""
    from training import checkpoint
    if args.get('resume_mode', 'auto') != 'auto':
        return
    try:
        differ = [key for key, _saved, _now in checkpoint.option_differences(state, args, shared_only=True)]
    except ValueError:   # unreadable options_json: the loop's own check reports it
        return
    if differ:
        raise _config().Conflict(f'--resume: {ckpt_path} continues exactly only with its own options, and these '
                                 f'differ: {", ".join(differ)}; use the same ones, or start from its networks '
                                 'only with --resume-mode=networks')


def check_resume(args, nets, dry_run=False):
    """The resume source's G and D tensors fit the networks this run builds. A dry run does not
    insist on reading the source (the real run will)."""
    if not args.get('resume_pkl'):
        return
    if dry_run and '://' in str(args.resume_pkl):
        return   # a dry run downloads nothing (offline, a download retries for a minute before failing)
    try:
        saved, source = _resume_shapes(args)
    except _config().ConfigError:
        raise
    except Exception as err:   # any unreadable source: one line, before the run folder
        if dry_run:
            return
        text = str(err) if isinstance(err, FileNotFoundError) else f'cannot read {args.resume_pkl} ({err})'
        raise _config().Unavailable(text if text.startswith('--resume') else f'--resume: {text}') from err
    for key, net in nets.items():
        theirs = saved.get(key)
        if theirs is None:
            continue
        mine = {name: tuple(t.shape) for name, t in net.state_dict().items()}
        common = sorted(set(mine) & set(theirs))
        if not common:
            raise _config().Conflict(f'--resume: {source} holds a {key} of another architecture (no tensor '
                                     f'names in common with {args[key + "_kwargs"].class_name}); use the --cfg '
                                     'it was trained with')
        for name in common:
            if mine[name] != theirs[name]:
                raise _config().Conflict(
                    f'--resume: {key}.{name} has shape {list(theirs[name])} in {source} but {list(mine[name])} '
                    'in this run: the resolution, channels, labels, --cfg or --cbase/--cmax differ from the run '
                    'it came from; use the same ones')


def check_outdir(outdir):
    """The folder can be created (no regular file on its path) and written; creates nothing."""
    path = os.path.abspath(os.path.expanduser(str(outdir)))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise _config().BadValue(f'{probe} is a file, so {path} cannot be a folder; choose another --outdir',
                                 '--outdir')
    if not os.access(probe, os.W_OK | os.X_OK):
        raise _config().BadValue(f'cannot write in {probe} (permission denied); choose another --outdir', '--outdir')
