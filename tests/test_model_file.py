"""Weights-only model files (training/model_file.py): the networks rebuild bit-exactly without
unpickling, the tools read them and give the pickle's images, and pickles that name anything a
network pickle never does are refused before that code runs."""
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
import legacy
import style_mixing
from helpers import HARNESS, one_thread  # noqa: F401 (autouse fixture)
from torch_utils import misc, persistence
from training import augment, model_file, networks

from kdgan_plugins.networks import fastgan, student


def tiny_G(c_dim=0, seed=0):
    torch.manual_seed(seed)
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=16, img_channels=3,
                              mapping_kwargs=dict(num_layers=2),
                              synthesis_kwargs=dict(channel_base=256, channel_max=16, num_fp16_res=1,
                                                    conv_clamp=256)).eval().requires_grad_(False)


def snapshot(c_dim=0):
    torch.manual_seed(1)
    D = student.KDDiscriminator(c_dim=c_dim, img_resolution=16, img_channels=3, channel_base=256, channel_max=16,
                                student_dim=8, student_hidden=8).eval().requires_grad_(False)
    pipe = augment.AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, brightness=1).eval()
    pipe.p.fill_(0.25)
    G = tiny_G(c_dim)
    return dict(G=G, D=D, G_ema=tiny_G(c_dim, seed=5), augment_pipe=pipe,
                training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='data.zip',
                                         resolution=16, use_labels=c_dim > 0, xflip=False, max_size=None))


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A snapshot pickle and its model file, written by save_model_file."""
    root = tmp_path_factory.mktemp('model_file')
    data = snapshot(c_dim=3)
    pkl = root / 'network-snapshot-000004.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(data, f)
    model = model_file.save_model_file(model_file.model_path_for(str(pkl)), data)
    return dict(pkl=str(pkl), model=model, data=data, root=root)


def assert_same_tensors(a, b):
    named_a, named_b = dict(misc.named_params_and_buffers(a)), dict(misc.named_params_and_buffers(b))
    assert sorted(named_a) == sorted(named_b)
    for name, tensor in named_a.items():
        assert tensor.dtype == named_b[name].dtype and torch.equal(tensor, named_b[name]), name


def test_round_trip_rebuilds_every_network_exactly(files):
    assert files['model'].endswith('network-snapshot-000004.safetensors')
    assert model_file.is_model_file(files['model']) and not model_file.is_model_file(files['pkl'])
    loaded = model_file.load_model_file(files['model'])
    assert sorted(loaded) == sorted(legacy.ALL_KEYS)
    assert loaded['training_set_kwargs'] == files['data']['training_set_kwargs']
    for key in model_file.NETWORK_KEYS:
        assert type(loaded[key]).__name__ == type(files['data'][key]).__name__
        assert not loaded[key].training and not any(p.requires_grad for p in loaded[key].parameters())
        assert_same_tensors(loaded[key], files['data'][key])
    z = torch.randn([2, 16], generator=torch.Generator().manual_seed(0))
    c = torch.eye(3)[:2]
    assert torch.equal(loaded['G_ema'](z, c, noise_mode='const'), files['data']['G_ema'](z, c, noise_mode='const'))
    img = torch.randn([2, 3, 16, 16], generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded['D'](img, c), files['data']['D'](img, c))
    assert loaded['augment_pipe'].p.item() == 0.25


def test_loading_leaves_the_callers_random_stream_alone(files):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    model_file.load_model_file(files['model'])
    assert torch.equal(torch.rand(3), expected)


def test_fastgan_networks_round_trip(tmp_path):
    torch.manual_seed(0)
    G = fastgan.Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=64, img_channels=3, ngf=16).eval()
    path = model_file.save_model_file(tmp_path / 'fg.safetensors', dict(G=G, G_ema=G))
    loaded = model_file.load_model_file(path)
    assert loaded['D'] is None and loaded['augment_pipe'] is None
    z = torch.randn([2, 32], generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded['G_ema'](z, torch.zeros([2, 0]), noise_mode='const'),
                       G(z, torch.zeros([2, 0]), noise_mode='const'))


def test_tuples_and_nested_kwargs_survive(tmp_path):
    value = dict(a=(1, 2.5, 'x'), b=[1, (2, None)], c=dict(d=True))
    assert model_file._from_json_value(json.loads(json.dumps(model_file._to_json_value(value, 'v')))) == value


def _rewrite_metadata(src, dest, edit):
    """A copy of a model file with its JSON header changed by `edit(header)`."""
    data = open(src, 'rb').read()
    size = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + size])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b' ' * (-len(raw) % 8)
    with open(dest, 'wb') as f:
        f.write(struct.pack('<Q', len(raw)) + raw + data[8 + size:])


@pytest.mark.parametrize('class_name', ['os.system', 'subprocess.Popen', 'training.networks.misc',
                                        'training.dataset.ImageFolderDataset'])
def test_a_model_file_cannot_name_arbitrary_callables(files, tmp_path, class_name):
    def edit(header):
        nets = json.loads(header['__metadata__']['networks'])
        nets['G']['class_name'] = class_name
        nets['G']['args'] = {'__tuple__': [f'touch {tmp_path}/ran']}
        header['__metadata__']['networks'] = json.dumps(nets)
    crafted = tmp_path / 'crafted.safetensors'
    _rewrite_metadata(files['model'], crafted, edit)
    with pytest.raises(model_file.ModelFileError, match='G: '):
        model_file.load_model_file(crafted)
    assert not (tmp_path / 'ran').exists()


def test_mismatched_tensors_are_named(files, tmp_path):
    def edit(header):
        nets = json.loads(header['__metadata__']['networks'])
        nets['G_ema']['kwargs']['synthesis_kwargs']['channel_max'] = 8
        header['__metadata__']['networks'] = json.dumps(nets)
    _rewrite_metadata(files['model'], tmp_path / 'bad.safetensors', edit)
    with pytest.raises(model_file.ModelFileError, match=r'G_ema: .* has shape'):
        model_file.load_model_file(tmp_path / 'bad.safetensors')


def _no_unpickling_child(cwd, body):
    """Run `body` in a fresh Python in `cwd` where pickle.load/loads/Unpickler raise (patched before
    anything else is imported)."""
    child = textwrap.dedent('''
        import pickle, sys, torch
        torch.set_num_threads(1)
        def refuse(*args, **kwargs):
            raise RuntimeError("unpickling is disabled in this process")
        class Refuse:
            def __init__(self, *args, **kwargs):
                refuse()
        pickle.load = pickle.loads = refuse
        pickle.Unpickler = Refuse
    ''') + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HARNESS, os.path.dirname(HARNESS)]), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-c', child], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _pngs(folder):
    return {name: np.asarray(PIL.Image.open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))}


def test_generate_from_model_file_without_unpickling_matches_pickle(files, tmp_path):
    only_pkl = tmp_path / 'net.pkl'   # no model file beside it: generate.py must unpickle
    only_pkl.write_bytes(open(files['pkl'], 'rb').read())
    result = CliRunner().invoke(generate.generate_images, ['--network', str(only_pkl), '--seeds=0-2', '--class=1',
                                                           '--trunc=0.7', '--outdir', str(tmp_path / 'from_pkl')])
    assert result.exit_code == 0, result.output
    proc = _no_unpickling_child(HARNESS, f'''
        import generate
        try:
            pickle.load(open({str(only_pkl)!r}, "rb"))
        except RuntimeError:
            pass
        else:
            sys.exit("unpickling was not disabled")
        sys.argv = ["generate.py", "--network={files["model"]}", "--seeds=0-2", "--class=1", "--trunc=0.7",
                    "--outdir={tmp_path / 'from_model'}"]
        generate.generate_images()
    ''')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from_pkl, from_model = _pngs(tmp_path / 'from_pkl'), _pngs(tmp_path / 'from_model')
    assert sorted(from_model) == ['seed0000.png', 'seed0001.png', 'seed0002.png'] == sorted(from_pkl)
    for name in from_pkl:
        assert np.array_equal(from_pkl[name], from_model[name]), name


def test_a_pickle_with_a_model_file_beside_it_is_read_without_unpickling(files, tmp_path):
    proc = _no_unpickling_child(HARNESS, f'''
        import legacy
        nets = legacy.load_network({files["pkl"]!r})
        print(type(nets["G_ema"]).__name__, nets["training_set_kwargs"]["path"])
    ''')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'weights-only model file beside the pickle' in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == 'Generator data.zip'


def test_style_mixing_and_calc_metrics_read_model_files(files, tmp_path):
    import calc_metrics
    for name, source in (('pkl', files['pkl']), ('model', files['model'])):
        result = CliRunner().invoke(style_mixing.generate_style_mix, [
            '--network', source, '--rows=0-1', '--cols=2', '--styles=0-1', '--class=2', '--trunc=0.5',
            '--outdir', str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    a, b = _pngs(tmp_path / 'pkl'), _pngs(tmp_path / 'model')
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    G, kwargs = calc_metrics._load_network(files['model'])
    assert_same_tensors(G, files['data']['G_ema'])
    assert kwargs['path'] == 'data.zip'


@pytest.mark.parametrize('value', ['nan', 'inf', '-inf'])
def test_trunc_must_be_finite(files, tmp_path, value):
    for command, extra in ((generate.generate_images, ['--seeds=0']),
                           (style_mixing.generate_style_mix, ['--rows=0', '--cols=1'])):
        result = CliRunner().invoke(command, ['--network', files['model'], f'--trunc={value}', '--class=0',
                                              '--outdir', str(tmp_path / 'out')] + extra)
        assert result.exit_code == 2, result.output
        assert 'not a finite number' in result.output
    assert not (tmp_path / 'out').exists()


class _Shell:
    """Unpickles as os.system(...): the classic crafted pickle."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_crafted_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / 'ran'
    crafted = tmp_path / 'evil.pkl'
    with open(crafted, 'wb') as f:
        pickle.dump(dict(G=_Shell(f'touch {marker}')), f)
    with pytest.raises(pickle.UnpicklingError, match='refers to (posix|os|nt).system'):
        with open(crafted, 'rb') as f:
            legacy.load_network_pkl(f)
    result = CliRunner().invoke(generate.generate_images, ['--network', str(crafted), '--seeds=0',
                                                           '--outdir', str(tmp_path / 'out')])
    assert result.exit_code == 1 and 'not a network pickle' in result.output, result.output
    assert not marker.exists()


