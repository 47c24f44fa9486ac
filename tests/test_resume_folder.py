"""`train.py --resume=<run>` alone: the run's data, cfg and options come back from its
training_options.json (issue 16, item 3).

One tiny real FastGAN run is made; then dry runs (in this process) resume it by folder,
outdir, checkpoint and snapshot pickle with nothing but --kimg, and must resolve exactly the
recorded options, in the run's own outdir, saying what they restored. A given option that
would move the exact resume off the recorded trajectory is refused in one line that names
it, both values and the two ways on, before any folder is made; one that does not (--snap,
--tick, --metrics) is accepted. (tests/test_first_hour.py resumes a real run this way.)"""
import json
import os
import shutil

import pytest

from helpers import invoke_train, train_run
from test_train_cli import make_folder

RUN_FLAGS = ('--cfg=fastgan', '--ngf=8', '--ndf=8', '--recon=mse', '--batch=4', '--kimg=0.008', '--tick=0.008',
             '--snap=1', '--mirror=1', '--seed=3')
TRAJECTORY = ('training_set_kwargs', 'G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'augment_kwargs',
              'loss_kwargs', 'random_seed', 'num_gpus', 'batch_size', 'batch_gpu', 'ema_kimg', 'ema_rampup',
              'ada_target', 'ada_kimg')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A finished tiny run: (outdir, run folder, its training_options.json)."""
    base = tmp_path_factory.mktemp('resume-folder')
    data = make_folder(base / 'photos', 32, n=8)
    run_dir = train_run(base / 'runs', '--data', data, *RUN_FLAGS)
    with open(os.path.join(run_dir, 'training_options.json'), encoding='utf-8') as f:
        options = json.load(f)
    return str(base / 'runs'), run_dir, options


def resume_dry_run(resume, *args):
    """train.py --resume=resume --dry-run plus args: (exit code, output, options printed or None)."""
    result = invoke_train('--resume', resume, '--dry-run', *args)
    out = result.output
    if result.exit_code != 0:
        return result.exit_code, out, None
    head = out[out.index('{', out.index('Training options:')):]
    return 0, out, json.JSONDecoder().raw_decode(head)[0]


def snapshot_files(run_dir):
    """(checkpoint, pickle) of the run's newest complete snapshot."""
    from training import checkpoint
    pkl = checkpoint.find_latest(run_dir)
    return checkpoint.ckpt_path_for(pkl), pkl


def test_the_run_records_its_train_options(run):
    _outdir, _run_dir, options = run
    recorded = options['train_options']
    assert recorded['cfg'] == 'fastgan' and recorded['ngf'] == 8 and recorded['recon'] == 'mse'
    assert os.path.isabs(recorded['data']) and recorded['mirror'] is True and recorded['seed'] == 3
    assert 'resume' not in recorded and 'dry_run' not in recorded


@pytest.mark.parametrize('form', ['run folder', 'outdir', 'checkpoint', 'snapshot pickle'])
def test_resume_restores_every_option(run, form):
    outdir, run_dir, recorded = run
    ckpt, pkl = snapshot_files(run_dir)
    resume = dict(zip(['run folder', 'outdir', 'checkpoint', 'snapshot pickle'], [run_dir, outdir, ckpt, pkl]))[form]
    code, out, options = resume_dry_run(resume, '--kimg=0.016')
    assert code == 0, out
    for key in TRAJECTORY:
        assert options.get(key, 'absent') == recorded.get(key, 'absent'), key
    assert options['total_kimg'] == 0.016 and options['kimg_per_tick'] == 0.008 and options['metrics'] == []
    assert os.path.dirname(options['run_dir']) == outdir   # --outdir: the run's own
    assert options['resume_pkl'] == pkl
    assert 'restores the full training state' in out
    line = next(line for line in out.splitlines() if line.startswith('Options restored:'))
    assert os.path.join(run_dir, 'training_options.json') in line
    for flag in ('--cfg=fastgan', '--ngf=8', '--ndf=8', '--recon=mse', '--batch=4', '--mirror=1', '--seed=3'):
        assert flag in line.split('; given now:')[0], flag
    assert line.endswith('given now: --kimg=0.016')
    assert os.listdir(outdir) == [os.path.basename(run_dir)]


def test_a_conflicting_option_is_named_in_one_line_before_any_folder(run):
    outdir, run_dir, _ = run
    code, out, _ = resume_dry_run(run_dir, '--kimg=0.016', '--batch=8')
    assert code == 2 and 'Traceback' not in out
    (line,) = [line for line in out.splitlines() if line.startswith('Error:')]
    assert '--batch=8 differs from the run being resumed' in line and 'has --batch=4' in line
    assert 'leave it out' in line and '--resume-mode=networks' in line
    # The same refusal in a real start, and still no new run folder.
    result = invoke_train('--resume', run_dir, '--kimg=0.016', '--batch=8')
    assert result.exit_code == 2 and '--batch=8 differs' in result.output
    assert os.listdir(outdir) == [os.path.basename(run_dir)]


def test_options_that_leave_the_trajectory_alone_may_change(run):
    _outdir, run_dir, recorded = run
    code, out, options = resume_dry_run(run_dir, '--kimg=0.032', '--snap=2', '--tick=0.004', '--metrics=none',
                                        '--cfg=fastgan', '--ngf=8')
    assert code == 0, out
    assert options['network_snapshot_ticks'] == 2 and options['kimg_per_tick'] == 0.004
    assert options['G_kwargs'] == recorded['G_kwargs']


def test_networks_only_resume_may_change_the_options(run):
    _outdir, run_dir, _ = run
    code, out, options = resume_dry_run(run_dir, '--resume-mode=networks', '--batch=8', '--kimg=0.016')
    assert code == 0, out
    assert options['batch_size'] == 8 and options['G_kwargs']['ngf'] == 8


def test_a_run_from_before_the_record_restores_what_its_options_show(run, tmp_path):
    """training_options.json without train_options (written by older code): data, mirror, seed, batch and
    the schedule come back; the cfg is given again."""
    _outdir, run_dir, recorded = run
    old = tmp_path / 'old' / os.path.basename(run_dir)
    shutil.copytree(run_dir, old)
    (old / 'training_options.json').write_text(json.dumps({k: v for k, v in recorded.items() if k != 'train_options'}))
    code, out, options = resume_dry_run(old, '--cfg=fastgan', '--ngf=8', '--ndf=8', '--recon=mse')
    assert code == 0, out
    for key in TRAJECTORY:
        assert options.get(key, 'absent') == recorded.get(key, 'absent'), key
    assert 'before the options were recorded' in out


def test_outdir_is_needed_without_a_run_to_resume(tmp_path):
    result = invoke_train('--data=builtin:shapes-32', '--dry-run')
    assert result.exit_code == 2 and "Missing option '--outdir'" in result.output

