"""A run's own train.py options, read back so that `--resume=<run>` needs nothing else.

train.py writes training_options.json into every run folder: the resolved
options the training loop receives and, under RECORD_KEY, the train.py options
that produced them. Resuming from such a run (its folder, an --outdir, a
checkpoint or a snapshot pickle) reads them back, and config.resolve layers
them above the cfg's presets and below what the command line gives now (see
config.py's docstring). A folder written before RECORD_KEY existed gives what
its resolved options show (data, mirror, labels, seed, processes, batch and
schedule); the cfg and the rest must then be given again.

Nothing here imports torch at module level; the folder lookup does (through
training.checkpoint), and only when --resume names a local path.
"""

import dataclasses
import json
import os

RECORD_KEY = 'train_options'
OPTIONS_FILE = 'training_options.json'

# Never carried over: what this resume is, and what only this invocation means.
NOT_RESTORED = ('resume', 'resume_mode', 'dry_run', 'explicit')

# Options that leave the trajectory alone (length, cadence, where files are looked for, metrics):
# giving another value never blocks an exact resume, so they are never named as the conflict.
FREE_TO_CHANGE = ('kimg', 'snap', 'tick', 'metrics', 'workers', 'device', 'grid', 'detector_dir', 'teacher_dir',
                  'nobench', 'allow_tf32')


@dataclasses.dataclass
class RecordedRun:
    """The run a resume continues: its folder, its options file and the train.py options to restore."""
    run_dir: str
    path: str
    options: dict
    flags: dict
    complete: bool   # False: written before RECORD_KEY existed, so `flags` is partial


def _run_folder(resume, mode):
    """The folder of the snapshot `--resume=resume` starts from (checkpoint.resolve_resume decides which,
    following a run back to where it came from), or None for URLs, shortcut names and unusable paths
    (config.resolve_resume then says what is wrong)."""
    if not resume or '://' in str(resume):
        return None
    path = os.path.expanduser(str(resume))
    if not os.path.exists(path):
        return None
    try:
        from training import checkpoint
    except ModuleNotFoundError:
        return os.path.abspath(path if os.path.isdir(path) else os.path.dirname(path))
    try:
        where = checkpoint.resolve_resume(path, mode=mode)
    except (OSError, ValueError):
        return None
    snapshot = where.ckpt or where.pkl
    return os.path.dirname(os.path.abspath(snapshot)) if snapshot else None


def _from_resolved(options):
    """The train.py options a resolved training_options.json still shows (a run from before RECORD_KEY)."""
    data = options['training_set_kwargs']
    loader = options.get('data_loader_kwargs') or {}
    found = dict(data=data.get('path'), mirror=data.get('xflip'), cond=data.get('use_labels'),
                 subset=data.get('max_size') if 'random_seed' in data else None,
                 seed=options.get('random_seed'), gpus=options.get('num_gpus'), batch=options.get('batch_size'),
                 kimg=options.get('total_kimg'), tick=options.get('kimg_per_tick'),
                 snap=options.get('network_snapshot_ticks'), metrics=options.get('metrics'),
                 workers=loader.get('num_workers'), grid=options.get('grid_max_cells'))
    return {key: value for key, value in found.items() if value is not None}


def load(resume, mode='auto'):
    """RecordedRun for a --resume value, or None when it is not a train.py run with recorded options."""
    folder = _run_folder(resume, mode)
    if folder is None:
        return None
    path = os.path.join(folder, OPTIONS_FILE)
    try:
        with open(path, encoding='utf-8') as f:
            options = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(options, dict):
        return None
    if isinstance(options.get(RECORD_KEY), dict):
        flags, complete = dict(options[RECORD_KEY]), True
    elif isinstance(options.get('training_set_kwargs'), dict):
        flags, complete = _from_resolved(options), False
    else:
        return None
    flags = {key: value for key, value in flags.items() if key not in NOT_RESTORED}
    return RecordedRun(run_dir=folder, path=path, options=options, flags=flags, complete=complete)


def given_names(flags):
    """The options given by the caller: `flags.explicit`, or, for Flags built in code without
    it, every field whose value differs from the default."""
    if flags.explicit is not None:
        return set(flags.explicit)
    defaults = type(flags)()
    return {field.name for field in dataclasses.fields(flags)
            if _plain(getattr(flags, field.name)) != _plain(getattr(defaults, field.name))}


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def merge(flags, recorded):
    """`flags` with every option the caller did not give taken from the recorded run. `explicit`
    is filled in, so merging the result again changes nothing."""
    given = given_names(flags)
    known = {field.name for field in dataclasses.fields(flags)}
    restored = {key: _plain(value) for key, value in recorded.flags.items()
                if key in known and key not in given and key not in NOT_RESTORED}
    return dataclasses.replace(flags, explicit=tuple(sorted(given)), **restored)


def record(flags):
    """{RECORD_KEY: the options to write into training_options.json}: what a later resume restores."""
    return {RECORD_KEY: {field.name: _plain(getattr(flags, field.name)) for field in dataclasses.fields(flags)
                         if field.name not in NOT_RESTORED}}


def _show(name, value):
    if value is None:
        return 'no --{} (the default)'.format(name.replace('_', '-'))
    if isinstance(value, bool):
        value = int(value)
    elif isinstance(value, (list, tuple)):
        value = ','.join(str(v) for v in value) or 'none'
    return '--{}={}'.format(name.replace('_', '-'), value)


def restored_text(flags, recorded):
    """One line for the run summary: which options came from the recorded run, and which were given now."""
    given, defaults = set(flags.explicit or ()), type(flags)()
    restored = [_show(key, getattr(flags, key)) for key in recorded.flags
                if hasattr(flags, key) and key not in given and getattr(flags, key) is not None
                and _plain(getattr(flags, key)) != _plain(getattr(defaults, key))]
    now = [_show(key, getattr(flags, key)) for key in sorted(given) if hasattr(flags, key) and key not in NOT_RESTORED]
    text = '{}: {}'.format(recorded.path, ' '.join(restored) or 'nothing')
    if not recorded.complete:
        text += ' (a run from before the options were recorded: give its --cfg and other options too)'
    return text + ('; given now: ' + ' '.join(now) if now else '')


def conflict(flags, recorded, args):
    """None when the resolved `args` continue the recorded run's trajectory; else one line that names the
    given options that moved it, their recorded and given values, and the two ways on. Also None when
    none of the given options explains the difference (the exact-resume check then lists the keys)."""
    from training import checkpoint
    trajectory = [{key: options[key] for key in checkpoint.TRAJECTORY_KEYS if key in options}
                  for options in (recorded.options, args)]
    if not checkpoint.differing_options(*trajectory, shared_only=True):
        return None
    given = set(flags.explicit or ())
    names = [field.name for field in dataclasses.fields(flags)
             if field.name in given and field.name not in FREE_TO_CHANGE + NOT_RESTORED
             and (recorded.complete or field.name in recorded.flags)
             and _plain(getattr(flags, field.name)) != _plain(recorded.flags.get(field.name))]
    if not names:
        return None
    now = ', '.join(_show(name, getattr(flags, name)) for name in names)
    then = ', '.join(_show(name, recorded.flags.get(name)) for name in names)
    return ('{} differ{} from the run being resumed ({} has {}): leave {} out to continue that run exactly, or add '
            '--resume-mode=networks to start a new run from its networks'.format(
                now, 's' if len(names) == 1 else '', recorded.path, then, 'it' if len(names) == 1 else 'them'))
