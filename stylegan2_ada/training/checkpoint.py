"""Exact-resume checkpoints: everything a run needs to continue as if never stopped.

Beside each `network-snapshot-<kimg>.pkl` (upstream's pickle, networks only)
the training loop writes `network-snapshot-<kimg>.ckpt.pt`: plain tensors,
numbers and strings, so `torch.load(path, weights_only=True)` reads it
without executing code. It holds:

- state_dicts of G, D, G_ema, the augment pipe, both optimisers;
- progress: cur_nimg, cur_tick, batch_idx, tick_start_nimg, elapsed time;
- ADA: augment p and the not-yet-used part of the `Loss/signs/real` statistics;
- the loop's latent/label generator state and the data sampler's position
  (items consumed per rank; the sampler is seeded, so it is replayed);
- per rank: RNG states (torch CPU, CUDA, numpy, python) and the loss's state
  (e.g. pl_mean);
- `options_json` and its hash: the training options that decide the
  trajectory. A resume with different options is refused, naming the options.

Files are written to a temporary name and renamed into place, so a crash
never leaves a half-written checkpoint. The training loop renames a snapshot's
checkpoint into place after its pickle (and model file): a snapshot counts as
complete only when its checkpoint exists, and a pickle without one is never
taken for a resume of a folder.

API for train.py:
    snapshot_pkl_name(nimg, previous_nimg) -> a snapshot's name (never one an earlier snapshot has)
    list_snapshots(run_dir)   -> a folder's snapshots in training order (old and new names)
    find_latest(run_dir)      -> the newest complete snapshot in a run folder, or None
    find_resumable(folder)    -> the same for a run folder's lineage or an --outdir
    resolve_resume(path, mode) -> EasyDict(pkl, ckpt, exact, kimg) describing a resume
    remove_stale_temporaries(folders) -> leftovers of killed writers, removed

The loop keeps everything a checkpoint holds in one `TrainingState`; this module
writes it (`training_state_dict`) and puts it back (`restore_networks`,
`restore_training_state`, `restore_rank_streams`), so the loop never needs to know
the file's layout.
"""

import collections
import hashlib
import json
import os
import random
import re

import numpy as np
import torch

import dnnlib

FORMAT_NAME = 'kdgan-exact-resume'
FORMAT_VERSION = 1
CKPT_SUFFIX = '.ckpt.pt'
# `network-snapshot-<kimg>[_with<images>img]<suffix>`: see snapshot_stem(). Groups: kimg, images, suffix.
_SNAPSHOT_RE = re.compile(r'^network-snapshot-(\d+)(?:_with(\d{3})img)?(\.pkl|\.ckpt\.pt|\.safetensors)$')
_RUN_FOLDER_RE = re.compile(r'^(\d+)-')
_TEMPORARY_RE = re.compile(r'^.+\.tmp(\d+)$')   # temporary_path()'s names


# Names and lookup.

def snapshot_stem(nimg, previous_nimg=None):
    """The part of a snapshot's (or image grid's) name that says when it was taken.

    Upstream's `<kimg:06d>` (whole kimg, rounded down) for the first snapshot a run folder
    holds in that kimg; `<kimg:06d>_with<NNN>img` for a later one in the same kimg (`NNN`
    images past it), where upstream would have overwritten the earlier file. `previous_nimg`
    is the image count of the folder's previous snapshot (None: there is none).

    Training order is name order, byte-wise (Python's sorted, `LC_ALL=C ls`: `000000.pkl` <
    `000000_with250img.pkl` < `000001.pkl` as '.' < '_') and in glibc locales such as
    en_US.UTF-8, which skip punctuation: there 'w' follows the first letter of every suffix
    (.pkl, .ckpt.pt, .safetensors, and .png for the grids)."""
    kimg, extra = divmod(int(nimg), 1000)
    if previous_nimg is None or int(previous_nimg) // 1000 != kimg:
        return '{:06d}'.format(kimg)
    return '{:06d}_with{:03d}img'.format(kimg, extra)


def snapshot_pkl_name(nimg, previous_nimg=None):
    return 'network-snapshot-{}.pkl'.format(snapshot_stem(nimg, previous_nimg))


def snapshot_order(name):
    """Sort key of a snapshot file name, old or new: (kimg, images past it; -1 for the plain
    name, which is the first of its kimg), or None for any other name."""
    m = _SNAPSHOT_RE.match(os.path.basename(name))
    if m is None:
        return None
    return int(m.group(1)), -1 if m.group(2) is None else int(m.group(2))


