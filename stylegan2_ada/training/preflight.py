"""Checks that need the resolved options, run before any run folder exists.

A run that fails minutes in, after its folder was made, leaves a half-written
folder behind (which then is the "newest run" that a resume looks at). What
can be known up front is checked here instead:

- the networks build for this data set (resolution, channels, labels) with the
  cfg's options: each one is constructed once on the CPU;
- a resume source holds tensors of the same shapes as these networks, read
  without unpickling where possible (the checkpoint, or the model file's
  header); a mismatch names a tensor and both shapes;
- the output folder can be created and written.

Errors are config.ConfigError subclasses, so train.py prints them as usage errors.
"""

import json
import os
import struct

import dnnlib


def _config():
    from training import config
    return config


def build_networks(args, dims):
    """G and D built from the resolved kwargs and the data set's dims, outside the caller's random stream."""
    import torch
    nets = {}
    with torch.random.fork_rng(devices=[]):
        for key in ('G', 'D'):
            kwargs = args[f'{key}_kwargs']
            try:
                nets[key] = dnnlib.util.construct_class_by_name(**kwargs, **dims)
            except (ValueError, AssertionError, TypeError, KeyError) as err:
                raise _config().Conflict(
                    f'{kwargs.get("class_name")} cannot be built for this data set ({dims["img_resolution"]}x'
                    f'{dims["img_resolution"]}, {dims["img_channels"]} channel(s), {dims["c_dim"]} label dims): '
                    f'{type(err).__name__}: {err}; choose a --cfg that supports it or convert the data with '
                    'dataset_tool.py --resolution') from err
    return nets


def check_networks(args, info, dry_run=False):
    """Build G and D as the training loop will; returns them for check_resume. A dry run shows options
    that name classes not importable here (returning None) instead of failing on them."""
    dims = dict(c_dim=info.label_dim if args.training_set_kwargs.get('use_labels') else 0,
                img_resolution=info.resolution, img_channels=info.channels)
    try:
        return build_networks(args, dims)
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
    all of them again; this names the ones known here before a run folder is made)."""
    if args.get('resume_mode', 'auto') != 'auto':
        return
    try:
        saved = json.loads(state.get('options_json', '{}'))
    except ValueError:
        return
    differ = [key for key in sorted(set(saved) & set(args))
              if saved[key] != json.loads(json.dumps(args[key], sort_keys=True, default=str))]
    if differ:
        raise _config().Conflict(f'--resume: {ckpt_path} continues exactly only with its own options, and these '
                                 f'differ: {", ".join(differ)}; use the same ones, or start from its networks '
                                 'only with --resume-mode=networks')


def check_resume(args, nets, dry_run=False):
    """The resume source's G and D tensors fit the networks this run builds. A dry run does not
    insist on reading the source (the real run will)."""
    if not args.get('resume_pkl'):
        return
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
