"""The kdgan plug-ins inside a tree with upstream StyleGAN2-ADA's layout (issue 13).

The stand-in for an upstream checkout is a temporary copy of our own harness
(it has upstream's module layout, `setup_training_loop_kwargs(**options)`,
`subprocess_fn(rank, args, temp_dir)` and a click `main`), changed where it
matters:

* train.py ends with upstream's documented last lines, and
  patches/stylegan2-ada-pytorch.patch is applied to it with `git apply`;
* training/loss.py's StyleGAN2Loss has upstream's constructor (no terms, no
  hinge, no auxiliary image), so the hook must route the plug-in losses
  through kdgan_plugins.upstream.loss, as in a real upstream tree.

Checks: the patch applies to a file with upstream's documented ending (and
undoes); the hook resolves every registered preset (and the plug-in options)
to the options our own train.py --dry-run prints; the done-when command's
dry run names our networks, loss and DiffAugment, and the objects those
options build run one accumulate_gradients call per phase; one tick trains on
the CPU through the patched train.py; the fill-in modules serve only what a
host lacks. Children run with one thread.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import PIL.Image
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, 'stylegan2_ada')
PATCH = os.path.join(ROOT, 'patches', 'stylegan2-ada-pytorch.patch')
UPSTREAM_LINES = 540  # upstream train.py at d72cc7d
DASHES = '#' + '-' * 76
UPSTREAM_ENDING = ['if __name__ == "__main__":', '    main() # pylint: disable=no-value-for-parameter', '', DASHES]
TWIN = 'kdgan_plugins.upstream.loss.'
TINY_CLIP = {
    'embed_dim': 24,
    'vision_cfg': {'image_size': 32, 'layers': 1, 'width': 32, 'patch_size': 16, 'head_width': 16},
    'text_cfg': {'context_length': 16, 'vocab_size': 49408, 'width': 32, 'heads': 2, 'layers': 1},
}
UPSTREAM_STYLE_LOSS = '''\
"""Test stand-in for upstream's training.loss: the same phases, upstream's constructor."""
from training.kdgan_core_loss import Loss, StyleGAN2Loss as _Core


class StyleGAN2Loss(_Core):
    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, style_mixing_prob=0.9, r1_gamma=10,
                 pl_batch_shrink=2, pl_decay=0.01, pl_weight=2):
        super().__init__(device, G_mapping, G_synthesis, D, augment_pipe=augment_pipe,
                         style_mixing_prob=style_mixing_prob, r1_gamma=r1_gamma, pl_batch_shrink=pl_batch_shrink,
                         pl_decay=pl_decay, pl_weight=pl_weight)
'''


def _upstream_ending(text):
    """`text` with its `if __name__` block replaced by upstream's documented last lines."""
    start = text.rindex('if __name__ ==')
    return text[:start] + '\n'.join(UPSTREAM_ENDING) + '\n'


def _child(cwd, args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT, DNNLIB_CACHE_DIR=os.path.join(cwd, '.dnnlib-cache'))
    run = subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def _options(output):
    """The 'Training options:' JSON that train.py prints."""
    start = output.index('{', output.index('Training options:'))
    return json.JSONDecoder().raw_decode(output[start:])[0]


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    """The upstream stand-in (see the module docstring), a 32x32 zip of 8 images and a tiny teacher config."""
    root = tmp_path_factory.mktemp('upstream')
    host = root / 'tree'
    shutil.copytree(HARNESS, host, ignore=shutil.ignore_patterns('__pycache__'))
    train_py = host / 'train.py'
    train_py.write_text(_upstream_ending(train_py.read_text()))
    subprocess.run(['git', 'apply', PATCH], cwd=host, check=True, capture_output=True)
    (host / 'training' / 'loss.py').rename(host / 'training' / 'kdgan_core_loss.py')
    (host / 'training' / 'loss.py').write_text(UPSTREAM_STYLE_LOSS)
    rng = np.random.RandomState(0)
    with zipfile.ZipFile(root / 'shapes.zip', 'w') as archive:
        for i in range(8):
            path = root / 'img.png'
            PIL.Image.fromarray(rng.randint(0, 256, [32, 32, 3], dtype=np.uint8)).save(path)
            archive.write(path, f'img{i:03d}.png')
    (root / 'tiny.json').write_text(json.dumps(TINY_CLIP))
    return root


# The patch.

