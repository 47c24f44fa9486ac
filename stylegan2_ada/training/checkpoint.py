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
never leaves a half-written checkpoint.

API for train.py:
    find_latest(run_dir)  -> path of the newest snapshot in a run folder, or None
    resolve_resume(path)  -> EasyDict(pkl, ckpt, exact, kimg) describing a resume

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
_SNAPSHOT_RE = re.compile(r'^network-snapshot-(\d+)(\.pkl|\.ckpt\.pt)$')


# Names and lookup.

def snapshot_pkl_name(kimg):
    return 'network-snapshot-{:06d}.pkl'.format(int(kimg))


def ckpt_path_for(pkl_path):
    """`.../network-snapshot-000100.pkl` -> `.../network-snapshot-000100.ckpt.pt`."""
    base = pkl_path[:-len('.pkl')] if pkl_path.endswith('.pkl') else pkl_path
    return base + CKPT_SUFFIX


def pkl_path_for(ckpt_path):
    assert ckpt_path.endswith(CKPT_SUFFIX)
    return ckpt_path[:-len(CKPT_SUFFIX)] + '.pkl'


def find_latest(run_dir):
    """The newest snapshot in `run_dir` (highest kimg; the .pkl path when it exists, else
    the .ckpt.pt), or None when the folder holds none."""
    if not os.path.isdir(run_dir):
        return None
    best = None
    for fname in os.listdir(run_dir):
        m = _SNAPSHOT_RE.match(fname)
        if m is None:
            continue
        kimg = int(m.group(1))
        pkl = os.path.join(run_dir, 'network-snapshot-{}.pkl'.format(m.group(1)))
        path = pkl if os.path.isfile(pkl) else os.path.join(run_dir, fname)
        if best is None or kimg > best[0]:
            best = (kimg, path)
    return None if best is None else best[1]


def resolve_resume(path):
    """What `--resume=path` means.

    Returns None for None/'' and otherwise EasyDict(pkl, ckpt, exact, kimg):
    - a run folder: its latest snapshot (exact when its checkpoint exists);
    - a `.ckpt.pt` file: exact resume (`pkl` is the sibling pickle if present);
    - a `.pkl` file: exact when a sibling `.ckpt.pt` exists, else networks only;
    - a URL or other path: networks only (upstream semantics).
    Raises FileNotFoundError with the fix when a local path does not exist.
    """
    if path is None or path == '':
        return None
    path = str(path)
    is_url = '://' in path
    if not is_url:
        if os.path.isdir(path):
            latest = find_latest(path)
            if latest is None:
                raise FileNotFoundError('--resume: the folder {} holds no network-snapshot-*.pkl or *{}; '
                                        'give a run folder that has written a snapshot, or a snapshot file'
                                        .format(path, CKPT_SUFFIX))
            path = latest
        elif not os.path.isfile(path):
            raise FileNotFoundError('--resume: {} does not exist; give a snapshot .pkl, a {} checkpoint or a '
                                    'run folder'.format(path, CKPT_SUFFIX))
    m = _SNAPSHOT_RE.match(os.path.basename(path))
    kimg = int(m.group(1)) if m else None
    if path.endswith(CKPT_SUFFIX):
        pkl = pkl_path_for(path)
        return dnnlib.EasyDict(pkl=pkl if os.path.isfile(pkl) else None, ckpt=path, exact=True, kimg=kimg)
    if not is_url:
        ckpt = ckpt_path_for(path)
        if path.endswith('.pkl') and os.path.isfile(ckpt):
            return dnnlib.EasyDict(pkl=path, ckpt=ckpt, exact=True, kimg=kimg)
    return dnnlib.EasyDict(pkl=path, ckpt=None, exact=False, kimg=kimg)


# Options that decide the trajectory.

def options_json(options):
    """Canonical JSON of an options dict (sorted keys; non-JSON values as strings)."""
    return json.dumps(options, sort_keys=True, default=str)


def options_hash(options):
    return hashlib.sha256(options_json(options).encode('utf-8')).hexdigest()[:16]


def check_options(ckpt_state, options, ckpt_path):
    """Refuse a resume whose training options differ from the checkpoint's."""
    if ckpt_state.get('options_hash') == options_hash(options):
        return
    saved = json.loads(ckpt_state.get('options_json', '{}'))
    now = json.loads(options_json(options))
    diffs = []
    for key in sorted(set(saved) | set(now)):
        if saved.get(key, '<absent>') != now.get(key, '<absent>'):
            diffs.append('  {}: checkpoint {} vs now {}'.format(key, json.dumps(saved.get(key, '<absent>')),
                                                               json.dumps(now.get(key, '<absent>'))))
    raise ValueError('Cannot resume exactly from {}: the training options differ:\n{}\n'
                     'Use the same options, or resume from the networks only (resume_mode="networks", '
                     'upstream semantics).'.format(ckpt_path, '\n'.join(diffs) or '  (hash differs)'))


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
    tmp = '{}.tmp{}'.format(path, os.getpid())
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
    state.tick_start_nimg = state.cur_nimg
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
