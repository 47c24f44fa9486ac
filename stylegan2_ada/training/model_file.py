"""Weights-only model files: a network snapshot that loads without unpickling.

A network pickle carries the source code of its classes and runs it when
loaded, so a pickle from someone else is a program from someone else. The
model file written here holds the same networks as plain data:

- a safetensors file (`<snapshot>.safetensors` beside `<snapshot>.pkl`);
  each tensor is named `<key>/<parameter or buffer name>`, key one of
  G, D, G_ema, augment_pipe;
- its metadata holds, as JSON, each network's constructor: the dotted name
  of an importable persistent class plus the positional and keyword
  arguments it recorded (`init_args`, `init_kwargs`), and the
  `training_set_kwargs` of the snapshot.

Loading imports the named class from *this* checkout (only classes under
`training.` / `kdgan_plugins.` or a module listed in `KDGAN_PLUGINS`, and only
persistent `torch.nn.Module` subclasses), builds it from the recorded
arguments and copies the tensors in, requiring the same names and shapes.
Nothing in the file is executed.

API:
    save_model_file(path, snapshot_data)        write (atomically) from a snapshot dict
    load_model_file(path_or_url, device=None)   dict shaped like legacy.load_network_pkl's
    model_path_for(pkl_path)                    the model file's name beside a snapshot pickle
    is_model_file(path_or_file)                 True when the file starts like a model file
"""

import json
import os
import struct
import sys

import torch

import dnnlib
from torch_utils import misc, persistence

FORMAT_NAME = 'kdgan-model-file'
FORMAT_VERSION = 1
MODEL_SUFFIX = '.safetensors'
NETWORK_KEYS = ('G', 'D', 'G_ema', 'augment_pipe')
_ALLOWED_PREFIXES = ('training.', 'kdgan_plugins.')
_MAX_HEADER = 100 * 1024 * 1024    # safetensors' own bound on the JSON header


class ModelFileError(ValueError):
    """The file is not a model file this code can rebuild; the message says why and what to do."""


def model_path_for(pkl_path):
    """`.../network-snapshot-000100.pkl` -> `.../network-snapshot-000100.safetensors`."""
    pkl_path = str(pkl_path)
    base = pkl_path[:-len('.pkl')] if pkl_path.endswith('.pkl') else pkl_path
    return base + MODEL_SUFFIX


# JSON that keeps tuples apart from lists (constructors may care).

