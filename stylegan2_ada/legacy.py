"""Reading network pickles of every era: ours, upstream StyleGAN2-ADA's, and the
TensorFlow `(G, D, Gs)` pickles of StyleGAN2 / StyleGAN2-ADA (TF).

PyTorch-era pickles are dicts of persistent networks and load as they are.
A TF-era pickle is read without TensorFlow: its `dnnlib.tflib.network.Network`
objects unpickle into plain holders of their kwargs and variables, and two
tables below say how to rebuild the networks from them: which TF kwarg gives
which constructor argument, and which TF variable (reshaped how) gives which
parameter or buffer.

    python legacy.py --source=tf-network.pkl --dest=converted.pkl
    python legacy.py --source=network-snapshot-000100.pkl --dest=network-snapshot-000100.safetensors

Loading a pickle runs code: persistent classes carry their module's source,
which is executed. The unpickler here resolves only the names network pickles
use (anything else, e.g. os.system, is refused before it runs), but the
embedded source itself cannot be vetted. `load_network` therefore reads a
weights-only model file (training/model_file.py) whenever it is given one or
finds one beside the pickle; `--dest=*.safetensors` exports one.
"""

import copy
import io
import os
import pickle
import re
import typing
import warnings

import click
import numpy as np
import torch

import dnnlib
from torch_utils import misc

NETWORK_KEYS = ('G', 'D', 'G_ema')
ALL_KEYS = NETWORK_KEYS + ('augment_pipe', 'training_set_kwargs')

_FP16_SETTINGS = dict(num_fp16_res=4, conv_clamp=256)   # what the training presets use


class _NotANetworkPickle(pickle.UnpicklingError):
    """The file is none of the pickle formats this module reads."""


def load_network_pkl(f, force_fp16=False):
    """Read a network pickle from an open binary file.

    Returns a dict with `G`, `D`, `G_ema`, `augment_pipe` and
    `training_set_kwargs` (None where the pickle has no entry). With
    `force_fp16`, the networks are rebuilt with the presets' num_fp16_res=4
    and conv_clamp=256, keeping their weights.
    """
    content = _unpickle(f)
    if _is_tf_triple(content):
        tf_G, tf_D, tf_Gs = content
        content = dict(G=convert_tf_generator(tf_G), D=convert_tf_discriminator(tf_D),
                       G_ema=convert_tf_generator(tf_Gs))
    nets = _as_network_dict(content)
    if force_fp16:
        for key in NETWORK_KEYS:
            if nets[key] is not None:
                nets[key] = _rebuild_fp16(nets[key], key)
    return nets


def load_network(source, device=None, force_fp16=False, prefer_model_file=True):
    """Networks from a path or URL holding either a weights-only model file (training/model_file.py,
    recognised by its content; nothing is unpickled) or a network pickle. With `prefer_model_file`, a
    local `x.pkl` whose `x.safetensors` exists beside it is read from the latter. Returns the dict of
    load_network_pkl; networks moved to `device` when given."""
    from training import model_file
    source = str(source)
    is_local = not dnnlib.util.is_url(source, allow_file_urls=True)
    if is_local and prefer_model_file and source.endswith('.pkl') and os.path.isfile(model_file.model_path_for(source)):
        source = model_file.model_path_for(source)
        print(f'Reading the weights-only model file beside the pickle: "{source}"')
    with dnnlib.util.open_url(source, verbose=False) as f:
        if model_file.is_model_file(f):
            return model_file.load_model_file(f, device=device, force_fp16=force_fp16)
        nets = load_network_pkl(f, force_fp16=force_fp16)
    if device is not None:
        nets = {key: (value.to(device) if isinstance(value, torch.nn.Module) else value) for key, value in nets.items()}
    return nets


def export_model_file(source, dest=None):
    """Write the weights-only model file of a network pickle (any era); `dest` defaults to the name
    beside a local pickle. Checks that the file rebuilds the same tensors and returns its path."""
    from training import model_file
    if dest is None:
        if dnnlib.util.is_url(source, allow_file_urls=True):
            raise ValueError('give the destination of the model file for a URL source')
        dest = model_file.model_path_for(source)
    with dnnlib.util.open_url(source, verbose=False) as f:
        nets = load_network_pkl(f)
    model_file.save_model_file(dest, nets)
    rebuilt = model_file.load_model_file(dest)
    for key in NETWORK_KEYS + ('augment_pipe',):
        if nets.get(key) is None:
            continue
        mine = dict(misc.named_params_and_buffers(rebuilt[key]))
        for name, tensor in misc.named_params_and_buffers(nets[key]):
            if not torch.equal(mine[name].cpu(), tensor.detach().cpu()):
                raise ValueError(f'{key}.{name} differs after rebuilding from the model file')
    return dest