def ckpt_path_for(pkl_path):
    """`.../network-snapshot-000100.pkl` -> `.../network-snapshot-000100.ckpt.pt`."""
    base = pkl_path[:-len('.pkl')] if pkl_path.endswith('.pkl') else pkl_path
    return base + CKPT_SUFFIX


def pkl_path_for(ckpt_path):
    assert ckpt_path.endswith(CKPT_SUFFIX)
    return ckpt_path[:-len(CKPT_SUFFIX)] + '.pkl'


def temporary_path(path):
    """Where a writer of `path` puts its bytes before the rename (the pid tells whose they are)."""
    return '{}.tmp{}'.format(path, os.getpid())


def _snapshots(run_dir, suffix):
    """{snapshot_order key: path} of the snapshot files in `run_dir` with this suffix ('.pkl' or
    CKPT_SUFFIX); max() of the keys is the newest."""
    found = {}
    for fname in os.listdir(run_dir) if os.path.isdir(run_dir) else ():
        m = _SNAPSHOT_RE.match(fname)
        if m is not None and m.group(3) == suffix:
            found[snapshot_order(fname)] = os.path.join(run_dir, fname)
    return found


def list_snapshots(run_dir, suffix='.pkl'):
    """The snapshot files of `run_dir` with this suffix, oldest first (old and new names)."""
    found = _snapshots(run_dir, suffix)
    return [found[key] for key in sorted(found)]


def find_latest(run_dir):
    """The newest *complete* snapshot in `run_dir`: the newest one whose checkpoint exists
    (the checkpoint is renamed into place last, so it marks the snapshot as whole). Returns
    its .pkl path when the pickle is there too, else the .ckpt.pt; None when there is none."""
    done = _snapshots(run_dir, CKPT_SUFFIX)
    if not done:
        return None
    ckpt = done[max(done)]
    pkl = pkl_path_for(ckpt)
    return pkl if os.path.isfile(pkl) else ckpt


def _recorded_resume(run_dir):
    """The resume target a train.py run folder started from (its training_options.json), or None."""
    try:
        with open(os.path.join(run_dir, 'training_options.json'), encoding='utf-8') as f:
            source = json.load(f).get('resume_pkl')
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) and '://' not in source else None


def _latest_in_lineage(run_dir, visited=()):
    """find_latest(run_dir), or, for a resumed run that died before its first snapshot, the
    snapshot it had resumed from (followed back over any number of such runs)."""
    latest = find_latest(run_dir)
    if latest is not None or run_dir in visited:
        return latest
    source = _recorded_resume(run_dir)
    if source is None or not os.path.exists(source):
        return None
    if os.path.isdir(source):
        return _latest_in_lineage(source, visited + (run_dir,))
    ckpt = source if source.endswith(CKPT_SUFFIX) else ckpt_path_for(source)
    return source if os.path.isfile(ckpt) else None


def _run_folders(outdir):
    """train.py's run folders (`<id>-<desc>`) in `outdir`, newest id first."""
    found = []
    for name in os.listdir(outdir) if os.path.isdir(outdir) else ():
        m = _RUN_FOLDER_RE.match(name)
        if m and os.path.isdir(os.path.join(outdir, name)):
            found.append((int(m.group(1)), os.path.join(outdir, name)))
    return [path for _id, path in sorted(found, reverse=True)]


def find_resumable(folder):
    """The newest complete snapshot reachable from `folder`: a run folder (following a resumed
    run back to the folders it came from) or an --outdir (its newest run folder that leads to
    one). None when there is none."""
    latest = _latest_in_lineage(folder)
    if latest is not None or _snapshots(folder, '.pkl'):
        return latest
    for run_dir in _run_folders(folder):
        latest = _latest_in_lineage(run_dir)
        if latest is not None:
            return latest
    return None


def _newest_pickle(folder):
    """The newest network-snapshot-*.pkl in `folder` or its run folders (networks-only resume
    of a folder that has no checkpoint at all, such as upstream's)."""
    for run_dir in [folder] + _run_folders(folder):
        pickles = _snapshots(run_dir, '.pkl')
        if pickles:
            return pickles[max(pickles)]
    return None


def _no_snapshot_error(folder):
    text = '--resume: the folder {} holds no network-snapshot with its {} checkpoint'.format(folder, CKPT_SUFFIX)
    source = _recorded_resume(folder)
    if source is not None:
        text += ' (it started from {}, which has no checkpoint: give that file again)'.format(source)
    if _newest_pickle(folder) is not None:
        text += '; to start from its newest pickle\'s networks only, add --resume-mode=networks'
    return FileNotFoundError(text + '; or give a snapshot file')


