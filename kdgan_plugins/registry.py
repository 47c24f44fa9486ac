"""Named presets that train.py resolves `--cfg`, `--loss` and `--aug` against.

A preset is plain data (dicts, lists, strings, numbers, booleans, None), so it
can be printed by `train.py --dry-run`, stored in `training_options.json`
and diffed between runs. It never holds classes or callables: networks,
losses and augment pipes are named by `class_name` strings that the training
loop builds with `dnnlib.util.construct_class_by_name`.

Kinds
-----
'cfg'   a training configuration (networks, optimisers, hyper-parameters);
'loss'  a loss (usually `loss_kwargs`, sometimes a D wrapper as well);
'aug'   an augment pipe.

Keys of a preset (all optional)
-------------------------------
description     one line for `--help`-style listings.
G_kwargs, D_kwargs, G_opt_kwargs, D_opt_kwargs, loss_kwargs, augment_kwargs
                patches for the option sections of the same names (see
                "Patching" below).
defaults        hyper-parameter defaults, keyed like the cfg table:
                batch, kimg, mbstd, fmaps, lr, gamma, ema, ramp, map,
                plus for aug presets p (initial augment probability) and
                target (ADA target; a preset with a target is adaptive),
                and policy (the DiffAugment ops a DiffAugment pipe uses
                unless --diffaug names others; a cfg's policy beats the
                aug preset's own).
                The table's own column names mb and lrate are accepted as
                aliases of batch and lr.
replace         names of sections that this preset replaces instead of
                patching.
base            ('cfg' only) the built-in cfg whose table row is the
                starting point, default 'auto'.
loss, aug       ('cfg' only) the default `--loss` / `--aug` name for runs
                of this cfg that do not name one.

Patching (one implementation: `deep_merge`)
-------------------------------------------
A section patch is merged into the current section key by key, recursing
into nested dicts; values that are not dicts (lists included) replace the
old value. A section is *replaced* (started from empty, then the patch is
merged in) when the preset lists it in `replace`, or when the patch names a
`class_name` different from the section's current one: another class's
keyword arguments would not fit the new class.

Precedence (lowest first)
-------------------------
1. the built-in table row (`--cfg`'s `base`, training.cfg_specs);
2. the cfg preset's defaults, then the loss preset's, then the aug preset's;
3. the sections built from those values, patched by the cfg preset, then the
   loss preset, then the aug preset;
4. explicit command-line flags (`--batch`, `--gamma`, `--kimg`, `--fp32`,
   ...), which always win.

Names are unique per kind and may contain dots and dashes (`kdgan.AGKD`,
`fastgan_lite`). The built-in names of train.py (see `BUILTIN_NAMES`) are
resolved before the registry and cannot be registered.

Third-party presets register themselves when their module is imported; list
such modules, comma-separated, in the environment variable `KDGAN_PLUGINS`
and `load_plugins()` (called by train.py) imports them, so a new method is
usable by name without touching the harness.
"""

import copy
import importlib
import os
import re

__all__ = ['KINDS', 'SECTIONS', 'DEFAULT_KEYS', 'BUILTIN_NAMES', 'register', 'unregister', 'lookup', 'names',
           'is_registered', 'defaults', 'deep_merge', 'apply', 'load_plugins']

KINDS = ('cfg', 'loss', 'aug')
SECTIONS = ('G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'loss_kwargs', 'augment_kwargs')
DEFAULT_KEYS = ('batch', 'kimg', 'mbstd', 'fmaps', 'lr', 'gamma', 'ema', 'ramp', 'map', 'p', 'target', 'policy')
DEFAULT_ALIASES = {'mb': 'batch', 'lrate': 'lr'}
BUILTIN_NAMES = {
    'cfg': ('auto', 'stylegan2', 'paper256', 'paper512', 'paper1024', 'cifar'),
    'loss': ('stylegan2',),
    'aug': ('ada', 'noaug', 'fixed'),
}
_OTHER_KEYS = {
    'cfg': ('description', 'defaults', 'replace', 'base', 'loss', 'aug'),
    'loss': ('description', 'defaults', 'replace'),
    'aug': ('description', 'defaults', 'replace'),
}
_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.\-]*$')

_registry = {kind: {} for kind in KINDS}


# Validation


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f'unknown preset kind {kind!r}; kinds are {", ".join(KINDS)}')


