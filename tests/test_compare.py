"""bench/compare.py end to end on CPU: two methods on builtin:shapes-32 with a tiny network, a
tiny budget (5 snapshots per run, all within kimg 0: network-snapshot-000000*.pkl),
one seed, and a tiny TorchScript detector with NVIDIA's call signature for fid64_full.

The comparison is interrupted (SIGTERM) while the second run trains (at its tick 1 of 4, so that a
loaded machine still stops it well before its end) and then run again: the
finished run must be skipped untouched, the unfinished one continued from its checkpoint.
Then results.json must hold what train.py and the metric measured, the table the same numbers,
and the plots real content. Plus the fast parts: method/seed parsing and history merging."""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import compare  # noqa: E402
from helpers import sigterm_when, torch_threads  # noqa: E402

pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:FutureWarning')

COMPARE = os.path.join(ROOT, 'bench', 'compare.py')
CALC_METRICS = os.path.join(ROOT, 'stylegan2_ada', 'calc_metrics.py')
METHODS = ['stylegan2+ada', 'stylegan2+noaug']
METRIC = 'fid64_full'

# A stand-in for the Inception file: same call signature, a few thousand weights.


class TinyDetector(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 16)
        self.out = torch.nn.Linear(16, 10)

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False,
                return_lpips: bool = False, resize_images: bool = True) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(img.to(torch.float32) / 127.5 - 1, [16, 16])
        features = self.fc(torch.relu(self.conv(x)).flatten(1))
        if return_features:
            return features
        return torch.softmax(self.out(features), dim=1)


def compare_args(outdir, det_dir, kimg='0.128'):
    # --grid=2: train.py's image grids (one per snapshot, here every tick) of 2 x 2 fakes instead of the CPU
    # default 8 x 8; no test of the runner looks at them, and rendering 64 fakes per tick cost about a
    # CPU-second per run.
    return [sys.executable, COMPARE, '--outdir=' + outdir, '--data=builtin:shapes-32',
            '--methods=' + ','.join(METHODS), '--seeds=0', '--kimg=' + kimg, '--tick=0.032', '--snap=1',
            '--metric=' + METRIC, '--detector-dir=' + det_dir, '--device=cpu',
            '--extra=--cbase=256 --cmax=32 --batch=4 --workers=0 --map-depth=1 --grid=2']


def tree(path):
    """Every file and folder under `path` with its mtime and size."""
    out = {}
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(folder, name)
            st = os.stat(full)
            out[os.path.relpath(full, path)] = (st.st_mtime_ns, st.st_size)
    return out


def run_folder(outdir, method):
    return os.path.join(outdir, 'runs', '{}-seed0'.format(method))


@pytest.fixture(scope='module')
def grid(tmp_path_factory):
    """Run the comparison, kill it during the second run, run it again. Returns what was seen."""
    base = tmp_path_factory.mktemp('compare')
    det_dir = str(base / 'detectors')
    os.makedirs(det_dir)
    torch.jit.script(TinyDetector().eval()).save(os.path.join(det_dir, 'inception-2015-12-05.pt'))
    env = dict(os.environ, DNNLIB_CACHE_DIR=str(base / 'cache'), OMP_NUM_THREADS='1')
    env.pop('KDGAN_DETECTOR_DIR', None)
    outdir = str(base / 'out')
    args = compare_args(outdir, det_dir)

    # 1. Start; interrupt as soon as the second run has trained its first tick.
    child = []

    def second_run_ticked(line):
        m = re.search(r'stylegan2\+noaug seed 0: training .*\(train\.py pid (\d+)\)', line)
        if m:
            child.append(int(m.group(1)))
        return re.search(r'\[stylegan2\+noaug seed 0\] tick 1 ', line) is not None

    first_rc, first, killed = sigterm_when(args, ROOT, env, second_run_ticked)
    child_pid = child[-1] if child else None
    assert killed, 'the second run never reached tick 1:\n' + first[-3000:]
    with open(os.path.join(outdir, 'state.json'), encoding='utf-8') as f:
        state_after_kill = json.load(f)
    run1_tree = tree(run_folder(outdir, METHODS[0]))

    # 2. The same command again.
    second = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=600, check=False)
    with open(os.path.join(outdir, 'results.json'), encoding='utf-8') as f:
        results = json.load(f)
    return dict(base=base, outdir=outdir, det_dir=det_dir, env=env, first=first, first_rc=first_rc,
                child_pid=child_pid, state_after_kill=state_after_kill, run1_tree=run1_tree, second=second,
                results=results)



