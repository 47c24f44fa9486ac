"""Network pickles: self-contained (load where `training` cannot be
imported, with bit-identical output), in upstream's persistence format, and
read back by legacy.load_network_pkl, including TensorFlow-era pickles."""
import inspect
import os
import subprocess
import io
import pickle
import sys
import types

import pytest
import torch

import dnnlib
import legacy
from helpers import run_pickle_child, torch_threads
from training import networks


def tiny_G(c_dim=0, **mapping_kwargs):
    return networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=32, img_channels=3,
                              mapping_kwargs=dict(num_layers=2, **mapping_kwargs),
                              synthesis_kwargs=dict(channel_base=512, channel_max=32))


def tiny_D(c_dim=0, **kwargs):
    return networks.Discriminator(c_dim=c_dim, img_resolution=32, img_channels=3, channel_base=512, channel_max=32,
                                  **kwargs)


def randomise(module, seed):
    """Give every parameter and buffer non-trivial values (noise strengths, w_avg, biases)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not name.endswith('resample_filter'):
                t.add_(torch.randn(t.shape, generator=gen) * 0.2)
    return module


@pytest.fixture()
def one_thread():
    """Same thread count in parent and child, so CPU kernels reduce in the same order."""
    with torch_threads(1):
        yield


def test_pickle_loads_without_training_and_matches_bitwise(tmp_path, one_thread):
    torch.manual_seed(0)
    G = randomise(tiny_G(), 1).eval().requires_grad_(False)
    with open(tmp_path / 'net.pkl', 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    z = torch.randn(3, G.z_dim)
    torch.save(z, tmp_path / 'z.pt')
    expected = G(z, None, noise_mode='const')

    # A `training` package in the child's cwd (first on sys.path) that refuses to import.
    proc = run_pickle_child(tmp_path, 'training', '''
        G = data["G_ema"]
        assert type(G).__module__.startswith("_imported_module_"), type(G).__module__
        assert "training" not in sys.modules and "training.networks" not in sys.modules
        img = G(torch.load("z.pt"), None, noise_mode="const")
        torch.save(img, "img_child.pt")
        import legacy
        with open("net.pkl", "rb") as f:
            loaded = legacy.load_network_pkl(f)
        print(sorted(loaded))
    ''')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(sorted(legacy.ALL_KEYS))
    assert torch.equal(torch.load(tmp_path / 'img_child.pt'), expected)


def test_pickle_uses_persistence_format_v6():
    G = tiny_G()
    raw = pickle.dumps(G)
    assert b'torch_utils.persistence' in raw and b'_reconstruct_persistent_obj' in raw
    assert b'training.networks' not in raw  # Only the embedded source, never an import of our module.

    metas = []

    class Spy(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ('torch_utils.persistence', '_reconstruct_persistent_obj'):
                return lambda meta: metas.append(meta) or meta
            return super().find_class(module, name)

    top = Spy(io.BytesIO(raw)).load()
    assert top['class_name'] == 'Generator' and top['type'] == 'class' and top['version'] == 6
    assert top['module_src'] == inspect.getsource(networks)
    assert isinstance(top['state'], dict) and '_modules' in top['state']
    assert {m['class_name'] for m in metas} >= {'Generator', 'MappingNetwork', 'SynthesisNetwork', 'SynthesisBlock',
                                                  'SynthesisLayer', 'ToRGBLayer', 'FullyConnectedLayer'}
    assert all(m['version'] == 6 for m in metas)


def test_load_network_pkl_documented_dict(tmp_path):
    torch.manual_seed(2)
    G, D = tiny_G().eval(), tiny_D().eval()
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path='x.zip')
    path = tmp_path / 'snap.pkl'
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=kwargs), f)
    with open(path, 'rb') as f:
        data = legacy.load_network_pkl(f)
    assert sorted(data) == sorted(legacy.ALL_KEYS)
    assert data['training_set_kwargs'] == kwargs and data['augment_pipe'] is None
    z = torch.randn(2, G.z_dim)
    torch.testing.assert_close(data['G_ema'](z, None, noise_mode='const'), G(z, None, noise_mode='const'))
    img = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(data['D'](img, None), D(img, None))

    # Missing entries are filled with None.
    with open(path, 'wb') as f:
        pickle.dump(dict(G_ema=G), f)
    with open(path, 'rb') as f:
        data = legacy.load_network_pkl(f)
    assert sorted(data) == sorted(legacy.ALL_KEYS)
    assert data['G'] is None and data['D'] is None and data['training_set_kwargs'] is None
    assert isinstance(data['G_ema'], torch.nn.Module)


def test_force_fp16_rebuilds_with_same_weights(tmp_path):
    torch.manual_seed(3)
    G, D = randomise(tiny_G(), 4).eval(), tiny_D().eval()
    path = tmp_path / 'snap.pkl'
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G), f)
    with open(path, 'rb') as f:
        data = legacy.load_network_pkl(f, force_fp16=True)
    G16, D16 = data['G_ema'], data['D']
    assert [G16.synthesis.get_submodule(f'b{r}').use_fp16 for r in G16.synthesis.block_resolutions] == \
        [False, True, True, True]
    assert G16.init_kwargs.synthesis_kwargs.num_fp16_res == 4 and G16.init_kwargs.synthesis_kwargs.conv_clamp == 256
    assert D16.init_kwargs.num_fp16_res == 4 and D16.init_kwargs.conv_clamp == 256
    assert not G16.training
    z = torch.randn(2, G.z_dim)
    # On CPU fp16 layers compute in fp32, so only the clamp could differ (it does not at this scale).
    torch.testing.assert_close(G16(z, None, noise_mode='const'), G(z, None, noise_mode='const'))
    img = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(D16(img, None), D(img, None))


@pytest.mark.parametrize('content', [
    b'this is not a pickle at all',
    pickle.dumps([1, 2, 3]),
    pickle.dumps(dict(foo=1)),
    pickle.dumps(dict(G_ema='not a network')),
    b'',
])
def test_load_network_pkl_rejects_other_files(tmp_path, content):
    path = tmp_path / 'bad.pkl'
    path.write_bytes(content)
    with open(path, 'rb') as f:
        with pytest.raises(pickle.UnpicklingError, match='not a network pickle'):
            legacy.load_network_pkl(f)

# TensorFlow-era pickles, synthesised from our networks under TF variable names.

def tf_dense(fc):
    return fc.weight.detach().numpy().T.copy()


def tf_conv(weight, flip=False):
    """Ours [out, in, kh, kw] -> TF [kh, kw, in, out]; TF's up-convs stored flipped kernels."""
    w = weight.detach().numpy()
    if flip:
        w = w[:, :, ::-1, ::-1]
    return w.transpose(2, 3, 1, 0).copy()