def resolve_resume(path, mode='auto'):
    """What `--resume=path` means (mode 'auto' or 'networks', as --resume-mode).

    Returns None for None/'' and otherwise EasyDict(pkl, ckpt, exact, kimg):
    - a run folder or an --outdir: its newest complete snapshot (find_resumable), exact;
    - a `.ckpt.pt` file, or a `.pkl` with its `.ckpt.pt` beside it: exact;
    - a bare `.pkl` file, a URL or another file: networks only (upstream semantics).
    With mode='networks' the resume is never exact; the weights then come from the
    checkpoint where there is one (nothing is unpickled), else from the pickle, and a
    folder without any checkpoint offers its newest pickle.
    Raises FileNotFoundError with the fix when nothing usable is there.
    """
    if path is None or path == '':
        return None
    if mode not in ('auto', 'networks'):
        raise ValueError("resume mode must be 'auto' or 'networks', got {!r}".format(mode))
    path = str(path)
    is_url = '://' in path
    if not is_url:
        if os.path.isdir(path):
            latest = find_resumable(path)
            if latest is None and mode == 'networks':
                latest = _newest_pickle(path)
            if latest is None:
                raise _no_snapshot_error(path)
            path = latest
        elif not os.path.isfile(path):
            raise FileNotFoundError('--resume: {} does not exist; give a snapshot .pkl, a {} checkpoint, a '
                                    'run folder or an --outdir'.format(path, CKPT_SUFFIX))
    order = snapshot_order(path)
    kimg = order[0] if order else None
    if path.endswith(CKPT_SUFFIX):
        pkl, ckpt = pkl_path_for(path), path
        pkl = pkl if os.path.isfile(pkl) else None
    else:
        pkl, ckpt = path, (None if is_url else ckpt_path_for(path))
        ckpt = ckpt if ckpt is not None and path.endswith('.pkl') and os.path.isfile(ckpt) else None
    return dnnlib.EasyDict(pkl=pkl, ckpt=ckpt, exact=ckpt is not None and mode == 'auto', kimg=kimg)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folders):
    """Delete the temporary files (`<name>.tmp<pid>`) that writers killed mid-write left in
    `folders`; files of a process that still runs on this machine are kept. Returns the paths."""
    removed = []
    for folder in folders:
        for fname in os.listdir(folder) if os.path.isdir(folder) else ():
            m = _TEMPORARY_RE.match(fname)
            if m is None or _pid_alive(int(m.group(1))):
                continue
            path = os.path.join(folder, fname)
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def run_folder_family(run_dir, resume_path=None):
    """The folders whose leftovers a new run in `run_dir` cleans: its sibling run folders
    (the same --outdir) and the folders its resume came from."""
    folders = {os.path.abspath(run_dir)}
    parent = os.path.dirname(os.path.abspath(run_dir))
    if os.path.isdir(parent):
        folders.update(os.path.abspath(p) for p in _run_folders(parent))
    while resume_path and '://' not in resume_path and os.path.exists(resume_path):
        folder = os.path.abspath(resume_path if os.path.isdir(resume_path) else os.path.dirname(resume_path))
        if folder in folders and folder != os.path.abspath(run_dir):
            break
        folders.add(folder)
        resume_path = _recorded_resume(folder)
    return sorted(folders)


# Options that decide the trajectory.

def options_json(options):
    """Canonical JSON of an options dict (sorted keys; non-JSON values as strings)."""
    return json.dumps(options, sort_keys=True, default=str)


def options_hash(options):
    return hashlib.sha256(options_json(options).encode('utf-8')).hexdigest()[:16]


def option_differences(ckpt_state, options, shared_only=False):
    """[(name, checkpoint's value, value in `options`)] of the options that differ, as JSON values,
    sorted by name ('<absent>' where one side lacks it). `shared_only` compares only the names both
    hold: for a caller (train.py's preflight) that does not know every trajectory option yet."""
    return differing_options(json.loads(ckpt_state.get('options_json', '{}')), options, shared_only)


def differing_options(saved, options, shared_only=False):
    """option_differences for two options dicts (`saved` as recorded, `options` now)."""
    saved = json.loads(options_json(saved))
    now = json.loads(options_json(options))
    names = set(saved) & set(now) if shared_only else set(saved) | set(now)
    return [(key, saved.get(key, '<absent>'), now.get(key, '<absent>')) for key in sorted(names)
            if saved.get(key, '<absent>') != now.get(key, '<absent>')]