def test_interrupt_stops_training_and_keeps_the_finished_run(grid):
    assert grid['first_rc'] == 130, grid['first'][-3000:]
    assert 'interrupted; run the same command again' in grid['first']
    assert grid['child_pid'] is not None
    with pytest.raises(ProcessLookupError):   # train.py was stopped with the runner
        os.kill(grid['child_pid'], 0)
    runs = grid['state_after_kill']['runs']
    assert runs['stylegan2+ada@seed0']['status'] == 'finished'
    assert runs['stylegan2+noaug@seed0']['status'] == 'training'


def test_rerun_skips_the_finished_run_and_resumes_the_other(grid):
    out = grid['second'].stdout
    assert grid['second'].returncode == 0, out[-3000:]
    assert '[compare] run 1/2 stylegan2+ada seed 0: finished earlier; skipped' in out
    # One training process in the second invocation, for the unfinished run, resumed from its checkpoint.
    starts = re.findall(r'\[compare\] (\S+) seed 0: training (\S+)', out)
    assert starts == [('stylegan2+noaug', 'resumed')], out[-3000:]
    assert 'checking the flags of stylegan2+ada' not in out
    assert re.search(r'resumed from runs/stylegan2\+noaug-seed0/train/00000-[^/]+/network-snapshot-000000'
                     r'(_with\d{3}img)?\.ckpt\.pt', out)
    # Nothing in the finished run's folder changed: same files, same mtimes and sizes.
    assert tree(run_folder(grid['outdir'], METHODS[0])) == grid['run1_tree']
    # The unfinished run has two sessions; the second resumed exactly.
    sessions = sorted(os.listdir(os.path.join(run_folder(grid['outdir'], METHODS[1]), 'train')))
    assert len(sessions) == 2 and sessions[0].startswith('00000-') and sessions[1].startswith('00001-')
    with open(os.path.join(run_folder(grid['outdir'], METHODS[1]), 'train', sessions[1], 'log.txt'),
              encoding='utf-8') as f:
        assert 'Resuming exactly from' in f.read()


def test_resumed_run_equals_an_uninterrupted_one(grid):
    """The killed-and-resumed run ends bit for bit where train.py, run once with the same
    command and never stopped, ends: networks, optimisers, random streams, data position."""
    import pickle
    import shlex
    run = grid['results']['runs'][1]
    assert run['method'] == 'stylegan2+noaug' and len(run['sessions']) == 2
    straight = grid['base'] / 'straight'
    cmd = [a for a in shlex.split(run['train_command']) if not a.startswith('--outdir=')]
    res = subprocess.run(cmd + ['--outdir=' + str(straight)], cwd=ROOT, env=grid['env'], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-3000:]
    (session,) = os.listdir(straight)
    folder = run_folder(grid['outdir'], METHODS[1])
    last = sorted(os.listdir(os.path.join(folder, 'train')))[-1]

    def differences(a, b, where):
        if isinstance(a, torch.Tensor):
            if isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b):
                return []
            return ['{}: max |diff| {}'.format(where, (a.double() - b.double()).abs().max().item()
                                               if a.shape == getattr(b, 'shape', None) else 'shape')]
        if isinstance(a, dict):
            if set(a) != set(b):
                return ['{}: keys differ'.format(where)]
            return [d for k in a for d in differences(a[k], b[k], '{}.{}'.format(where, k))]
        if isinstance(a, (list, tuple)) and len(a) == len(b):
            return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, '{}[{}]'.format(where, i))]
        return [] if a == b else ['{}: {!r} vs {!r}'.format(where, a, b)]

    with open(os.path.join(folder, 'snapshots', run['snapshots'][-1]['name']), 'rb') as f:
        resumed = pickle.load(f)
    from training import checkpoint   # Each folder's newest snapshot (names no longer collide within a kimg).
    with open(checkpoint.list_snapshots(straight / session)[-1], 'rb') as f:
        uninterrupted = pickle.load(f)
    for key in ('G', 'D', 'G_ema'):
        assert differences(resumed[key].state_dict(), uninterrupted[key].state_dict(), key) == []
    ckpts = [torch.load(checkpoint.list_snapshots(where, checkpoint.CKPT_SUFFIX)[-1], map_location='cpu',
                        weights_only=True) for where in (os.path.join(folder, 'train', last), straight / session)]
    for ckpt in ckpts:
        assert ckpt['progress']['cur_nimg'] == 128
        del ckpt['progress']['elapsed_sec']
    assert differences(ckpts[0], ckpts[1], 'ckpt') == []