def _to_json_value(value, where):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {'__tuple__': [_to_json_value(v, f'{where}[{i}]') for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_to_json_value(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, dict):
        if '__tuple__' in value or not all(isinstance(k, str) for k in value):
            raise ModelFileError(f'{where}: dict keys must be strings (and not "__tuple__")')
        return {k: _to_json_value(v, f'{where}[{k!r}]') for k, v in value.items()}
    if hasattr(value, 'item') and getattr(value, 'ndim', None) == 0:   # numpy / torch scalars
        return _to_json_value(value.item(), where)
    raise ModelFileError(f'{where} is a {type(value).__name__}; a model file stores only numbers, strings, '
                         'lists and dicts as constructor arguments')


def _from_json_value(value):
    if isinstance(value, list):
        return [_from_json_value(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {'__tuple__'}:
            return tuple(_from_json_value(v) for v in value['__tuple__'])
        return dnnlib.EasyDict({k: _from_json_value(v) for k, v in value.items()})
    return value


# Writing.

def _importable_class_name(net, key):
    """The dotted name this checkout can import `type(net)` under.

    A network unpickled from a pickle whose source differs from this checkout's
    lives in a module named `_imported_module_<md5>`; it is mapped to the
    persistent class of the same name in a live module (one match only)."""
    cls = type(net)
    if not persistence.is_persistent(cls):
        raise ModelFileError(f'{key} ({cls.__name__}) is not a persistent class, so its constructor arguments '
                             'are unknown; decorate it with @persistence.persistent_class')
    if not cls.__module__.startswith(persistence._IMPORTED_MODULE_PREFIX):
        return f'{cls.__module__}.{cls.__qualname__}'
    _import_known_network_modules()
    candidates = {c for c in list(persistence._persistent_classes) if c._orig_class_name == cls._orig_class_name
                  and not c.__module__.startswith(persistence._IMPORTED_MODULE_PREFIX)}
    # Several modules may define a class of that name (Generator): take the module that shares the most
    # persistent class names with the pickled one.
    theirs = _persistent_names(sys.modules.get(cls.__module__))
    scored = sorted(((len(theirs & _persistent_names(sys.modules.get(c.__module__))),
                      f'{c.__module__}.{c.__qualname__}') for c in candidates), reverse=True)
    if not scored or (len(scored) > 1 and scored[0][0] == scored[1][0]):
        found = ', '.join(name for _, name in scored) or 'none'
        raise ModelFileError(f'{key}: the pickle defines {cls._orig_class_name} in code this checkout does not have, '
                             f'and the importable classes of that name are: {found}; cannot tell which one it is')
    return scored[0][1]


def _persistent_names(module):
    return {name for name, value in vars(module).items() if persistence.is_persistent(value)} if module else set()


def _import_known_network_modules():
    """Import the modules whose persistent classes snapshots hold, so that they can be matched by name."""
    import importlib
    names = ['training.networks', 'training.augment', 'kdgan_plugins.networks.fastgan',
             'kdgan_plugins.networks.student', 'kdgan_plugins.augment.diffaugment']
    for name in names + _plugin_modules():
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _plugin_modules():
    return [name.strip() for name in os.environ.get('KDGAN_PLUGINS', '').split(',') if name.strip()]


def _network_entry(net, key):
    return dict(class_name=_importable_class_name(net, key),
                args=_to_json_value(tuple(net.init_args), f'{key}.init_args'),
                kwargs=_to_json_value(dict(net.init_kwargs), f'{key}.init_kwargs'))


def save_model_file(path, snapshot_data):
    """Write the networks of `snapshot_data` (the dict a network-snapshot pickle holds: G, D, G_ema,
    augment_pipe, training_set_kwargs; missing or None entries are skipped) to `path`, atomically."""
    from safetensors.torch import save_file
    assert isinstance(snapshot_data, dict), type(snapshot_data)
    tensors, networks = {}, {}
    for key in NETWORK_KEYS:
        net = snapshot_data.get(key)
        if net is None:
            continue
        if not isinstance(net, torch.nn.Module):
            raise ModelFileError(f'{key} is a {type(net).__name__}, not a network')
        networks[key] = _network_entry(net, key)
        for name, tensor in misc.named_params_and_buffers(net):
            # clone(): safetensors refuses tensors that share memory.
            tensors[f'{key}/{name}'] = tensor.detach().to('cpu', copy=True).contiguous()
    if not networks:
        raise ModelFileError(f'the snapshot holds none of {", ".join(NETWORK_KEYS)}')
    training_set_kwargs = snapshot_data.get('training_set_kwargs')
    metadata = dict(format=FORMAT_NAME, version=str(FORMAT_VERSION), networks=json.dumps(networks),
                    training_set_kwargs=json.dumps(_to_json_value(training_set_kwargs, 'training_set_kwargs')))
    path = str(path)
    partial = f'{path}.tmp{os.getpid()}'
    try:
        save_file(tensors, partial, metadata=metadata)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


# Reading.

def _read_bytes(path_or_url):
    if hasattr(path_or_url, 'read'):
        return path_or_url.read()
    if dnnlib.util.is_url(str(path_or_url), allow_file_urls=True):
        with dnnlib.util.open_url(str(path_or_url)) as f:
            return f.read()
    with open(path_or_url, 'rb') as f:
        return f.read()


def _header(data):
    """The JSON header of safetensors bytes, or None when `data` does not start like one."""
    if len(data) < 10:
        return None
    (size,) = struct.unpack('<Q', data[:8])
    if size > min(_MAX_HEADER, len(data) - 8) or data[8:9] != b'{':
        return None
    try:
        return json.loads(data[8:8 + size].decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _read_header_bytes(f):
    head = f.read(8)
    if len(head) < 8 or struct.unpack('<Q', head)[0] > _MAX_HEADER:
        return head
    return head + f.read(struct.unpack('<Q', head)[0])


def is_model_file(path_or_file):
    """True when the file (a local path, or an open seekable binary file, which is read from where it is
    and put back) starts like a safetensors file written by save_model_file. Reads only the header."""
    if hasattr(path_or_file, 'read'):
        start = path_or_file.tell()
        try:
            data = _read_header_bytes(path_or_file)
        finally:
            path_or_file.seek(start)
    else:
        with open(path_or_file, 'rb') as f:
            data = _read_header_bytes(f)
    header = _header(data)
    return isinstance(header, dict) and (header.get('__metadata__') or {}).get('format') == FORMAT_NAME


def _resolve_class(class_name, key):
    allowed = _ALLOWED_PREFIXES + tuple(name + '.' for name in _plugin_modules())
    if not isinstance(class_name, str) or not class_name.startswith(allowed):
        raise ModelFileError(f'{key}: class {class_name!r} is outside the network packages this tool imports '
                             f'({", ".join(allowed)}); list its module in KDGAN_PLUGINS if you trust it')
    try:
        cls = dnnlib.util.get_obj_by_name(class_name)
    except Exception as err:
        raise ModelFileError(f'{key}: cannot import {class_name} ({type(err).__name__}: {err}); run from the '
                             'stylegan2_ada folder with the plug-in packages importable') from err
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module) and persistence.is_persistent(cls)):
        raise ModelFileError(f'{key}: {class_name} is not a persistent network class')
    return cls


def _build(entry, key, tensors):
    cls = _resolve_class(entry.get('class_name'), key)
    args, kwargs = _from_json_value(entry.get('args', {'__tuple__': []})), _from_json_value(entry.get('kwargs', {}))
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise ModelFileError(f'{key}: malformed constructor arguments')
    with torch.random.fork_rng(devices=[]):   # building draws random init; the caller's stream stays as it was
        try:
            net = cls(*args, **kwargs)
        except Exception as err:
            raise ModelFileError(f'{key}: cannot build {entry["class_name"]} from the recorded arguments '
                                 f'({type(err).__name__}: {err})') from err
    prefix = key + '/'
    stored = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
    mine = dict(misc.named_params_and_buffers(net))
    if set(stored) != set(mine):
        missing, extra = sorted(set(mine) - set(stored)), sorted(set(stored) - set(mine))
        raise ModelFileError(f'{key}: the file does not match {entry["class_name"]} as built here '
                             f'(missing: {missing[:5]}, unexpected: {extra[:5]})')
    with torch.no_grad():
        for name, tensor in mine.items():
            if tuple(stored[name].shape) != tuple(tensor.shape):
                raise ModelFileError(f'{key}: {name} has shape {tuple(stored[name].shape)} in the file but '
                                     f'{tuple(tensor.shape)} as built here')
            tensor.copy_(stored[name])
    return net.eval().requires_grad_(False)


def load_model_file(path_or_url, device=None, force_fp16=False):
    """Rebuild the networks of a model file. Returns a dict with G, D, G_ema, augment_pipe and
    training_set_kwargs (None where absent), as legacy.load_network_pkl does; networks are in eval
    mode, frozen, on `device` (CPU when None)."""
    from safetensors.torch import load as load_safetensors
    data = _read_bytes(path_or_url)
    header = _header(data)
    meta = (header or {}).get('__metadata__') or {}
    if meta.get('format') != FORMAT_NAME:
        raise ModelFileError(f'{path_or_url} is not a kdgan model file (safetensors with format {FORMAT_NAME!r})')
    if meta.get('version') != str(FORMAT_VERSION):
        raise ModelFileError(f'model file version {meta.get("version")!r} is not supported (this code reads '
                             f'{FORMAT_VERSION}); update the code')
    try:
        networks = json.loads(meta['networks'])
        training_set_kwargs = _from_json_value(json.loads(meta.get('training_set_kwargs', 'null')))
        tensors = load_safetensors(data)
    except Exception as err:
        raise ModelFileError(f'{path_or_url}: corrupt model file ({type(err).__name__}: {err})') from err
    result = dict.fromkeys(NETWORK_KEYS)
    for key, entry in networks.items():
        if key not in NETWORK_KEYS or not isinstance(entry, dict):
            raise ModelFileError(f'{path_or_url}: unexpected entry {key!r}')
        result[key] = _build(entry, key, tensors)
    if force_fp16:
        import legacy
        for key in ('G', 'D', 'G_ema'):
            if result[key] is not None:
                result[key] = legacy._rebuild_fp16(result[key], key)
    if device is not None:
        result = {key: (net.to(device) if net is not None else None) for key, net in result.items()}
    result['training_set_kwargs'] = training_set_kwargs
    return result
