"""A newcomer's first hour, scripted (issue 16, item 9): from a folder of mixed photos to a model,
with the README's commands run as a user runs them (subprocesses, from stylegan2_ada/, on the CPU).

The folder is test_dataset_tool_honest's miniature of a real one: sizes from 64 to 256 px, modes
L/RGB/RGBA/P/CMYK, an EXIF-rotated JPEG, a .DS_Store and a notes.txt. The path: convert it
(center-crop, 32 px), train FastGAN a few ticks, render images, mix styles, resume with
`--resume=<run folder>` and only --kimg, then compare two methods with a test detector.
Every command must exit 0 without a traceback and leave its output where the README says.
Tiny on purpose (8-channel networks, 4 to 8 images a run): CI runs it within a 15-minute budget."""
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import HARNESS
from test_compare import TinyDetector
from test_dataset_tool_honest import photos  # noqa: F401  (the fixture: the folder of mixed images)

pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:FutureWarning')

ROOT = os.path.dirname(HARNESS)
TINY = ('--cfg=fastgan', '--ngf=8', '--ndf=8', '--recon=mse', '--metrics=none', '--batch=4', '--workers=0')


def newcomer(tmp_path, script, *args, cwd=HARNESS):
    """Run `python script args` as a user would; returns its output, which must be clean."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', DNNLIB_CACHE_DIR=str(tmp_path / 'cache'))
    env.pop('KDGAN_DETECTOR_DIR', None)
    proc = subprocess.run([sys.executable, script, *[str(a) for a in args]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{script} {args} exited {proc.returncode}:\n{out[-4000:]}'
    assert 'Traceback' not in out, out[-4000:]
    return out


def run_folders(outdir):
    return sorted(os.path.join(outdir, name) for name in os.listdir(outdir))


def newest_snapshot(run_dir):
    from training import checkpoint
    return checkpoint.find_latest(run_dir)


def test_first_hour(photos, tmp_path):  # noqa: F811
    data = tmp_path / 'photos-32.zip'
    out = newcomer(tmp_path, 'dataset_tool.py', f'--source={photos}', f'--dest={data}', '--transform=center-crop',
                   '--resolution=32')
    assert data.is_file() and 'Wrote 10 images (32x32' in out
    assert 'rotated by their EXIF orientation: 1' in out and 'notes.txt' in out

    # Train: a run folder in --outdir with the files the README lists.
    runs = tmp_path / 'runs'
    out = newcomer(tmp_path, 'train.py', f'--outdir={runs}', f'--data={data}', *TINY, '--kimg=0.008', '--tick=0.008',
                   '--snap=1')
    (run_dir,) = run_folders(runs)
    files = os.listdir(run_dir)
    for name in ('reals.png', 'stats.jsonl', 'log.txt', 'training_options.json'):
        assert name in files, files
    assert any(n.startswith('fakes') and n.endswith('.png') for n in files), files
    snapshot = newest_snapshot(run_dir)
    assert 'eta' in out

    # Use the snapshot: generate.py and style_mixing.py write where --outdir says.
    newcomer(tmp_path, 'generate.py', f'--network={snapshot}', '--seeds=0-1', f'--outdir={tmp_path / "out"}')
    assert sorted(os.listdir(tmp_path / 'out')) == ['seed0000.png', 'seed0001.png']
    out = newcomer(tmp_path, 'style_mixing.py', f'--network={snapshot}', '--rows=0-1', '--cols=2',
                   f'--outdir={tmp_path / "mix"}')
    assert {'grid.png', '0-2.png', '1-2.png'} <= set(os.listdir(tmp_path / 'mix'))

    # Resume by folder, giving only what changes: a new run folder beside the first, continued exactly.
    out = newcomer(tmp_path, 'train.py', f'--resume={run_dir}', '--kimg=0.016')
    assert 'Resuming exactly from' in out and 'Options restored:' in out
    (_, resumed) = run_folders(runs)
    with open(os.path.join(resumed, 'training_options.json'), encoding='utf-8') as f:
        options = json.load(f)
    assert options['total_kimg'] == 0.016 and options['G_kwargs']['ngf'] == 8
    assert options['train_options']['cfg'] == 'fastgan' and options['train_options']['kimg'] == 0.016
    assert options['resume_pkl'] == snapshot

    # Compare two methods, evaluated with a stand-in detector (offline: no Inception).
    detector = tmp_path / 'detector.pt'
    torch.jit.script(TinyDetector().eval()).save(str(detector))
    cmp = tmp_path / 'cmp'
    newcomer(tmp_path, os.path.join('bench', 'compare.py'), f'--outdir={cmp}', f'--data={data}',
             '--methods=fastgan+diffaug,stylegan2+diffaug', '--kimg=0.004', '--tick=0.004', '--snap=1',
             '--metric=fid64_full', f'--detector={detector}', '--device=cpu', '--extra=--batch=4 --workers=0',
             '--extra-for=--cfg=fastgan:--ngf=8 --ndf=8 --recon=mse',
             '--extra-for=--cfg=auto:--cbase=256 --cmax=16 --map-depth=1', cwd=ROOT)
    with open(cmp / 'results.json', encoding='utf-8') as f:
        results = json.load(f)
    assert sorted(results['methods']) == ['fastgan+diffaug', 'stylegan2+diffaug']
    for name in ('results.md', 'fid64_full_vs_kimg.png', 'fid64_full_vs_time.png', 'samples.png'):
        assert (cmp / name).is_file(), name