def _stats(session_dir):
    with open(os.path.join(session_dir, 'stats.jsonl'), encoding='utf-8') as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return {int(e['Progress/tick']['mean']): e for e in lines}


def test_results_json_holds_what_was_measured(grid):
    results, outdir = grid['results'], grid['outdir']
    assert [(r['method'], r['seed'], r['status']) for r in results['runs']] == [(m, 0, 'finished') for m in METHODS]
    assert results['config']['metric'] == METRIC and results['config']['higher_is_better'] is False
    for run in results['runs']:
        folder = os.path.join(outdir, run['run_dir'])
        snaps = run['snapshots']
        # Five snapshots (ticks 0-4), all within kimg 0 (train.py's names: 000000, 000000_with036img, ...).
        assert [s['tick'] for s in snaps] == [0, 1, 2, 3, 4]
        assert [s['kimg'] for s in snaps] == [0.004, 0.036, 0.068, 0.1, 0.128]
        seconds = [s['seconds'] for s in snaps]
        assert seconds == sorted(seconds) and seconds[0] > 0
        with open(os.path.join(folder, 'snapshots', 'metric-{}.jsonl'.format(METRIC)), encoding='utf-8') as f:
            reported = {}
            for line in f:
                entry = json.loads(line)
                reported[entry['snapshot_pkl']] = entry['results'][METRIC]
        for snap in snaps:
            # kimg and seconds are train.py's stats.jsonl entries of the snapshot's tick and session.
            session = os.path.join(folder, 'train', snap['segment'])
            entry = _stats(session)[snap['tick']]
            assert snap['kimg'] == pytest.approx(entry['Progress/kimg']['mean'], abs=1e-6)
            assert snap['seconds'] == pytest.approx(entry['Timing/total_sec']['mean'], abs=1e-3)
            # The value is the metric's report for that very file.
            assert os.path.isfile(os.path.join(folder, 'snapshots', snap['name']))
            assert math.isfinite(snap['value']) and snap['value'] > 0
            assert snap['value'] == reported[snap['name']]
            assert snap['results'] == {METRIC: snap['value']}
        assert len({s['value'] for s in snaps}) == 5   # five different networks were measured
        assert run['final']['value'] == snaps[-1]['value'] and run['final']['kimg'] == 0.128
        assert run['best']['value'] == min(s['value'] for s in snaps)
        summary = results['methods'][run['method']]
        assert summary['n'] == 1 and summary['seeds'] == [0]
        assert summary['best'] == dict(mean=run['best']['value'], std=None, values=[run['best']['value']])
        assert summary['final'] == dict(mean=run['final']['value'], std=None, values=[run['final']['value']])
        assert summary['final_seconds'] == run['final']['seconds']
    # The resumed run: tick 0 from the first session, the last tick from the second.
    resumed = results['runs'][1]
    assert resumed['snapshots'][0]['segment'].startswith('00000-')
    assert resumed['snapshots'][-1]['segment'].startswith('00001-')
    assert len(resumed['sessions']) == 2


