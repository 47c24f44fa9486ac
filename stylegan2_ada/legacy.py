"""Loading network pickles: ours, upstream StyleGAN2-ADA's, and the
TensorFlow-era `(G, D, Gs)` pickles of StyleGAN2 / StyleGAN2-ADA (TF).

PyTorch-era pickles are dicts of persistent networks and load as they are.
TF-era pickles are unpickled with a stand-in for `dnnlib.tflib.network.Network`
(no TensorFlow needed), and their variables are copied by name into freshly
built `training.networks` modules.

    python legacy.py --source=tf-network.pkl --dest=converted.pkl
"""

import copy
import pickle
import re
import warnings

import click
import numpy as np
import torch

import dnnlib
from torch_utils import misc

NETWORK_KEYS = ('G', 'D', 'G_ema')
ALL_KEYS = ('G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs')

# Public entry point.

def load_network_pkl(f, force_fp16=False):
    """Load a network pickle from an open binary file.

    Returns a dict with `G`, `D`, `G_ema`, `augment_pipe` and
    `training_set_kwargs` (missing entries are None). `force_fp16` rebuilds
    the networks with num_fp16_res=4 and conv_clamp=256 (same weights), the
    setting the training presets use.
    """
    try:
        data = _LegacyUnpickler(f).load()
    except _NotANetworkPickle:
        raise
    except (ImportError, AttributeError) as err:
        raise pickle.UnpicklingError(
            f'the pickle refers to code that cannot be imported here ({type(err).__name__}: {err}); '
            'run from the stylegan2_ada folder, and make any plug-in package importable') from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, OverflowError) as err:
        raise _NotANetworkPickle(f'not a network pickle: could not unpickle it ({type(err).__name__}: {err}). '
                                 'Expected a StyleGAN2-ADA snapshot (.pkl) or a TensorFlow-era (G, D, Gs) pickle; '
                                 'files written by torch.save are not network pickles') from err

    # TensorFlow era: a (G, D, Gs) tuple of tflib networks.
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(net, _TFNetworkStub) for net in data):
        tf_G, tf_D, tf_Gs = data
        data = dict(G=convert_tf_generator(tf_G), D=convert_tf_discriminator(tf_D), G_ema=convert_tf_generator(tf_Gs))

    if not isinstance(data, dict):
        raise _NotANetworkPickle(
            f'not a network pickle: expected a dict with {", ".join(NETWORK_KEYS)} or a TensorFlow (G, D, Gs) '
            f'tuple, found {type(data).__name__}')
    if not any(isinstance(data.get(key), torch.nn.Module) for key in NETWORK_KEYS):
        raise _NotANetworkPickle(f'not a network pickle: the dict has none of {", ".join(NETWORK_KEYS)} '
                                 f'(keys: {", ".join(map(str, data)) or "none"})')
    for key in NETWORK_KEYS:
        if data.get(key) is not None and not isinstance(data[key], torch.nn.Module):
            raise _NotANetworkPickle(f'not a network pickle: {key!r} is a {type(data[key]).__name__}, not a network')

    data = dict(data)
    for key in ALL_KEYS:
        data.setdefault(key, None)

    if force_fp16:
        for key in NETWORK_KEYS:
            if data[key] is not None:
                data[key] = _rebuild_fp16(data[key], key)
    return data


class _NotANetworkPickle(pickle.UnpicklingError):
    """Raised for files that are none of the supported pickle formats."""

# force_fp16.