def _unpickle(f):
    """Unpickle, turning the many ways a wrong file fails into two kinds of explained error."""
    try:
        return _EraAwareUnpickler(f).load()
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


def _as_network_dict(content):
    """Check that `content` holds networks where networks belong, and fill the missing keys with None."""
    if not isinstance(content, dict):
        raise _NotANetworkPickle(
            f'not a network pickle: expected a dict with {", ".join(NETWORK_KEYS)} or a TensorFlow (G, D, Gs) '
            f'tuple, found {type(content).__name__}')
    present = {key: content.get(key) for key in NETWORK_KEYS}
    if all(not isinstance(net, torch.nn.Module) for net in present.values()):
        raise _NotANetworkPickle(f'not a network pickle: the dict has none of {", ".join(NETWORK_KEYS)} '
                                 f'(keys: {", ".join(map(str, content)) or "none"})')
    wrong = [key for key, net in present.items() if net is not None and not isinstance(net, torch.nn.Module)]
    if wrong:
        raise _NotANetworkPickle(f'not a network pickle: {wrong[0]!r} is a {type(content[wrong[0]]).__name__}, '
                                 'not a network')
    return {**content, **{key: None for key in ALL_KEYS if key not in content}}


def _rebuild_fp16(net, key):
    """A copy of `net` built from its recorded arguments with _FP16_SETTINGS; `net` itself if it has them."""
    if not hasattr(net, 'init_kwargs'):
        raise ValueError(f'force_fp16: {key} ({type(net).__name__}) is not a persistent network; cannot rebuild it')
    kwargs = copy.deepcopy(dnnlib.EasyDict(net.init_kwargs))
    settings = kwargs
    if key.startswith('G'):   # generators keep these in their synthesis network's kwargs
        settings = kwargs.synthesis_kwargs = dnnlib.EasyDict(kwargs.get('synthesis_kwargs', {}))
    if all(settings.get(name) == value for name, value in _FP16_SETTINGS.items()):
        return net
    settings.update(_FP16_SETTINGS)
    rebuilt = type(net)(*net.init_args, **kwargs)
    misc.copy_params_and_buffers(net, rebuilt, require_all=True)
    frozen = {name for name, param in net.named_parameters() if not param.requires_grad}
    for name, param in rebuilt.named_parameters():
        param.requires_grad_(name not in frozen)
    return rebuilt.train(net.training)