def test_values_equal_calc_metrics_on_the_same_snapshot(grid):
    """The runner's value is the harness's metric: calc_metrics.py gives the same number."""
    run = grid['results']['runs'][0]
    src = os.path.join(grid['outdir'], run['run_dir'], 'snapshots', run['snapshots'][-1]['name'])
    copy_dir = grid['base'] / 'calc'
    copy_dir.mkdir()
    shutil.copy(src, copy_dir / 'net.pkl')
    res = subprocess.run([sys.executable, CALC_METRICS, '--network=' + str(copy_dir / 'net.pkl'),
                          '--metrics=' + METRIC, '--data=builtin:shapes-32', '--detector-dir=' + grid['det_dir'],
                          '--device=cpu', '--verbose=false'], cwd=ROOT, env=grid['env'], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-2000:]
    with open(copy_dir / 'metric-{}.jsonl'.format(METRIC), encoding='utf-8') as f:
        value = json.loads(f.readline())['results'][METRIC]
    assert value == pytest.approx(run['snapshots'][-1]['value'], rel=1e-9)


def test_table_holds_the_numbers_of_results_json(grid):
    results = grid['results']
    with open(os.path.join(grid['outdir'], 'results.md'), encoding='utf-8') as f:
        text = f.read()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 6 and cells[0] in METHODS:
            rows[cells[0]] = cells
    assert set(rows) == set(METHODS)
    for method in METHODS:
        summary = results['methods'][method]
        _, n, best, final, kimg, seconds = rows[method]
        assert int(n) == 1
        for cell, value in ((best, summary['best']['mean']), (final, summary['final']['mean']),
                            (kimg, summary['final_kimg']), (seconds, summary['final_seconds'])):
            assert '±' not in cell   # one seed: no spread to show
            assert float(cell) == pytest.approx(value, rel=5e-4)
    for plot in results['plots']:
        assert '({})'.format(plot['file']) in text


def test_plots_are_pngs_with_one_line_per_method(grid):
    from PIL import Image
    plots = grid['results']['plots']
    assert sorted(p['x'] for p in plots) == ['kimg', 'seconds']
    for plot in plots:
        path = os.path.join(grid['outdir'], plot['file'])
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            rgb = img.convert('RGB')
        assert rgb.size[0] >= 400 and rgb.size[1] >= 300
        counts = {color: n for n, color in rgb.getcolors(maxcolors=1 << 20)}
        non_white = sum(n for color, n in counts.items() if color != (255, 255, 255))
        assert non_white > 0.02 * rgb.size[0] * rgb.size[1]
        for i in range(len(METHODS)):
            # Each method's colour: its line and markers, far more than the legend swatch (about 90 pixels).
            assert counts.get(compare.PALETTE[i], 0) > 300