def check_options(ckpt_state, options, ckpt_path):
    """Refuse a resume whose training options differ from the checkpoint's."""
    if ckpt_state.get('options_hash') == options_hash(options):
        return
    diffs = ['  {}: checkpoint {} vs now {}'.format(key, json.dumps(saved), json.dumps(now))
             for key, saved, now in option_differences(ckpt_state, options)]
    raise ValueError('Cannot resume exactly from {}: the training options differ:\n{}\n'
                     'Use the same options, or start from its networks only (upstream semantics): '
                     'train.py --resume-mode=networks (training_loop: resume_mode=\'networks\').'.format(
                         ckpt_path, '\n'.join(diffs) or '  (hash differs)'))


# RNG states as weights-only-loadable values.

def capture_rng_state(device=None):
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        'torch_cpu': torch.get_rng_state(),
        'torch_cuda': None,
        'numpy': {'name': str(np_state[0]), 'keys': torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)),
                  'pos': int(np_state[2]), 'has_gauss': int(np_state[3]), 'cached_gaussian': float(np_state[4])},
        'python': {'version': int(py_state[0]), 'internal': torch.tensor(list(py_state[1]), dtype=torch.int64),
                   'gauss_next': py_state[2]},
    }
    if device is not None and torch.device(device).type == 'cuda':
        state['torch_cuda'] = torch.cuda.get_rng_state(torch.device(device))
    return state


def restore_rng_state(state, device=None):
    torch.set_rng_state(state['torch_cpu'])
    if state.get('torch_cuda') is not None and device is not None and torch.device(device).type == 'cuda':
        torch.cuda.set_rng_state(state['torch_cuda'], torch.device(device))
    s = state['numpy']
    np.random.set_state((s['name'], s['keys'].numpy().astype(np.uint32), s['pos'], s['has_gauss'],
                         s['cached_gaussian']))
    s = state['python']
    random.setstate((s['version'], tuple(int(v) for v in s['internal'].tolist()), s['gauss_next']))


# File I/O.