class _NestedStorage:
    """Unpickles as torch.storage._load_from_bytes(data): how torch pickles a tensor's storage."""

    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.data,))


def test_pickle_storages_are_read_as_weights_only(tmp_path):
    """torch pickles storages as a nested torch.load of bytes, which torch itself unpickles with no
    restriction; in a network pickle that nested load must be weights-only."""
    live = _torch_saved(pickle.dumps(_Shell(f'touch {tmp_path}/live'), protocol=2))
    torch.storage._load_from_bytes(live)   # the payload is real: torch's own loader runs it
    assert (tmp_path / 'live').exists()
    payload = _torch_saved(pickle.dumps(_Shell(f'touch {tmp_path}/ran'), protocol=2))
    crafted = tmp_path / 'nested.pkl'
    with open(crafted, 'wb') as f:
        pickle.dump(dict(G=_NestedStorage(payload)), f)
    with pytest.raises(pickle.UnpicklingError, match='not a network pickle'):
        with open(crafted, 'rb') as f:
            legacy.load_network_pkl(f)
    assert not (tmp_path / 'ran').exists()


def _torch_saved(raw_pickle):
    """Bytes in torch.save's zip layout whose data.pkl is `raw_pickle`."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        zf.writestr('archive/data.pkl', raw_pickle)
        zf.writestr('archive/version', '3\n')
        zf.writestr('archive/byteorder', 'little')
    return buf.getvalue()


def test_export_cli_from_pickle_of_other_source(tmp_path):
    """A pickle whose embedded source differs from this checkout's (an older version, upstream's) is
    exported under the importable class of the same name, and rebuilds exactly."""
    data = dict(G=tiny_G(), D=None, G_ema=tiny_G(seed=3), augment_pipe=None, training_set_kwargs=None)
    raw = pickle.dumps(data)

    def edit_source(meta):
        if meta.class_name == 'Generator':
            meta.module_src = meta.module_src + '\n# an older revision\n'
    persistence.import_hook(edit_source)
    try:
        old = pickle.loads(raw)
    finally:
        persistence._import_hooks.remove(edit_source)
    assert type(old['G']).__module__.startswith('_imported_module_')
    with open(tmp_path / 'old.pkl', 'wb') as f:
        pickle.dump(old, f)
    cwd = os.getcwd()
    try:
        os.chdir(HARNESS)
        result = CliRunner().invoke(legacy.convert_network_pickle, ['--source', str(tmp_path / 'old.pkl'),
                                                                    '--dest', str(tmp_path / 'old.safetensors')])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output + repr(result.exception)
    loaded = model_file.load_model_file(tmp_path / 'old.safetensors')
    assert type(loaded['G']) is networks.Generator
    assert_same_tensors(loaded['G_ema'], data['G_ema'])
    assert model_file.model_path_for('a/b.pkl') == 'a/b.safetensors'
