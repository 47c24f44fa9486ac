"""Taking finished runs from another comparison instead of training them again.

An ablation shares rows with the main table (Table 4's baseline and "+both" are the main grid's
FastGAN rows on the same settings). A run is taken over only when nothing could tell it apart
from one trained here: the same method and seed, the same train.py arguments (`run_spec`, with
the outdir written as `<outdir>`), and byte-identical files behind every `<outdir>/...` argument
(the prepared data). Its folder is linked in (hard links, else copies), its state entry copied,
and its evaluations kept where the metric, detector and evaluation data are the same too.
"""
import copy
import filecmp
import json
import os
import shutil

from bench.comparison.common import CompareError, say
from bench.comparison.grid import run_key
from bench.comparison.runner import OUTDIR_MARK as _OUTDIR, run_spec


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:            # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def _same_file(rel, here, there):
    mine, theirs = os.path.join(here, rel), os.path.join(there, rel)
    return os.path.isfile(mine) and os.path.isfile(theirs) and filecmp.cmp(mine, theirs, shallow=False)


def _same_files(args, here, there):
    """Every `<outdir>/...` file among `args` (not the run's own --outdir) holds the same bytes in both."""
    for arg in args:
        _, sep, value = arg.partition('=')
        if sep and value.startswith(_OUTDIR + '/') and not arg.startswith('--outdir='):
            if not _same_file(value[len(_OUTDIR) + 1:], here, there):
                return False
    return True


def _load_state(source):
    path = os.path.join(source, 'state.json')
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise CompareError('--reuse: {} is not a comparison state file ({})'.format(path, err))


def _kept_evals(entry, source, cfg, metric_key):
    """The source's evaluations that mean the same here: its metric key with its outdir read as ours,
    and evaluation data (when it lies inside the outdirs) of the same bytes."""
    inside = cfg.eval_data.startswith(cfg.outdir + os.sep)
    if inside and not _same_file(os.path.relpath(cfg.eval_data, cfg.outdir), cfg.outdir, source):
        return {}
    return {metric_key: copy.deepcopy(values) for key, values in entry.get('evals', {}).items()
            if key.replace(source, cfg.outdir) == metric_key}


def adopt_runs(cfg, state, grid, sources, metric_key):
    """Fill the runs of `grid` this outdir does not have yet from the finished runs of `sources`
    (other comparison outdirs; a missing one is skipped with a line). Returns the adopted labels."""
    adopted = []
    for source in sources:
        source = os.path.abspath(os.path.expanduser(source))
        if source == cfg.outdir:
            continue
        theirs = _load_state(source)
        if theirs is None:
            say('[compare] --reuse: nothing to take from {} (no state.json there)'.format(source))
            continue
        for method, seed in grid:
            key = run_key(method, seed)
            entry = theirs.get('runs', {}).get(key)
            if key in state.runs or entry is None or entry.get('status') not in ('trained', 'finished'):
                continue
            spec = run_spec(cfg, method, seed)
            if entry.get('spec') != spec or not _same_files(spec['train_args'], cfg.outdir, source):
                say('[compare] --reuse: {} seed {} in {} was trained with other settings or data; '
                    'not taken'.format(method, seed, source))
                continue
            src_dir = os.path.join(source, os.path.relpath(cfg.run_dir(method, seed), cfg.outdir))
            dst_dir = cfg.run_dir(method, seed)
            if os.path.exists(dst_dir):
                shutil.rmtree(dst_dir)     # a folder the state does not know: a run that never started
            shutil.copytree(src_dir, dst_dir, copy_function=_link_or_copy)
            mine = copy.deepcopy(entry)
            mine['evals'] = _kept_evals(entry, source, cfg, metric_key)
            mine['status'] = 'trained'     # so that any evaluation still missing here is done
            mine['reused_from'] = source
            state.runs[key] = mine
            state.save()
            adopted.append('{} seed {}'.format(method, seed))
            say('[compare] {} seed {}: taken from {} (same settings and data; {} evaluation(s) kept)'.format(
                method, seed, source, sum(len(v) for v in mine['evals'].values())))
    return adopted