def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, dict):   # Plain dict also for EasyDict: weights_only loading knows no other classes.
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def save_checkpoint(state, path):
    """Write atomically: a temporary file in the same folder, then os.replace."""
    state = dict(state, format=FORMAT_NAME, version=FORMAT_VERSION)
    tmp = temporary_path(path)
    try:
        with open(tmp, 'wb') as f:
            torch.save(_to_cpu(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path):
    state = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(state, dict) or state.get('format') != FORMAT_NAME:
        raise ValueError('{} is not a {} checkpoint'.format(path, FORMAT_NAME))
    if state.get('version') != FORMAT_VERSION:
        raise ValueError('{}: checkpoint version {} is not supported (expected {})'.format(
            path, state.get('version'), FORMAT_VERSION))
    return state


# The training state and its checkpoint layout.

ADA_STAT = 'Loss/signs/real'   # The statistic ADA steers p by.

# The options that decide what training computes: an exact resume requires them equal.
# Their names and values are hashed into every checkpoint, so this list is part of the format.
TRAJECTORY_KEYS = ('training_set_kwargs', 'G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'augment_kwargs',
                   'loss_kwargs', 'random_seed', 'num_gpus', 'batch_size', 'batch_gpu', 'ema_kimg', 'ema_rampup',
                   'G_reg_interval', 'D_reg_interval', 'ada_target', 'ada_interval', 'ada_kimg', 'has_augment_pipe')


def trajectory_options(options):
    """The TRAJECTORY_KEYS entries of `options` (training_loop's keyword arguments plus
    `has_augment_pipe`), as stored in and compared against a checkpoint."""
    return {key: options[key] for key in TRAJECTORY_KEYS}


class TrainingState:
    """Everything that changes while training and must survive a restart, in one object.

    The loop fills it as it builds the run (networks, augment pipe and ADA statistics,
    optimisers and loss, the shared latent stream) and advances the counters; the
    functions below turn it into a checkpoint and back. The per-process random streams
    (torch, numpy, python) are global, so they travel beside it, per rank.
    """

    def __init__(self, options, random_seed, batch_per_rank):
        self.options = options                  # trajectory_options() of this run.
        self.random_seed = random_seed          # Seeds the data sampler and the latent stream.
        self.batch_per_rank = batch_per_rank    # Images each rank takes from the sampler per minibatch.
        self.G = self.D = self.G_ema = None
        self.augment_pipe = None
        self.ada_stats = None                   # training_stats.Collector of ADA_STAT, when ADA is on.
        self.optimizers = {}                    # 'G' and 'D'.
        self.loss = None
        self.latent_gen = None                  # torch.Generator shared by all ranks.
        self.cur_nimg = 0
        self.cur_tick = 0
        self.batch_idx = 0
        self.tick_start_nimg = 0
        self.elapsed_before = 0.0               # Training seconds spent by earlier sessions.


def images_consumed(ckpt):
    """How many sampler indices each rank had used when `ckpt` (or None: a fresh run) was written."""
    return 0 if ckpt is None else int(ckpt['sampler']['consumed_per_rank'])


def restore_networks(state, ckpt):
    """Weights first: they must be in place before they are summarised, broadcast and wrapped."""
    for key in ('G', 'D', 'G_ema'):
        getattr(state, key).load_state_dict(ckpt[key])


def copy_network_weights(state, ckpt):
    """Networks-only resume from a checkpoint: the tensors of G, D and G_ema that share a name
    and shape with the saved ones (upstream's rule for pickles), nothing unpickled."""
    for key in ('G', 'D', 'G_ema'):
        saved = ckpt[key]
        for name, tensor in list(getattr(state, key).named_parameters()) + list(getattr(state, key).named_buffers()):
            if name not in saved:
                continue
            if saved[name].shape != tensor.shape:
                raise ValueError('{}.{}: the checkpoint has shape {}, this network {}; resume from networks of '
                                 'the same architecture'.format(key, name, tuple(saved[name].shape),
                                                                tuple(tensor.shape)))
            with torch.no_grad():
                tensor.copy_(saved[name])


def restore_training_state(state, ckpt, rank):
    """Put back everything but the weights and the random streams, once `state` is fully built."""
    if state.augment_pipe is not None:
        state.augment_pipe.load_state_dict(ckpt['augment_pipe'])
    if state.ada_stats is not None and ckpt.get('ada') is not None:
        state.ada_stats.restore_backlog(ADA_STAT, ckpt['ada']['pending'])
    for name, opt in state.optimizers.items():
        opt.load_state_dict(ckpt['opt'][name])
    state.loss.load_state_dict(ckpt['ranks'][rank]['loss'])
    state.latent_gen.set_state(ckpt['latent_rng'])
    progress = ckpt['progress']
    state.cur_nimg = int(progress['cur_nimg'])
    state.cur_tick = int(progress['cur_tick'])
    state.batch_idx = int(progress['batch_idx'])
    state.tick_start_nimg = int(progress['tick_start_nimg'])   # Before cur_nimg after a stop mid-tick.
    state.elapsed_before = float(progress['elapsed_sec'])


def restore_rank_streams(ckpt, rank, device):
    """This rank's torch/numpy/python random streams as they were at the checkpoint. Last
    step of a resume: anything built before may draw from them."""
    restore_rng_state(ckpt['ranks'][rank]['rng'], device)


def gather_rank_states(state, device, num_ranks):
    """Each rank's own part of a checkpoint (random streams, loss state such as pl_mean),
    collected on every rank; a collective call when num_ranks > 1."""
    mine = _to_cpu(dict(rng=capture_rng_state(device), loss=state.loss.state_dict()))
    if num_ranks == 1:
        return [mine]
    everyone = [None] * num_ranks
    torch.distributed.all_gather_object(everyone, mine)
    return everyone


def training_state_dict(state, rank_states, elapsed_sec):
    """The checkpoint of `state` (for save_checkpoint); `elapsed_sec` counts earlier sessions too."""
    pipe = state.augment_pipe
    return dict(
        options_hash=options_hash(state.options),
        options_json=options_json(state.options),
        progress=dict(cur_nimg=state.cur_nimg, cur_tick=state.cur_tick, batch_idx=state.batch_idx,
                      tick_start_nimg=state.tick_start_nimg, elapsed_sec=elapsed_sec),
        G=state.G.state_dict(),
        D=state.D.state_dict(),
        G_ema=state.G_ema.state_dict(),
        augment_pipe=None if pipe is None else pipe.state_dict(),
        augment_p=0.0 if pipe is None else float(pipe.p),
        opt={name: opt.state_dict() for name, opt in state.optimizers.items()},
        ada=None if state.ada_stats is None else dict(pending=state.ada_stats.backlog(ADA_STAT)),
        latent_rng=state.latent_gen.get_state(),
        sampler=dict(seed=state.random_seed, consumed_per_rank=state.batch_idx * state.batch_per_rank),
        ranks=list(rank_states),
    )