def np_(t):
    return t.detach().numpy().copy()


def tf_generator_vars(G):
    mapping = []
    for i in range(G.mapping.num_layers):
        fc = getattr(G.mapping, f'fc{i}')
        mapping += [(f'Dense{i}/weight', tf_dense(fc)), (f'Dense{i}/bias', np_(fc.bias))]
    if G.c_dim:
        mapping += [('LabelEmbed/weight', tf_dense(G.mapping.embed)), ('LabelEmbed/bias', np_(G.mapping.embed.bias))]
    synthesis, noise_idx = [], 0
    for res in G.synthesis.block_resolutions:
        block = G.synthesis.get_submodule(f'b{res}')
        if res == 4:
            synthesis.append(('4x4/Const/const', np_(block.const)[None]))
        for ours, tf in ([('conv1', 'Conv')] if res == 4 else [('conv0', 'Conv0_up'), ('conv1', 'Conv1')]):
            layer = getattr(block, ours)
            prefix = f'{res}x{res}/{tf}'
            synthesis += [(f'{prefix}/weight', tf_conv(layer.weight, flip=(ours == 'conv0'))),
                          (f'{prefix}/mod_weight', tf_dense(layer.affine)),
                          (f'{prefix}/mod_bias', np_(layer.affine.bias) - 1),
                          (f'{prefix}/noise_strength', np_(layer.noise_strength)),
                          (f'{prefix}/bias', np_(layer.bias))]
            synthesis.append((f'noise{noise_idx}', np_(layer.noise_const)[None, None]))
            noise_idx += 1
        rgb = block.torgb
        synthesis += [(f'{res}x{res}/ToRGB/weight', tf_conv(rgb.weight)),
                      (f'{res}x{res}/ToRGB/mod_weight', tf_dense(rgb.affine)),
                      (f'{res}x{res}/ToRGB/mod_bias', np_(rgb.affine.bias) - 1),
                      (f'{res}x{res}/ToRGB/bias', np_(rgb.bias))]
    return [('dlatent_avg', np_(G.mapping.w_avg))], mapping, synthesis