def _check_data(value, where):
    """Presets are data: JSON-like values only, so they print and store as they are."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_data(item, f'{where}[{i}]')
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f'{where}: keys must be strings, got {key!r}')
            _check_data(item, f'{where}.{key}')
        return
    raise TypeError(f'{where}: presets hold data only (dict, list, str, number, bool, None), '
                    f'got {type(value).__name__}; name classes by a class_name string')


def _normalise(kind, name, preset):
    if not isinstance(preset, dict):
        raise TypeError(f'{kind} preset {name!r} must be a dict, got {type(preset).__name__}')
    allowed = set(SECTIONS) | set(_OTHER_KEYS[kind])
    unknown = sorted(set(preset) - allowed)
    if unknown:
        raise ValueError(f'{kind} preset {name!r}: unknown key(s) {", ".join(unknown)}; '
                         f'allowed: {", ".join(sorted(allowed))}')
    _check_data(preset, f'{kind} preset {name!r}')
    preset = copy.deepcopy(preset)
    for section in SECTIONS:
        if section in preset and not isinstance(preset[section], dict):
            raise TypeError(f'{kind} preset {name!r}: {section} must be a dict of keyword arguments')
    replace = preset.get('replace', [])
    if isinstance(replace, str) or not all(s in SECTIONS for s in replace):
        raise ValueError(f'{kind} preset {name!r}: replace must list section names out of {", ".join(SECTIONS)}')
    if 'replace' in preset:
        preset['replace'] = list(replace)
    if 'defaults' in preset:
        if not isinstance(preset['defaults'], dict):
            raise TypeError(f'{kind} preset {name!r}: defaults must be a dict')
        fixed = {}
        for key, value in preset['defaults'].items():
            key = DEFAULT_ALIASES.get(key, key)
            if key not in DEFAULT_KEYS:
                raise ValueError(f'{kind} preset {name!r}: unknown default {key!r}; '
                                 f'known: {", ".join(DEFAULT_KEYS)}')
            fixed[key] = value
        preset['defaults'] = fixed
    if kind == 'cfg':
        base = preset.get('base', 'auto')
        if base not in BUILTIN_NAMES['cfg']:
            raise ValueError(f'cfg preset {name!r}: base must be a built-in cfg '
                             f'({", ".join(BUILTIN_NAMES["cfg"])}), got {base!r}')
        for key in ('loss', 'aug'):
            if key in preset and not isinstance(preset[key], str):
                raise TypeError(f'cfg preset {name!r}: {key} must be a {key} name')
    return preset


# The registry


def register(kind, name, preset, overwrite=False):
    """Add preset `name` of `kind` ('cfg', 'loss' or 'aug'); returns the stored copy.

    Raises ValueError for a built-in name, a name taken (unless
    `overwrite=True`), a malformed name or preset; TypeError for values that
    are not data.
    """
    _check_kind(kind)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f'bad {kind} name {name!r}: use letters, digits, "_", "." and "-" '
                         f'(e.g. "fastgan", "kdgan.AGKD")')
    if name in BUILTIN_NAMES[kind]:
        raise ValueError(f'{kind} name {name!r} is built into train.py and cannot be registered')
    if name in _registry[kind] and not overwrite:
        raise ValueError(f'{kind} preset {name!r} is already registered; pass overwrite=True to replace it')
    _registry[kind][name] = _normalise(kind, name, preset)
    return copy.deepcopy(_registry[kind][name])


def unregister(kind, name):
    """Remove a preset (tests use this to clean up); unknown names raise KeyError."""
    _check_kind(kind)
    if name not in _registry[kind]:
        raise KeyError(_unknown_message(kind, name))
    del _registry[kind][name]


def _unknown_message(kind, name):
    known = names(kind)
    return (f'no {kind} preset named {name!r}; registered: {", ".join(known) if known else "(none)"}; '
            f'built in: {", ".join(BUILTIN_NAMES[kind])}')


def lookup(kind, name):
    """A deep copy of the preset (changing it does not change the registry)."""
    _check_kind(kind)
    if name not in _registry[kind]:
        raise KeyError(_unknown_message(kind, name))
    return copy.deepcopy(_registry[kind][name])


def names(kind):
    """Registered names of `kind`, sorted (built-in names are not listed)."""
    _check_kind(kind)
    return sorted(_registry[kind])


def is_registered(kind, name):
    _check_kind(kind)
    return name in _registry[kind]


def defaults(kind, name):
    """The preset's defaults with aliases normalised ({} when it has none)."""
    return lookup(kind, name).get('defaults', {})


# Patching


def _same_mapping_type(template, value):
    """Build nested dicts with the same mapping class as `template` (e.g. dnnlib.EasyDict)."""
    cls = type(template) if isinstance(template, dict) else dict
    try:
        return cls(value)
    except TypeError:
        return dict(value)


def deep_merge(dst, patch):
    """Merge `patch` into the dict `dst` in place and return `dst`.

    Nested dicts merge recursively; anything else (lists included) replaces
    the old value. Values are deep-copied, so later edits of `dst` never
    reach the preset. New nested dicts take `dst`'s mapping class.
    """
    for key, value in patch.items():
        if isinstance(value, dict):
            if isinstance(dst.get(key), dict):
                deep_merge(dst[key], value)
            else:
                dst[key] = deep_merge(_same_mapping_type(dst, {}), value)
        else:
            dst[key] = copy.deepcopy(value)
    return dst


def patch_section(current, patch, replace=False):
    """One section after a patch: replaced when asked or when `class_name` changes, else merged."""
    if current is None:
        current = {}
    new_class = patch.get('class_name')
    if replace or (new_class is not None and new_class != current.get('class_name')):
        current = _same_mapping_type(current, {})
    return deep_merge(current, patch)


def apply(kind, name, options):
    """Patch the option sections of `options` (a dict, e.g. train.py's EasyDict) with
    preset `name` in place, and return `options`. Sections the preset does not
    mention are left alone. Defaults are not applied here: train.py folds
    them into the cfg values (see `defaults`) before it builds the sections."""
    preset = lookup(kind, name)
    replace = set(preset.get('replace', []))
    for section in SECTIONS:
        if section in preset:
            options[section] = patch_section(options.get(section), preset[section], replace=section in replace)
        elif section in replace:
            options[section] = _same_mapping_type(options.get(section) or {}, {})
    return options


# Third-party plug-ins


def load_plugins(modules=None):
    """Import the modules that register presets: `modules` (a list or a
    comma-separated string), else $KDGAN_PLUGINS. Returns the imported names.
    An import error names the module and the variable, and is not hidden."""
    if modules is None:
        modules = os.environ.get('KDGAN_PLUGINS', '')
    if isinstance(modules, str):
        modules = [m.strip() for m in modules.split(',')]
    loaded = []
    for module in modules:
        if not module:
            continue
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(f'cannot import plug-in module {module!r} (from KDGAN_PLUGINS or the caller): '
                              f'{err}') from err
        loaded.append(module)
    return loaded