def test_other_settings_in_the_same_outdir_are_refused(grid):
    res = subprocess.run(compare_args(grid['outdir'], grid['det_dir'], kimg='0.2'), cwd=ROOT, env=grid['env'],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert res.returncode != 0
    assert 'trained with other settings' in res.stdout
    assert 'train.py pid' not in res.stdout and 'dry-run' not in res.stdout

# The fast parts.


def test_parse_methods_names_and_custom_flags():
    methods = compare.parse_methods(['stylegan2+ada,mine=--cfg=auto --aug=fixed --p=0.2', 'fastgan+diffaug'])
    assert methods == {'stylegan2+ada': ['--cfg=auto', '--aug=ada'],
                       'mine': ['--cfg=auto', '--aug=fixed', '--p=0.2'],
                       'fastgan+diffaug': ['--cfg=fastgan', '--aug=diffaug']}
    # A flag value may contain commas: pieces that are no method continue the custom item.
    methods = compare.parse_methods(["x=--aug=fixed --augpipe=bgc '--dummy=a,b',stylegan2+noaug"])
    assert methods == {'x': ['--aug=fixed', '--augpipe=bgc', '--dummy=a,b'],
                       'stylegan2+noaug': ['--cfg=auto', '--aug=noaug']}
    with pytest.raises(compare.CompareError, match='unknown method'):
        compare.parse_methods(['stylegan2+typo'])
    with pytest.raises(compare.CompareError, match='--kimg is set by the runner'):
        compare.parse_methods(['fast=--cfg=fastgan --kimg=5'])
    with pytest.raises(compare.CompareError, match='named twice'):
        compare.parse_methods(['stylegan2+ada,stylegan2+ada'])


def test_parse_seeds():
    assert compare.parse_seeds('0,1,2') == [0, 1, 2]
    assert compare.parse_seeds('3-5,0') == [3, 4, 5, 0]
    with pytest.raises(compare.CompareError):
        compare.parse_seeds('a')


def test_history_lets_a_resumed_session_supersede_the_ticks_it_redid(tmp_path):
    def segment(name, ticks, snapshots):
        os.makedirs(tmp_path / name)
        seg = compare.Segment(str(tmp_path / name))
        seg.ticks = [compare.Tick(t, 0.01 * t, 2.0 * t, 100.0 + t) for t in ticks]
        seg.snapshot_ticks = {t: 'snap-{}-{}.pkl'.format(name, t) for t in snapshots}
        return seg
    first = segment('00000-a', [0, 1, 2, 3], [0, 2])       # killed after tick 3; checkpoint of tick 2
    second = segment('00001-a', [3, 4], [4])               # resumed: redoes tick 3
    snaps = compare.history([first, second])
    assert [(s['tick'], s['segment']) for s in snaps] == [(0, '00000-a'), (2, '00000-a'), (4, '00001-a')]
    # A session restarted from scratch (no checkpoint) replaces everything.
    fresh = segment('00002-a', [0, 1], [1])
    assert [(s['tick'], s['segment']) for s in compare.history([first, second, fresh])] == [(1, '00002-a')]
    assert compare.final_index(snaps, kimg=0.04, minutes=None) == 2
    assert compare.final_index(snaps, kimg=None, minutes=4.0 / 60) == 1
    assert compare.final_index(snaps, kimg=1.0, minutes=None) is None


def test_a_minutes_stop_comes_at_the_budget_snapshot_not_the_next_one(tmp_path):
    """train.py writes a snapshot's checkpoint a moment before that tick's stats line; the runner
    must count it as the budget snapshot's checkpoint (it once waited for the next snapshot's,
    a whole --snap interval of wasted training per run)."""
    import types
    from bench.comparison import runner
    seg_dir = tmp_path / 'train' / '00000-run'
    snap_dir = tmp_path / 'snapshots'
    os.makedirs(seg_dir)
    os.makedirs(snap_dir)
    base = 1.7e9
    with open(seg_dir / 'stats.jsonl', 'w') as f:
        for tick in range(3):     # snapshot every tick; 100 s of training per tick
            stamp = base + 100 * tick
            for suffix, lead in (('.pkl', 0.2), ('.ckpt.pt', 0.07)):
                path = seg_dir / 'network-snapshot-{:06d}{}'.format(tick, suffix)
                path.write_bytes(b'x')
                os.utime(path, (stamp - lead, stamp - lead))
            f.write(json.dumps({'Progress/tick': {'mean': tick}, 'Progress/kimg': {'mean': float(tick)},
                                'Timing/total_sec': {'mean': 100.0 * tick}, 'timestamp': stamp}) + '\n')
    # SIGINT back to its default as the runner does for train.py (a CI started with nohup ignores it).
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], stdout=subprocess.PIPE, text=True,
                            preexec_fn=runner._child_signals)
    try:
        watch = runner._Watch(proc, str(tmp_path / 'train'), set(), [], 'test')
        assert watch.find_session() is not None
        cfg = types.SimpleNamespace(snap=1, kimg=None, minutes=150 / 60)    # budget snapshot: tick 2
        assert watch.keep_and_maybe_stop(cfg, str(snap_dir), exited=False)
        assert proc.poll() is not None and watch.stopped_by_us
    finally:
        runner.stop_process(proc, grace=1)