def tf_discriminator_vars(D):
    variables = []
    tf_names = dict(fromrgb='FromRGB', conv0='Conv0', conv1='Conv1_down', skip='Skip')
    for res in D.block_resolutions:
        block = D.get_submodule(f'b{res}')
        for ours, tf in tf_names.items():
            if hasattr(block, ours):
                layer = getattr(block, ours)
                variables.append((f'{res}x{res}/{tf}/weight', tf_conv(layer.weight)))
                if layer.bias is not None:
                    variables.append((f'{res}x{res}/{tf}/bias', np_(layer.bias)))
    variables += [('4x4/Conv/weight', tf_conv(D.b4.conv.weight)), ('4x4/Conv/bias', np_(D.b4.conv.bias)),
                  ('4x4/Dense0/weight', tf_dense(D.b4.fc)), ('4x4/Dense0/bias', np_(D.b4.fc.bias)),
                  ('Output/weight', tf_dense(D.b4.out)), ('Output/bias', np_(D.b4.out.bias))]
    if D.c_dim:
        variables += [('LabelEmbed/weight', tf_dense(D.mapping.embed)), ('LabelEmbed/bias', np_(D.mapping.embed.bias))]
        for i in range(D.mapping.num_layers):
            fc = getattr(D.mapping, f'fc{i}')
            variables += [(f'Mapping{i}/weight', tf_dense(fc)), (f'Mapping{i}/bias', np_(fc.bias))]
    return variables


def write_tf_pickle(path, G, D, G_kwargs, D_kwargs, monkeypatch, drop=None):
    """Pickle (G, D, Gs) as instances of a class named dnnlib.tflib.network.Network."""

    class Network:
        def __init__(self, name, static_kwargs, variables, components=None):
            self.name, self.static_kwargs, self.variables = name, static_kwargs, variables
            self.components = dnnlib.EasyDict(components or {})

        def __getstate__(self):
            return dict(version=4, name=self.name, static_kwargs=dict(self.static_kwargs),
                        components=self.components, build_module_src='# TF source', build_func_name=self.name,
                        variables=[(n, v) for n, v in self.variables if n != drop])

    Network.__module__, Network.__qualname__ = 'dnnlib.tflib.network', 'Network'
    tflib, network_mod = types.ModuleType('dnnlib.tflib'), types.ModuleType('dnnlib.tflib.network')
    network_mod.Network = Network
    tflib.network = network_mod
    monkeypatch.setitem(sys.modules, 'dnnlib.tflib', tflib)
    monkeypatch.setitem(sys.modules, 'dnnlib.tflib.network', network_mod)

    def tf_G(name):
        own, mapping, synthesis = tf_generator_vars(G)
        return Network(name, G_kwargs, own, dict(mapping=Network('G_mapping', G_kwargs, mapping),
                                                   synthesis=Network('G_synthesis', G_kwargs, synthesis)))
    with open(path, 'wb') as f:
        pickle.dump((tf_G('G'), Network('D', D_kwargs, tf_discriminator_vars(D)), tf_G('Gs')), f, protocol=3)
    monkeypatch.delitem(sys.modules, 'dnnlib.tflib.network')
    monkeypatch.delitem(sys.modules, 'dnnlib.tflib')


# TF static kwargs and the PyTorch networks they describe (TF fmap_base = channel_base / 2).
TF_G_KWARGS = dict(num_channels=3, resolution=32, label_size=3, latent_size=16, dlatent_size=16, mapping_layers=2,
                   fmap_base=256, fmap_max=32, architecture='skip', truncation_psi=0.5)
TF_D_KWARGS = dict(num_channels=3, resolution=32, label_size=3, fmap_base=256, fmap_max=32, mapping_layers=2,
                   mapping_fmaps=24, mbstd_group_size=2, architecture='resnet')