def _rebuild_fp16(old, key):
    """Rebuild `old` from its recorded constructor arguments with fp16 settings."""
    if not hasattr(old, 'init_kwargs'):
        raise ValueError(f'force_fp16: {key} ({type(old).__name__}) is not a persistent network; cannot rebuild it')
    kwargs = copy.deepcopy(dnnlib.EasyDict(old.init_kwargs))
    if key.startswith('G'):
        kwargs.synthesis_kwargs = dnnlib.EasyDict(kwargs.get('synthesis_kwargs', {}))
        target = kwargs.synthesis_kwargs
    else:
        target = kwargs
    if target.get('num_fp16_res') == 4 and target.get('conv_clamp') == 256:
        return old
    target.num_fp16_res = 4
    target.conv_clamp = 256
    new = type(old)(*old.init_args, **kwargs)
    misc.copy_params_and_buffers(old, new, require_all=True)
    new.train(old.training)
    old_params = dict(old.named_parameters())
    for name, param in new.named_parameters():
        param.requires_grad_(old_params[name].requires_grad)
    return new

# TensorFlow-era pickles.

class _TFNetworkStub:
    """Stands in for `dnnlib.tflib.network.Network` while unpickling: keeps
    the pickled state (static_kwargs, components, variables) and nothing else."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError('unexpected state for a TensorFlow network')
        self.version = state.get('version')
        self.name = state.get('name')
        self.static_kwargs = dnnlib.EasyDict(state.get('static_kwargs') or {})
        self.components = dnnlib.EasyDict(state.get('components') or {})
        self.build_func_name = state.get('build_func_name')
        self.variables = list(state.get('variables') or [])

    def __repr__(self):
        return f'<TensorFlow network {self.name!r}, {len(self.variables)} variables>'


class _LegacyUnpickler(pickle.Unpickler):
    """Maps TensorFlow-era class names to stand-ins; refuses other TF names."""

    def find_class(self, module, name):
        if module == 'dnnlib.tflib.network' and name == 'Network':
            return _TFNetworkStub
        if module.startswith('dnnlib.tflib') or module.startswith('tensorflow'):
            raise _NotANetworkPickle(f'unsupported TensorFlow object {module}.{name} in the pickle')
        return super().find_class(module, name)


def _collect_tf_params(tf_net):
    """Flatten a TF network's variables, components prefixed by their key."""
    params = {}

    def visit(prefix, net):
        for name, value in net.variables:
            params[prefix + _normalise_tf_name(name)] = np.asarray(value)
        for comp_name, comp in net.components.items():
            visit(prefix + comp_name + '/', comp)
    visit('', tf_net)
    return params


def _normalise_tf_name(name):
    # Some exports carry the network scope (G_synthesis/, G_mapping/) in variable names.
    return re.sub(r'^G_(mapping|synthesis)/', '', name)


class _KwargReader:
    """Reads TF static kwargs with defaults and remembers which were used."""

    def __init__(self, static_kwargs):
        self.kwargs = dict(static_kwargs)
        self.used = set()

    def __call__(self, name, default=None, *aliases):
        for key in (name,) + aliases:
            if key in self.kwargs:
                self.used.add(key)
                return self.kwargs[key]
        return default

    def warn_unused(self, what, ignore=()):
        unknown = sorted(k for k, v in self.kwargs.items()
                         if k not in self.used and k not in ignore and v is not None)
        if unknown:
            warnings.warn(f'{what}: ignoring TensorFlow kwargs with no PyTorch equivalent: {", ".join(unknown)}')


# Kwargs that only steered the TF graph (or training) and do not change the network.
_IGNORED_TF_KWARGS = {
    'truncation_psi', 'truncation_cutoff', 'truncation_psi_val', 'truncation_cutoff_val', 'dlatent_avg_beta_val',
    'style_mixing_prob', 'is_training', 'is_validation', 'is_template_graph', 'components', 'randomize_noise',
    'return_dlatents', 'structure', 'dtype', 'fused_modconv', 'num_fp16_res_g', 'fmap_min', 'fmap_decay',
    'mapping_func', 'synthesis_func', 'func_name', 'latents_in', 'labels_in', 'dlatent_broadcast',
    'normalize_latents', 'mbstd_group_size_g', 'nonlinearity_g', 'force_clean_graph', 'use_noise_g',
}