class _TFNetworkState:
    """What a pickled `dnnlib.tflib.network.Network` holds that conversion needs; no TensorFlow involved."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError('unexpected state for a TensorFlow network')
        self.version = state.get('version')
        self.name = state.get('name')
        self.build_func_name = state.get('build_func_name')
        self.static_kwargs = dnnlib.EasyDict(state.get('static_kwargs') or {})
        self.components = dnnlib.EasyDict(state.get('components') or {})
        self.variables = list(state.get('variables') or [])

    def __repr__(self):
        return f'<TensorFlow network {self.name!r}, {len(self.variables)} variables>'


def _load_storage_bytes(data):
    """Stands in for torch.storage._load_from_bytes, which would unpickle the bytes with no restriction."""
    return torch.load(io.BytesIO(data), weights_only=True)


# Callables a network pickle may name (everything else it names must be a class, see _allowed_global).
_ALLOWED_CALLABLES = {
    ('torch_utils.persistence', '_reconstruct_persistent_obj'),
    ('torch._utils', '_rebuild_tensor_v2'), ('torch._utils', '_rebuild_tensor'), ('torch._utils', '_rebuild_parameter'),
    ('torch._utils', '_rebuild_parameter_with_state'), ('torch._utils', '_rebuild_device_tensor_from_numpy'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('copyreg', '_reconstructor'), ('copyreg', '__newobj__'),
}
_CLASS_PACKAGES = ('collections', 'dnnlib', 'torch_utils', 'training', 'kdgan_plugins', 'numpy', 'torch')
_BUILTIN_CLASSES = frozenset({'set', 'frozenset', 'list', 'dict', 'tuple', 'bytearray', 'complex', 'slice', 'object'})
_DATA_CLASSES = frozenset({'ndarray', 'dtype', 'EasyDict', 'OrderedDict', 'defaultdict', 'deque', 'Counter'})
_IMPORTED_PREFIX = '_imported_module_'   # modules that persistence made from pickled source


def _allowed_module(module):
    """Checked before anything is imported: importing a module can run code."""
    plugins = tuple(m.strip() for m in os.environ.get('KDGAN_PLUGINS', '').split(',') if m.strip())
    return (module in ('builtins', 'copyreg') or module.startswith(_IMPORTED_PREFIX)
            or any(module == p or module.startswith(p + '.') for p in _CLASS_PACKAGES + plugins))


def _allowed_global(module, name, obj):
    """Whether a network pickle may refer to `obj` (found as module.name): the rebuild helpers above, data
    classes of the packages networks are made of, torch dtypes/Size/device and storage classes, and in
    torch nothing else but torch.nn classes."""
    if (module, name) in _ALLOWED_CALLABLES:
        return True
    if module == 'builtins':
        return name in _BUILTIN_CLASSES
    if module == 'torch' or module.startswith('torch.storage'):
        return isinstance(obj, (torch.dtype, torch.device)) or obj is torch.Size or (
            isinstance(obj, type) and name.endswith('Storage'))
    if module.startswith('torch.') and not module.startswith('torch.nn.'):
        return False
    if module.startswith(('numpy', 'dnnlib', 'collections')):   # data types only (numpy.memmap writes files)
        return name in _DATA_CLASSES
    return isinstance(obj, type) and module != 'copyreg'


class _EraAwareUnpickler(pickle.Unpickler):
    """Unpickles TF networks as _TFNetworkState; any other TensorFlow object is an error.

    Only names a network pickle can hold are resolved (see _allowed_global): a pickle naming os.system,
    builtins.eval and the like is refused before anything runs. This does not make pickles safe: a
    persistent class's embedded source still runs when it is rebuilt. Use weights-only model files
    (training/model_file.py) for networks from others."""

    def find_class(self, module, name):
        if (module, name) == ('dnnlib.tflib.network', 'Network'):
            return _TFNetworkState
        if module.startswith(('dnnlib.tflib', 'tensorflow')):
            raise _NotANetworkPickle(f'unsupported TensorFlow object {module}.{name} in the pickle')
        if (module, name) == ('torch.storage', '_load_from_bytes'):
            return _load_storage_bytes
        trusted = os.environ.get('KDGAN_TRUST_PICKLES') == '1'
        obj = super().find_class(module, name) if trusted or _allowed_module(module) else None
        if not trusted and (obj is None or not _allowed_global(module, name, obj)):
            raise _NotANetworkPickle(f'not a network pickle: it refers to {module}.{name}, which network pickles '
                                     'do not use; refusing to load it (set KDGAN_TRUST_PICKLES=1 only if you '
                                     'trust where the file came from)')
        return obj


def _is_tf_triple(content):
    return isinstance(content, tuple) and len(content) == 3 and all(isinstance(x, _TFNetworkState) for x in content)


def _tf_variables(net, prefix=''):
    """(path, array) for a TF network and its components, depth first; component names become path parts."""
    for name, value in net.variables:
        # Some exports keep the network scope (G_mapping/, G_synthesis/) in the variable name.
        yield prefix + re.sub(r'^G_(mapping|synthesis)/', '', name), np.asarray(value)
    for part, component in net.components.items():
        yield from _tf_variables(component, f'{prefix}{part}/')


class _Arg(typing.NamedTuple):
    """One constructor argument: its dotted place in our kwargs, the TF kwargs that may hold it, and the
    value when none does. `scale` multiplies what was found (TF counted channels per stage at half our base)."""
    dest: str
    tf_names: tuple
    default: typing.Any
    scale: int = 1


_GENERATOR_ARGS = (
    _Arg('z_dim', ('latent_size',), 512),
    _Arg('c_dim', ('label_size',), 0),
    _Arg('w_dim', ('dlatent_size',), 512),
    _Arg('img_resolution', ('resolution',), 1024),
    _Arg('img_channels', ('num_channels',), 3),
    _Arg('mapping_kwargs.num_layers', ('mapping_layers',), 8),
    _Arg('mapping_kwargs.embed_features', ('label_fmaps',), None),
    _Arg('mapping_kwargs.layer_features', ('mapping_fmaps',), None),
    _Arg('mapping_kwargs.activation', ('mapping_nonlinearity',), 'lrelu'),
    _Arg('mapping_kwargs.lr_multiplier', ('mapping_lrmul',), 0.01),
    _Arg('mapping_kwargs.w_avg_beta', ('w_avg_beta', 'dlatent_avg_beta'), 0.995),
    _Arg('synthesis_kwargs.channel_base', ('fmap_base',), 16384, scale=2),
    _Arg('synthesis_kwargs.channel_max', ('fmap_max',), 512),
    _Arg('synthesis_kwargs.num_fp16_res', ('num_fp16_res',), 0),
    _Arg('synthesis_kwargs.conv_clamp', ('conv_clamp',), None),
    _Arg('synthesis_kwargs.architecture', ('architecture',), 'skip'),
    _Arg('synthesis_kwargs.resample_filter', ('resample_kernel',), [1, 3, 3, 1]),
    _Arg('synthesis_kwargs.use_noise', ('use_noise',), True),
    _Arg('synthesis_kwargs.activation', ('nonlinearity',), 'lrelu'),
)

_DISCRIMINATOR_ARGS = (
    _Arg('c_dim', ('label_size',), 0),
    _Arg('img_resolution', ('resolution',), 1024),
    _Arg('img_channels', ('num_channels',), 3),
    _Arg('architecture', ('architecture',), 'resnet'),
    _Arg('channel_base', ('fmap_base',), 16384, scale=2),
    _Arg('channel_max', ('fmap_max',), 512),
    _Arg('num_fp16_res', ('num_fp16_res',), 0),
    _Arg('conv_clamp', ('conv_clamp',), None),
    _Arg('cmap_dim', ('mapping_fmaps',), None),
    _Arg('block_kwargs.activation', ('nonlinearity',), 'lrelu'),
    _Arg('block_kwargs.resample_filter', ('resample_kernel',), [1, 3, 3, 1]),
    _Arg('block_kwargs.freeze_layers', ('freeze_layers',), 0),
    _Arg('mapping_kwargs.num_layers', ('mapping_layers',), 0),
    _Arg('mapping_kwargs.embed_features', ('mapping_fmaps',), None),
    _Arg('mapping_kwargs.layer_features', ('mapping_fmaps',), None),
    _Arg('mapping_kwargs.activation', ('nonlinearity',), 'lrelu'),
    _Arg('mapping_kwargs.lr_multiplier', ('mapping_lrmul',), 0.1),
    _Arg('epilogue_kwargs.mbstd_group_size', ('mbstd_group_size',), 4),
    _Arg('epilogue_kwargs.mbstd_num_channels', ('mbstd_num_features',), 1),
    _Arg('epilogue_kwargs.activation', ('nonlinearity',), 'lrelu'),
)

# TF kwargs that steered the TF graph or training only; they do not change the network.
_GRAPH_ONLY_TF_KWARGS = frozenset({
    'truncation_psi', 'truncation_cutoff', 'truncation_psi_val', 'truncation_cutoff_val', 'dlatent_avg_beta_val',
    'style_mixing_prob', 'is_training', 'is_validation', 'is_template_graph', 'components', 'randomize_noise',
    'return_dlatents', 'structure', 'dtype', 'fused_modconv', 'num_fp16_res_g', 'fmap_min', 'fmap_decay',
    'mapping_func', 'synthesis_func', 'func_name', 'latents_in', 'labels_in', 'dlatent_broadcast',
    'normalize_latents', 'mbstd_group_size_g', 'nonlinearity_g', 'force_clean_graph', 'use_noise_g',
})


def _constructor_kwargs(args, static_kwargs, what):
    """Our constructor kwargs (nested EasyDicts) from a TF network's static kwargs, by an _Arg table."""
    result = dnnlib.EasyDict()
    consumed = set()
    for arg in args:
        found = next((name for name in arg.tf_names if name in static_kwargs), None)
        value = arg.default if found is None else static_kwargs[found]
        if found is not None:
            consumed.add(found)
        if arg.scale != 1:
            value = value * arg.scale
        *outer, leaf = arg.dest.split('.')
        holder = result
        for part in outer:
            holder = holder.setdefault(part, dnnlib.EasyDict())
        holder[leaf] = value
    leftover = sorted(name for name, value in static_kwargs.items()
                      if value is not None and name not in consumed and name not in _GRAPH_ONLY_TF_KWARGS)
    if leftover:
        warnings.warn(f'{what}: ignoring TensorFlow kwargs with no PyTorch equivalent: {", ".join(leftover)}')
    return result