def test_parse_seeds_from_a_preset_list():
    assert compare.parse_seeds([0, 1, 2]) == [0, 1, 2]


def test_extra_for_adds_flags_to_the_methods_that_carry_the_selector():
    extra_for = compare.parse_extra_for(['--cfg=fastgan:--ngf=16 --ndf=16', '--cfg=auto:--cbase=2048',
                                         "--loss=kdgan.KDDLGAN:--teacher-config='my dir/t.json'",
                                         '--cfg=fastgan:--recon=mse'])
    assert extra_for == {'--cfg=fastgan': ['--ngf=16', '--ndf=16', '--recon=mse'], '--cfg=auto': ['--cbase=2048'],
                         '--loss=kdgan.KDDLGAN': ['--teacher-config=my dir/t.json']}
    methods = compare.apply_extra_for(compare.parse_methods(['stylegan2+ada,fastgan+kdgan']), extra_for)
    assert methods == {
        'stylegan2+ada': ['--cfg=auto', '--aug=ada', '--cbase=2048'],
        'fastgan+kdgan': ['--cfg=fastgan', '--aug=diffaug', '--loss=kdgan.KDDLGAN', '--ngf=16', '--ndf=16',
                          '--recon=mse', '--teacher-config=my dir/t.json']}
    # A preset gives the same as a dict of lists (or of strings).
    assert compare.parse_extra_for({'--cfg=auto': ['--cbase=2048'], '--cfg=fastgan': '--ngf=8'}) == {
        '--cfg=auto': ['--cbase=2048'], '--cfg=fastgan': ['--ngf=8']}
    with pytest.raises(compare.CompareError, match='SELECTOR:FLAGS'):
        compare.parse_extra_for(['--ngf=16'])
    with pytest.raises(compare.CompareError, match='--kimg is set by the runner'):
        compare.parse_extra_for(['--cfg=auto:--kimg=3'])


def test_budget_preset_runs_its_prepare_step_and_fills_placeholders(tmp_path, monkeypatch):
    (tmp_path / 'myprep.py').write_text(
        'def prep(outdir, size=1):\n'
        '    return dict(train=outdir + "/train-%d.zip" % size, teacher="/t/w.pt")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(compare.compare_methods.BUDGETS, 'test', dict(
        prepare=('myprep:prep', dict(size=7)), data='{train}', kimg=2, seeds=[0, 1],
        extra=['--mirror=1', "--kd-template=A photo of a {label}"],
        extra_for={'--loss=kdgan.KDDLGAN': ['--teacher-weights={teacher}']}))
    out = str(tmp_path / 'out')
    preset = compare.resolve_budget('test', out, {'data', 'kimg', 'seeds', 'extra', 'extra_for'})
    assert preset == dict(data=out + '/train-7.zip', kimg=2, seeds=[0, 1],
                          extra=['--mirror=1', '--kd-template=A photo of a {label}'],
                          extra_for={'--loss=kdgan.KDDLGAN': ['--teacher-weights=/t/w.pt']})
    with pytest.raises(compare.CompareError, match='unknown keys: kimg'):
        compare.resolve_budget('test', out, {'data', 'seeds', 'extra', 'extra_for'})
    with pytest.raises(compare.CompareError, match="no preset 'nope'"):
        compare.resolve_budget('nope', out, set())