def convert_tf_generator(tf_G):
    """Build a training.networks.Generator from a TF generator's kwargs and copy its variables."""
    from training import networks
    if not tf_G.variables and not tf_G.components:
        raise _NotANetworkPickle('TensorFlow generator has no variables')
    kwarg = _KwargReader(tf_G.static_kwargs)
    fmap_base = kwarg('fmap_base', 16384)
    G_kwargs = dnnlib.EasyDict(
        z_dim=kwarg('latent_size', 512),
        c_dim=kwarg('label_size', 0),
        w_dim=kwarg('dlatent_size', 512),
        img_resolution=kwarg('resolution', 1024),
        img_channels=kwarg('num_channels', 3),
        mapping_kwargs=dnnlib.EasyDict(
            num_layers=kwarg('mapping_layers', 8),
            embed_features=kwarg('label_fmaps', None),
            layer_features=kwarg('mapping_fmaps', None),
            activation=kwarg('mapping_nonlinearity', 'lrelu'),
            lr_multiplier=kwarg('mapping_lrmul', 0.01),
            w_avg_beta=kwarg('w_avg_beta', 0.995, 'dlatent_avg_beta'),
        ),
        synthesis_kwargs=dnnlib.EasyDict(
            # TF counted channels per stage: fmap_base / 2**stage with stage = log2(res) - 1.
            channel_base=fmap_base * 2,
            channel_max=kwarg('fmap_max', 512),
            num_fp16_res=kwarg('num_fp16_res', 0),
            conv_clamp=kwarg('conv_clamp', None),
            architecture=kwarg('architecture', 'skip'),
            resample_filter=kwarg('resample_kernel', [1, 3, 3, 1]),
            use_noise=kwarg('use_noise', True),
            activation=kwarg('nonlinearity', 'lrelu'),
        ),
    )
    kwarg.warn_unused('Generator', _IGNORED_TF_KWARGS)

    tf_params = _collect_tf_params(tf_G)
    # Noise inputs are numbered per layer: 4x4 conv is 0, then conv0/conv1 of each resolution.
    for name, value in list(tf_params.items()):
        match = re.fullmatch(r'synthesis/noise(\d+)', name)
        if match:
            idx = int(match.group(1))
            log2 = (idx + 5) // 2
            conv = 'conv0' if idx % 2 == 1 else 'conv1'
            tf_params[f'synthesis/noise_const/{2 ** log2}/{conv}'] = value[0, 0]

    def conv_weight(value, flip=False):
        # TF: [kh, kw, in, out]; ours: [out, in, kh, kw]. Up-convs ran as transposed convs in TF.
        if flip:
            value = value[::-1, ::-1]
        return value.transpose(3, 2, 0, 1)

    def layer(r, ours):
        if int(r) == 4:
            return 'Conv'
        return {'conv0': 'Conv0_up', 'conv1': 'Conv1'}[ours]

    rules = [
        (r'mapping\.w_avg', lambda: tf_params['dlatent_avg']),
        (r'mapping\.embed\.weight', lambda: tf_params['mapping/LabelEmbed/weight'].transpose()),
        (r'mapping\.embed\.bias', lambda: tf_params['mapping/LabelEmbed/bias']),
        (r'mapping\.fc(\d+)\.weight', lambda i: tf_params[f'mapping/Dense{i}/weight'].transpose()),
        (r'mapping\.fc(\d+)\.bias', lambda i: tf_params[f'mapping/Dense{i}/bias']),
        (r'synthesis\.b4\.const', lambda: tf_params['synthesis/4x4/Const/const'][0]),
        (r'synthesis\.b(\d+)\.(conv[01])\.weight',
         lambda r, c: conv_weight(tf_params[f'synthesis/{r}x{r}/{layer(r, c)}/weight'], flip=(c == 'conv0'))),
        (r'synthesis\.b(\d+)\.(conv[01])\.bias', lambda r, c: tf_params[f'synthesis/{r}x{r}/{layer(r, c)}/bias']),
        (r'synthesis\.b(\d+)\.(conv[01])\.noise_const', lambda r, c: tf_params[f'synthesis/noise_const/{r}/{c}']),
        (r'synthesis\.b(\d+)\.(conv[01])\.noise_strength',
         lambda r, c: tf_params[f'synthesis/{r}x{r}/{layer(r, c)}/noise_strength']),
        (r'synthesis\.b(\d+)\.(conv[01])\.affine\.weight',
         lambda r, c: tf_params[f'synthesis/{r}x{r}/{layer(r, c)}/mod_weight'].transpose()),
        # TF added the +1 of the styles in the graph; ours keeps it in the bias.
        (r'synthesis\.b(\d+)\.(conv[01])\.affine\.bias',
         lambda r, c: tf_params[f'synthesis/{r}x{r}/{layer(r, c)}/mod_bias'] + 1),
        (r'synthesis\.b(\d+)\.torgb\.weight', lambda r: conv_weight(tf_params[f'synthesis/{r}x{r}/ToRGB/weight'])),
        (r'synthesis\.b(\d+)\.torgb\.bias', lambda r: tf_params[f'synthesis/{r}x{r}/ToRGB/bias']),
        (r'synthesis\.b(\d+)\.torgb\.affine\.weight',
         lambda r: tf_params[f'synthesis/{r}x{r}/ToRGB/mod_weight'].transpose()),
        (r'synthesis\.b(\d+)\.torgb\.affine\.bias', lambda r: tf_params[f'synthesis/{r}x{r}/ToRGB/mod_bias'] + 1),
        (r'synthesis\.b(\d+)\.skip\.weight',
         lambda r: conv_weight(tf_params[f'synthesis/{r}x{r}/Skip/weight'], flip=True)),
        (r'.*\.resample_filter', None),
    ]
    G = networks.Generator(**G_kwargs)
    _populate_module(G, rules, 'Generator')
    return G.eval().requires_grad_(False)