def _dense(value):
    """TF dense kernels are [in, out]; ours [out, in]."""
    return value.transpose()


def _conv(value):
    """TF conv kernels are [kh, kw, in, out]; ours [out, in, kh, kw]."""
    return value.transpose(3, 2, 0, 1)


def _conv_flipped(value):
    """TF ran up-sampling convs as transposed convolutions, whose stored kernels are spatially flipped."""
    return _conv(value[::-1, ::-1])


def _plus_one(value):
    """TF added 1 to the styles in the graph; ours keeps it in the affine layer's bias."""
    return value + 1


def _first(value):
    return value[0]


def _first_pixel_plane(value):
    return value[0, 0]


def _noise_variable(fields):
    """TF numbered the noise inputs 0, 1, 2, ... from the 4x4 conv on: conv0 and conv1 of each resolution."""
    log2_res = int(fields['res']).bit_length() - 1
    return f'synthesis/noise{2 * log2_res - 5 + (fields["conv"] == "conv1")}'


class _Param(typing.NamedTuple):
    """Our parameter or buffer names matching `pattern` come from the TF variable `source` (a template over
    the pattern's groups, or a function of them) through `transform`; source None leaves it as built."""
    pattern: str
    source: typing.Any
    transform: typing.Any = None


def _modulated_layer(ours, tf, weight_transform, noise=True):
    """The entries of one modulated conv layer (StyleGAN2's conv and toRGB layers)."""
    entries = [_Param(ours + r'\.weight', tf + '/weight', weight_transform),
               _Param(ours + r'\.bias', tf + '/bias'),
               _Param(ours + r'\.affine\.weight', tf + '/mod_weight', _dense),
               _Param(ours + r'\.affine\.bias', tf + '/mod_bias', _plus_one)]
    if noise:
        entries.append(_Param(ours + r'\.noise_strength', tf + '/noise_strength'))
    return entries