def test_patch_applies_to_upstreams_ending_and_undoes(tmp_path):
    filler = [f'# line {i} of a stand-in (upstream text is not reproduced here)' for i in range(1, 537)]
    original = '\n'.join(filler + UPSTREAM_ENDING) + '\n'
    assert len(original.splitlines()) == UPSTREAM_LINES
    (tmp_path / 'train.py').write_text(original)
    subprocess.run(['git', 'apply', '--check', PATCH], cwd=tmp_path, check=True, capture_output=True)
    if shutil.which('patch'):
        subprocess.run(['patch', '-p1', '--dry-run', '-i', PATCH], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(['git', 'apply', PATCH], cwd=tmp_path, check=True, capture_output=True)
    patched = (tmp_path / 'train.py').read_text().splitlines()
    assert patched[:536] == filler and patched[-2:] == ['', DASHES]
    assert 'kdgan_plugins.upstream' in '\n'.join(patched[-5:]) and patched[-5] == UPSTREAM_ENDING[0]
    assert not any('main() #' in line for line in patched), 'the direct call of main() must be gone'
    subprocess.run(['git', 'apply', '-R', PATCH], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / 'train.py').read_text() == original
    # The patch carries nothing but its hunk: two context lines, the one line it replaces, its own lines.
    hunk = [line for line in open(PATCH).read().splitlines() if line[:1] in (' ', '-') and not line.startswith('---')]
    assert hunk == [' ' + UPSTREAM_ENDING[0], '-' + UPSTREAM_ENDING[1], ' ']


# One child in the stand-in tree runs every step (one start-up of torch and open_clip):
# the patched train.py as a script (runpy, so its `if __name__ == "__main__":` block and thus
# the patch run), the done-when command's objects and phases, one CPU tick, and the comparison
# of the hook with our train.py for every registered preset.

_CHILD = r"""
import contextlib, io, json, runpy, sys, time, traceback
import torch
import dnnlib

def script(*argv):
    # python train.py ARGV: the patched file's __main__ block, stdout captured.
    out, code = io.StringIO(), 0
    sys.argv = ['train.py'] + list(argv)
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path('train.py', run_name='__main__')
        except SystemExit as exit:
            code = exit.code or 0
    return code, out.getvalue()

def options_of(text):
    start = text.index('{', text.index('Training options:'))
    return json.JSONDecoder().raw_decode(text[start:])[0]

def phases(args, tiny):
    # Build G, D, the augment pipe and the loss as upstream's loop does, then one call per phase.
    torch.manual_seed(0)
    args = json.loads(json.dumps(args), object_hook=dnnlib.EasyDict)
    args.loss_kwargs.teacher.update(spec='random:tiny', config=tiny)   # ViT-B-32 takes 20 s on a CPU
    args.D_kwargs.student_dim = json.load(open(tiny))['embed_dim']      # what --teacher sets for it
    args.loss_kwargs.terms.recon.kind = 'mse'                           # LPIPS needs NVIDIA's vgg16.pt
    dims = dict(c_dim=0, img_resolution=args.training_set_kwargs.resolution, img_channels=3)
    G = dnnlib.util.construct_class_by_name(**args.G_kwargs, **dims).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**args.D_kwargs, **dims).train().requires_grad_(False)
    pipe = None
    if args.augment_kwargs is not None and (args.augment_p > 0 or args.ada_target is not None):
        pipe = dnnlib.util.construct_class_by_name(**args.augment_kwargs).train().requires_grad_(False)
        pipe.p.copy_(torch.as_tensor(args.augment_p))
    loss = dnnlib.util.construct_class_by_name(device=torch.device('cpu'), G_mapping=G.mapping,
                                               G_synthesis=G.synthesis, D=D, augment_pipe=pipe, **args.loss_kwargs)
    ran, batch, res = [], 2, dims['img_resolution']
    for name, net, interval in (('G', G, args.G_reg_interval), ('D', D, args.D_reg_interval)):
        for kind in (('main', 'reg') if interval is not None else ('both',)):
            net.requires_grad_(True)
            loss.accumulate_gradients(name + kind, torch.rand([batch, 3, res, res]) * 2 - 1, torch.zeros([batch, 0]),
                                      torch.randn([batch, G.z_dim]), torch.zeros([batch, 0]), sync=True, gain=1)
            net.requires_grad_(False)
            ran.append(name + kind)
    return dict(phases=ran, loss=type(loss).__name__, pipe=type(pipe).__name__,
                student_grad=all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.student.parameters()),
                G_grad=all(p.grad is not None for p in G.parameters()),
                teacher_frozen=all(p.grad is None for p in loss.get_teacher().parameters()))

def matrix(common, extra):
    from click.testing import CliRunner
    import train
    from kdgan_plugins import registry
    from kdgan_plugins.upstream import hook
    from training import config
    config.load_registry()
    names = {kind: registry.names(kind) for kind in ('cfg', 'loss', 'aug')}
    cases = [[f'--cfg={name}'] for name in names['cfg']] + [[f'--loss={name}'] for name in names['loss']]
    cases += [['--cfg=fastgan', f'--loss={name}'] for name in names['loss']]
    cases += [[f'--aug={name}'] for name in names['aug']] + [['--cfg=paper256', f'--aug={name}'] for name in names['aug']]
    out = []
    for case in cases + extra:
        base = CliRunner().invoke(train.main, common + case)
        mine = CliRunner().invoke(hook.make_command(train), common + case)
        out.append(dict(case=case, base=[base.exit_code, base.output], hook=[mine.exit_code, mine.output]))
    return dict(results=out, registered=names, plugin_only=list(hook.hook_options(True)))

plan = json.load(open(sys.argv[1]))
report = dict(cpu_seconds={})
def step(name, func, *args):
    start = time.process_time()
    try:
        report[name] = func(*args)
    except BaseException:
        report[name] = dict(error=traceback.format_exc())
    report['cpu_seconds'][name] = round(time.process_time() - start, 1)

step('done_when', script, *plan['done_when'])
if 'error' not in report['done_when'] and report['done_when'][0] == 0:
    step('phases', phases, options_of(report['done_when'][1]), plan['tiny'])
step('tick', script, *plan['tick'])
step('matrix', matrix, plan['common'], plan['extra'])
print('REPORT' + json.dumps(report))
"""

EXTRA_CASES = [
    [], ['--cfg=cifar', '--aug=noaug'], ['--cfg=stylegan2', '--aug=fixed', '--p=0.2'],
    ['--cfg=fastgan', '--aug=ada', '--target=0.7'], ['--cfg=fastgan', '--loss=stylegan2'],
    ['--cfg=fastgan', '--recon=mse', '--recon-weight=2', '--ngf=16', '--ndf=8', '--batch=4', '--kimg=10', '--ema=3'],
    ['--cfg=fastgan_lite', '--loss=kdgan.KDDLGAN', '--kd-p=0.5', '--kd-dist=l1', '--teacher=random:ViT-B-32',
     '--kd-agkd-weight=3', '--kd-cgkd-weight=4', '--kd-labels=a,b', '--mirror=1'],
    ['--cfg=paper256', '--loss=kdgan.CGKD', '--gamma=2', '--fp32=1', '--freezed=1', '--kd-diversity=0.5'],
    ['--aug=diffaug', '--p=0.5'], ['--cfg=cifar', '--aug=diffaug', '--loss=kdgan.AGKD', '--seed=3'],
    ['--cbase=4096', '--cmax=64', '--map-depth=2', '--mbstd-group=2'], ['--ada-kimg=50'],
    # Refusals: the same exit status, and the hook's message names the same problem.
    ['--cfg=nosuch'], ['--cfg=paper256', '--ngf=8'], ['--cfg=fastgan', '--kd-p=0.5'],
]


def _run_child(tree):
    """The child's report: {step: result, or {'error': traceback}}."""
    data = str(tree / 'shapes.zip')
    plan = dict(
        done_when=['--outdir=o', f'--data={data}', '--cfg=fastgan', '--loss=kdgan.AGKD', '--teacher=random:ViT-B-32',
                   '--dry-run'],
        tiny=str(tree / 'tiny.json'),
        tick=[f'--outdir={tree / "tick"}', f'--data={data}', '--cfg=fastgan', '--loss=kdgan.AGKD',
              '--teacher=random:tiny', f'--teacher-config={tree / "tiny.json"}', '--recon=mse', '--ngf=8', '--ndf=8',
              '--kimg=0.008', '--tick=0.008', '--snap=1', '--metrics=none', '--workers=0', '--device=cpu'],
        common=['--outdir', str(tree / 'runs'), '--data', data, '--metrics=none', '--dry-run'],
        extra=EXTRA_CASES)
    (tree / 'plan.json').write_text(json.dumps(plan))
    out = _child(tree / 'tree', ['-c', _CHILD, str(tree / 'plan.json')])
    return json.loads(out[out.index('REPORT') + len('REPORT'):])


def _step(child, name):
    result = child.get(name)
    assert result is not None, f'step {name} did not run'
    assert not (isinstance(result, dict) and 'error' in result), result['error']
    return result


def _untwinned(options):
    """The hook's options with the loss' upstream-ready twin named as our train.py names it."""
    from kdgan_plugins.upstream.loss import CLASS_NAMES
    back = {twin: name for name, twin in CLASS_NAMES.items()}
    loss = options.get('loss_kwargs') or {}
    if loss.get('class_name') in back:
        loss['class_name'] = back[loss['class_name']]
    return options


def _check_matrix(child):
    """The hook resolves every registered preset (and the plug-in options) like our train.py."""
    found = _step(child, 'matrix')
    plugin_flags = {'--' + name.replace('_', '-') for name in found['plugin_only']}
    for result in found['results']:
        (base_code, base_out), (hook_code, hook_out) = result['base'], result['hook']
        assert base_code == hook_code, (result['case'], base_out[-600:], hook_out[-600:])
        if base_code != 0:
            first = base_out.strip().splitlines()[-1].split(':')[-1].strip()[:30]
            assert first and first in hook_out, (result['case'], base_out[-400:], hook_out[-400:])
            continue
        assert _untwinned(_options(hook_out)) == _options(base_out), result['case']
        given = dict(arg[2:].split('=', 1) for arg in result['case'])
        plugin = any(given.get(kind) in found['registered'][kind] for kind in ('cfg', 'loss', 'aug'))
        plugin = plugin or any('--' + flag in plugin_flags for flag in given)
        if plugin:
            assert 'kdgan plug-ins' in hook_out, result['case']
        else:
            assert hook_out == base_out, result['case']  # built-in command lines reach the host untouched


def _check_done_when(child):
    """The issue's command, through the patched train.py, names our objects; each phase runs."""
    code, out = _step(child, 'done_when')
    assert code == 0, out[-2000:]
    options = _options(out)
    assert 'kdgan plug-ins' in out
    assert options['G_kwargs']['class_name'] == 'kdgan_plugins.networks.fastgan.Generator'
    assert options['D_kwargs']['class_name'] == 'kdgan_plugins.networks.student.KDDiscriminator'
    assert options['D_kwargs']['backbone_class_name'] == 'kdgan_plugins.networks.fastgan.Discriminator'
    loss = options['loss_kwargs']
    assert loss['class_name'] == TWIN + 'FastGANLoss'  # the host's training.loss takes no terms
    assert loss['terms']['agkd']['class_name'] == 'kdgan_plugins.losses.kd.AGKD'
    assert loss['teacher']['spec'] == 'random:ViT-B-32'
    assert options['augment_kwargs']['class_name'] == 'kdgan_plugins.augment.diffaugment.DiffAugment'
    assert options['augment_p'] > 0  # so that upstream's loop builds the pipe
    report = _step(child, 'phases')
    assert report['phases'] == ['Gboth', 'Dboth']  # FastGAN: no lazy regularisation
    assert report['loss'] == 'FastGANLoss' and report['pipe'] == 'DiffAugment'
    assert report['student_grad'] and report['G_grad'] and report['teacher_frozen']


def _check_tick(child, tree):
    """One tick on the CPU through the patched train.py, with the host's own loop."""
    code, out = _step(child, 'tick')
    assert code == 0, out[-2000:]
    (run_dir,) = (tree / 'tick').iterdir()
    assert run_dir.name.endswith('-fastgan-kimg0.008-kdgan.AGKD-diffaug')  # as our train.py names it
    options = json.loads((run_dir / 'training_options.json').read_text())
    assert options['loss_kwargs']['class_name'] == TWIN + 'FastGANLoss'
    assert (run_dir / 'network-snapshot-000000.pkl').is_file()
    stats = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    last = stats[-1]
    assert last['Progress/augment']['mean'] == 1.0  # DiffAugment was built and applied
    for name in ('Loss/D/agkd_kd_real', 'Loss/D/recon_big', 'Loss/G/loss'):
        assert np.isfinite(last[name]['mean']), name


def test_the_hook_inside_an_upstream_stand_in(tree):
    """One child (one start-up, so pytest -n runs it once) carries every step; see _CHILD."""
    child = _run_child(tree)
    _check_done_when(child)
    _check_tick(child, tree)
    _check_matrix(child)


# The fill-ins.

def test_fill_ins_serve_only_what_the_host_lacks(tmp_path):
    for package in ('training', 'metrics', 'dnnlib'):
        (tmp_path / package).mkdir()
        (tmp_path / package / '__init__.py').write_text(f'HOST = "{package}"\n')
    with open(tmp_path / 'dnnlib' / '__init__.py', 'a') as f:  # the one name of it that cfg_specs uses
        f.write('class EasyDict(dict):\n    __getattr__ = dict.__getitem__\n')
    (tmp_path / 'training' / 'shapes.py').write_text('HOST = "shapes"\n')
    body = textwrap.dedent('''
        import dnnlib
        from kdgan_plugins.upstream import harness
        harness.install()
        from training import cfg_specs, shapes
        from metrics import detectors
        assert shapes.HOST == 'shapes'                       # the host's own module wins
        assert cfg_specs.resolve_cfg('paper256', 256).mb == 64   # ours fills the gap
        assert detectors.dnnlib is not dnnlib and hasattr(detectors.dnnlib.util, 'open_url')
        assert dnnlib.HOST == 'dnnlib'                       # the host's dnnlib is untouched
        print('OK')
    ''')
    assert _child(tmp_path, ['-c', body]).strip().endswith('OK')