def convert_tf_discriminator(tf_D):
    """Build a training.networks.Discriminator from a TF discriminator and copy its variables."""
    from training import networks
    if not tf_D.variables and not tf_D.components:
        raise _NotANetworkPickle('TensorFlow discriminator has no variables')
    kwarg = _KwargReader(tf_D.static_kwargs)
    fmap_base = kwarg('fmap_base', 16384)
    activation = kwarg('nonlinearity', 'lrelu')
    D_kwargs = dnnlib.EasyDict(
        c_dim=kwarg('label_size', 0),
        img_resolution=kwarg('resolution', 1024),
        img_channels=kwarg('num_channels', 3),
        architecture=kwarg('architecture', 'resnet'),
        channel_base=fmap_base * 2,
        channel_max=kwarg('fmap_max', 512),
        num_fp16_res=kwarg('num_fp16_res', 0),
        conv_clamp=kwarg('conv_clamp', None),
        cmap_dim=kwarg('mapping_fmaps', None),
        block_kwargs=dnnlib.EasyDict(
            activation=activation,
            resample_filter=kwarg('resample_kernel', [1, 3, 3, 1]),
            freeze_layers=kwarg('freeze_layers', 0),
        ),
        mapping_kwargs=dnnlib.EasyDict(
            num_layers=kwarg('mapping_layers', 0),
            embed_features=kwarg('mapping_fmaps', None),
            layer_features=kwarg('mapping_fmaps', None),
            activation=activation,
            lr_multiplier=kwarg('mapping_lrmul', 0.1),
        ),
        epilogue_kwargs=dnnlib.EasyDict(
            mbstd_group_size=kwarg('mbstd_group_size', 4),
            mbstd_num_channels=kwarg('mbstd_num_features', 1),
            activation=activation,
        ),
    )
    kwarg.warn_unused('Discriminator', _IGNORED_TF_KWARGS)
    tf_params = _collect_tf_params(tf_D)

    def conv_weight(value):
        return value.transpose(3, 2, 0, 1)

    def block_layer(ours):
        return {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip'}[ours]

    rules = [
        (r'b(\d+)\.(fromrgb|conv0|conv1|skip)\.weight',
         lambda r, l: conv_weight(tf_params[f'{r}x{r}/{block_layer(l)}/weight'])),
        (r'b(\d+)\.(fromrgb|conv0|conv1)\.bias', lambda r, l: tf_params[f'{r}x{r}/{block_layer(l)}/bias']),
        (r'b4\.conv\.weight', lambda: conv_weight(tf_params['4x4/Conv/weight'])),
        (r'b4\.conv\.bias', lambda: tf_params['4x4/Conv/bias']),
        (r'b4\.fc\.weight', lambda: tf_params['4x4/Dense0/weight'].transpose()),
        (r'b4\.fc\.bias', lambda: tf_params['4x4/Dense0/bias']),
        (r'b4\.out\.weight', lambda: tf_params['Output/weight'].transpose()),
        (r'b4\.out\.bias', lambda: tf_params['Output/bias']),
        (r'mapping\.embed\.weight', lambda: tf_params['LabelEmbed/weight'].transpose()),
        (r'mapping\.embed\.bias', lambda: tf_params['LabelEmbed/bias']),
        (r'mapping\.fc(\d+)\.weight', lambda i: tf_params[f'Mapping{i}/weight'].transpose()),
        (r'mapping\.fc(\d+)\.bias', lambda i: tf_params[f'Mapping{i}/bias']),
        (r'.*\.resample_filter', None),
    ]
    D = networks.Discriminator(**D_kwargs)
    _populate_module(D, rules, 'Discriminator')
    return D.eval().requires_grad_(False)


def _populate_module(module, rules, what):
    """Fill every parameter/buffer of `module` from the first matching rule."""
    with torch.no_grad():
        for name, tensor in misc.named_params_and_buffers(module):
            for pattern, fetch in rules:
                match = re.fullmatch(pattern, name)
                if match is None:
                    continue
                if fetch is not None:
                    try:
                        value = np.array(fetch(*match.groups()), dtype=np.float32)
                    except KeyError as err:
                        raise _NotANetworkPickle(
                            f'{what}: the TensorFlow pickle has no variable {err.args[0]!r} (needed for {name})') from None
                    if tuple(value.shape) != tuple(tensor.shape):
                        raise _NotANetworkPickle(f'{what}: {name} has shape {tuple(tensor.shape)} but the TensorFlow '
                                                 f'variable has {tuple(value.shape)}')
                    tensor.copy_(torch.from_numpy(value))
                break
            else:
                raise _NotANetworkPickle(f'{what}: no TensorFlow variable maps to {name}')

# Command line: convert a pickle (e.g. TF-era) into our format.

@click.command()
@click.option('--source', help='Input pickle (path or URL)', required=True, metavar='PATH')
@click.option('--dest', help='Output pickle', required=True, metavar='PATH')
@click.option('--force-fp16', help='Rebuild with num_fp16_res=4, conv_clamp=256', type=bool, default=False,
              show_default=True)
def convert_network_pickle(source, dest, force_fp16):
    """Convert a network pickle (TensorFlow-era or PyTorch) into a PyTorch pickle."""
    print(f'Loading "{source}"...')
    try:
        with dnnlib.util.open_url(source) as f:
            data = load_network_pkl(f, force_fp16=force_fp16)
    except (OSError, pickle.UnpicklingError) as err:
        raise click.ClickException(f'cannot load {source}: {err}')
    print(f'Saving "{dest}"...')
    with open(dest, 'wb') as f:
        pickle.dump(data, f)
    print('Done.')


if __name__ == '__main__':
    convert_network_pickle()