def _plain_layer(ours, tf, weight_transform):
    return [_Param(ours + r'\.weight', tf + '/weight', weight_transform), _Param(ours + r'\.bias', tf + '/bias')]


_RES = r'(?P<res>\d+)'

_GENERATOR_PARAMS = (
    _Param(r'mapping\.w_avg', 'dlatent_avg'),
    *_plain_layer(r'mapping\.embed', 'mapping/LabelEmbed', _dense),
    *_plain_layer(r'mapping\.fc(?P<i>\d+)', 'mapping/Dense{i}', _dense),
    _Param(r'synthesis\.b4\.const', 'synthesis/4x4/Const/const', _first),
    _Param(rf'synthesis\.b{_RES}\.(?P<conv>conv[01])\.noise_const', _noise_variable, _first_pixel_plane),
    *_modulated_layer(r'synthesis\.b4\.conv1', 'synthesis/4x4/Conv', _conv),
    *_modulated_layer(rf'synthesis\.b{_RES}\.conv0', 'synthesis/{res}x{res}/Conv0_up', _conv_flipped),
    *_modulated_layer(rf'synthesis\.b{_RES}\.conv1', 'synthesis/{res}x{res}/Conv1', _conv),
    *_modulated_layer(rf'synthesis\.b{_RES}\.torgb', 'synthesis/{res}x{res}/ToRGB', _conv, noise=False),
    _Param(rf'synthesis\.b{_RES}\.skip\.weight', 'synthesis/{res}x{res}/Skip/weight', _conv_flipped),
    _Param(r'.*\.resample_filter', None),
)

_DISCRIMINATOR_PARAMS = (
    *_plain_layer(rf'b{_RES}\.fromrgb', '{res}x{res}/FromRGB', _conv),
    *_plain_layer(rf'b{_RES}\.conv0', '{res}x{res}/Conv0', _conv),
    *_plain_layer(rf'b{_RES}\.conv1', '{res}x{res}/Conv1_down', _conv),
    *_plain_layer(rf'b{_RES}\.skip', '{res}x{res}/Skip', _conv),
    *_plain_layer(r'b4\.conv', '4x4/Conv', _conv),
    *_plain_layer(r'b4\.fc', '4x4/Dense0', _dense),
    *_plain_layer(r'b4\.out', 'Output', _dense),
    *_plain_layer(r'mapping\.embed', 'LabelEmbed', _dense),
    *_plain_layer(r'mapping\.fc(?P<i>\d+)', 'Mapping{i}', _dense),
    _Param(r'.*\.resample_filter', None),
)