def tf_source_nets():
    torch.manual_seed(5)
    G = randomise(tiny_G(c_dim=3), 6).eval()
    D = randomise(tiny_D(c_dim=3, cmap_dim=24, mapping_kwargs=dict(num_layers=2, embed_features=24, layer_features=24,
                                                                    lr_multiplier=0.1),
                         epilogue_kwargs=dict(mbstd_group_size=2)), 7).eval()
    return G, D


def test_tf_pickle_conversion_matches_source(tmp_path, monkeypatch):
    G, D = tf_source_nets()
    path = tmp_path / 'tf.pkl'
    write_tf_pickle(path, G, D, TF_G_KWARGS, TF_D_KWARGS, monkeypatch)
    assert 'dnnlib.tflib.network' not in sys.modules
    with open(path, 'rb') as f:
        data = legacy.load_network_pkl(f)
    assert sorted(data) == sorted(legacy.ALL_KEYS)
    G2, D2, Gs2 = data['G'], data['D'], data['G_ema']
    assert isinstance(G2, networks.Generator) and isinstance(D2, networks.Discriminator)
    for src, dst in [(G, G2), (G, Gs2), (D, D2)]:
        src_t = dict(src.state_dict())
        for name, t in dst.state_dict().items():
            assert torch.equal(t, src_t[name]), name
    z = torch.randn(4, G.z_dim)
    c = torch.eye(3)[[0, 1, 2, 0]]
    img = G(z, c, truncation_psi=0.5, noise_mode='const')
    torch.testing.assert_close(Gs2(z, c, truncation_psi=0.5, noise_mode='const'), img)
    torch.testing.assert_close(D2(img, c), D(img, c))


def test_tf_pickle_missing_variable_is_named(tmp_path, monkeypatch):
    G, D = tf_source_nets()
    path = tmp_path / 'tf.pkl'
    write_tf_pickle(path, G, D, TF_G_KWARGS, TF_D_KWARGS, monkeypatch, drop='16x16/Conv0_up/weight')
    with open(path, 'rb') as f:
        with pytest.raises(pickle.UnpicklingError, match='16x16/Conv0_up/weight'):
            legacy.load_network_pkl(f)


def test_pickle_loads_outside_the_tree(tmp_path, one_thread):
    """The README's promise for a user's own script: with the project installed
    (`pip install -e .`, as `make venv` does), a plain `pickle.load` works from
    any folder, with no PYTHONPATH and no checkout on sys.path. The pickle holds
    what upstream's snapshots hold, EasyDict included."""
    from training import augment
    torch.manual_seed(0)
    G = randomise(tiny_G(), 3).eval().requires_grad_(False)
    D = randomise(tiny_D(), 4).eval().requires_grad_(False)
    pipe = augment.AugmentPipe(xflip=1, rotate90=1)
    snapshot = dict(G=G, D=D, G_ema=G, augment_pipe=pipe,
                    training_set_kwargs=dnnlib.EasyDict(path='data.zip', resolution=32))
    with open(tmp_path / 'net.pkl', 'wb') as f:
        pickle.dump(snapshot, f)
    z = torch.randn(2, G.z_dim)
    torch.save(z, tmp_path / 'z.pt')
    expected = G(z, None, noise_mode='const')
    script = tmp_path / 'user_script.py'
    script.write_text(
        'import pickle, torch\n'
        'torch.set_num_threads(1)\n'
        'with open("net.pkl", "rb") as f:\n'
        '    data = pickle.load(f)\n'
        'img = data["G_ema"](torch.load("z.pt"), None, noise_mode="const")\n'
        'torch.save(img, "img_child.pt")\n'
        'print(type(data["training_set_kwargs"]).__name__, data["D"](img, None).shape[1])\n')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '1'
    # -I: isolated mode, so neither PYTHONPATH nor the script's folder helps.
    proc = subprocess.run([sys.executable, '-I', str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, ('a user script outside the checkout could not load the pickle; is the project '
                                  'installed with torch_utils and dnnlib?\n' + proc.stderr[-2000:])
    assert proc.stdout.split() == ['EasyDict', '1']
    assert torch.equal(torch.load(tmp_path / 'img_child.pt'), expected)