def test_fmnist_presets_are_wellformed():
    """The shipped presets name known methods, resolve their placeholders from prepare's keys,
    and give every backbone of the grid its size flags."""
    from bench.fmnist import prepare as fmnist_prepare
    import inspect
    keys = {'fmnist_train', 'fmnist_test', 'evaluator', 'teacher_weights', 'teacher_config'}
    source = inspect.getsource(fmnist_prepare.prepare)
    for key in keys:
        assert key + '=' in source
    for name in ('cpu', 'gpu'):
        preset = compare.compare_methods.BUDGETS[name]
        assert preset['prepare'][0] == 'bench.fmnist.prepare:prepare'
        filled = compare._substitute({k: v for k, v in preset.items() if k != 'prepare'},
                                     {k: '/x/' + k for k in keys})
        assert not re.search(r'\{[a-z_]+\}', json.dumps(filled))
        methods = compare.apply_extra_for(compare.parse_methods(filled['methods']),
                                          compare.parse_extra_for(filled['extra_for']))
        for flags in methods.values():
            assert any(f.startswith(('--cbase', '--ngf')) for f in flags)
            assert ('--loss=kdgan.KDDLGAN' in flags) == ('--teacher-weights=/x/teacher_weights' in flags)
        assert filled['metric'] == 'fidkid5k_full' and filled['detector'] == '/x/evaluator'
        assert len(filled['seeds']) == 3 and filled['skip_start'] is True


def test_budget_with_skip_start_and_a_two_value_metric(tmp_path, monkeypatch):
    """A preset end to end (in process): extra_for reaches train.py, the tick-0 snapshot is not
    evaluated, and the table shows KID beside FID with the values of results.json."""
    from click.testing import CliRunner
    det = tmp_path / 'det.pt'
    torch.jit.script(TinyDetector().eval()).save(str(det))
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('KDGAN_DETECTOR_DIR', raising=False)
    monkeypatch.setitem(compare.compare_methods.BUDGETS, 'tiny', dict(
        data='builtin:shapes-32', methods=['stylegan2+ada'], seeds=[0], kimg=0.032, tick=0.016, snap=1,
        metric='fidkid64_full', detector=str(det), skip_start=True, device='cpu',
        extra=['--batch=4', '--workers=0', '--map-depth=1'],
        extra_for={'--cfg=auto': ['--cbase=256', '--cmax=32'], '--aug=ada': ['--ada-kimg=2']}))
    out = tmp_path / 'out'
    with torch_threads(1):
        res = CliRunner().invoke(compare.main, ['--outdir', str(out), '--budget=tiny'], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with open(out / 'results.json', encoding='utf-8') as f:
        results = json.load(f)
    run = results['runs'][0]
    assert [s['tick'] for s in run['snapshots']] == [1, 2]          # tick 0 kept on disk, not evaluated
    assert (out / 'runs' / 'stylegan2+ada-seed0' / 'snapshots' / 'snapshot-seg00000-tick000000.pkl').exists()
    assert '--cbase=256' in run['train_command'] and '--ada-kimg=2' in run['train_command']
    assert results['config']['skip_start'] is True and results['config']['budget'] == 'tiny'
    summary = results['methods']['stylegan2+ada']
    assert set(summary['secondary']) == {'kid64_full'}
    assert summary['final']['mean'] == run['snapshots'][-1]['results']['fid64_full']
    kid_final = summary['secondary']['kid64_full']['final']['mean']
    assert kid_final == run['snapshots'][-1]['results']['kid64_full']
    text = (out / 'results.md').read_text(encoding='utf-8')
    row = next(line for line in text.splitlines() if line.startswith('| stylegan2+ada | 1 |'))
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert len(cells) == 8
    assert float(cells[3]) == pytest.approx(summary['final']['mean'], rel=5e-4)
    assert float(cells[5]) == pytest.approx(kid_final, rel=5e-4, abs=1e-4)
    assert 'kid64_full at best' in text and 'Best fid64_full' in text
    # The sample grid: one row per method, from the final snapshot of the first seed.
    from PIL import Image
    assert results['samples']['rows'] == [dict(method='stylegan2+ada', seed=0, kimg=run['snapshots'][-1]['kimg'],
                                               snapshot=os.path.join('runs', 'stylegan2+ada-seed0', 'snapshots',
                                                                     run['snapshots'][-1]['name']))]
    with Image.open(out / 'samples.png') as img:
        assert img.size[1] == 64 + 2 * 4 and img.size[0] > 12 * 64
        assert len(img.convert('L').getcolors(maxcolors=1 << 16)) > 20   # images, not a blank canvas
    assert '![samples](samples.png)' in text