def _tf_value(param, fields, tf_vars, what, name):
    source = param.source(fields) if callable(param.source) else param.source.format(**fields)
    if source not in tf_vars:
        raise _NotANetworkPickle(f'{what}: the TensorFlow pickle has no variable {source!r} (needed for {name})')
    value = tf_vars[source]
    return value if param.transform is None else param.transform(value)


def _fill_from_tf(module, table, tf_vars, what):
    """Overwrite every parameter and buffer of `module` from the first entry of `table` that names it."""
    compiled = [(re.compile(param.pattern), param) for param in table]

    def lookup(name):
        for regex, param in compiled:
            match = regex.fullmatch(name)
            if match:
                return match, param
        raise _NotANetworkPickle(f'{what}: no TensorFlow variable maps to {name}')

    with torch.no_grad():
        for name, tensor in misc.named_params_and_buffers(module):
            match, param = lookup(name)
            if param.source is None:
                continue
            value = np.array(_tf_value(param, match.groupdict(), tf_vars, what, name), dtype=np.float32)
            if value.shape != tuple(tensor.shape):
                raise _NotANetworkPickle(f'{what}: {name} has shape {tuple(tensor.shape)} but the TensorFlow '
                                         f'variable has {value.shape}')
            tensor.copy_(torch.from_numpy(value))
    return module.eval().requires_grad_(False)


def _convert(tf_net, class_name, args, table):
    from training import networks
    if not tf_net.variables and not tf_net.components:
        raise _NotANetworkPickle(f'TensorFlow {class_name.lower()} has no variables')
    kwargs = _constructor_kwargs(args, tf_net.static_kwargs, class_name)
    net = getattr(networks, class_name)(**kwargs)
    return _fill_from_tf(net, table, dict(_tf_variables(tf_net)), class_name)


def convert_tf_generator(tf_G):
    """A training.networks.Generator equal to a TF-era generator."""
    return _convert(tf_G, 'Generator', _GENERATOR_ARGS, _GENERATOR_PARAMS)


def convert_tf_discriminator(tf_D):
    """A training.networks.Discriminator equal to a TF-era discriminator."""
    return _convert(tf_D, 'Discriminator', _DISCRIMINATOR_ARGS, _DISCRIMINATOR_PARAMS)


@click.command()
@click.option('--source', required=True, metavar='PATH', help='Pickle to read, any era (file or URL)')
@click.option('--dest', required=True, metavar='PATH',
              help='Where to write the PyTorch pickle; a name ending in .safetensors writes a weights-only model file')
@click.option('--force-fp16', type=bool, default=False, show_default=True,
              help='Rebuild the networks with num_fp16_res=4 and conv_clamp=256 (same weights)')
def convert_network_pickle(source, dest, force_fp16):
    """Rewrite a network pickle (a TensorFlow-era one, typically) as a PyTorch pickle, or export it as a
    weights-only model file that the tools load without unpickling:

        python legacy.py --source=network-snapshot-000100.pkl --dest=network-snapshot-000100.safetensors
    """
    if dest.endswith('.safetensors'):
        if force_fp16:
            raise click.UsageError('--force-fp16 applies to pickles; a model file keeps the networks as they are')
        try:
            print(f'Exporting "{source}" to "{export_model_file(source, dest)}"... Done.')
        except (OSError, ValueError, pickle.UnpicklingError) as err:
            raise click.ClickException(f'cannot export {source}: {err}')
        return
    print(f'Loading "{source}"...')
    try:
        with dnnlib.util.open_url(source) as f:
            nets = load_network_pkl(f, force_fp16=force_fp16)
    except (OSError, pickle.UnpicklingError) as err:
        raise click.ClickException(f'cannot load {source}: {err}')
    print(f'Saving "{dest}"...')
    with open(dest, 'wb') as f:
        pickle.dump(nets, f)
    print('Done.')


if __name__ == '__main__':
    convert_network_pickle()
