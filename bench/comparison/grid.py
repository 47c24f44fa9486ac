"""The grid to run: methods (named or NAME=FLAGS), seeds, per-selector flags, budget presets."""
import os
import re
import shlex

from bench import compare_methods
from bench.comparison.common import CompareError, RESERVED_FLAGS, say


_NAME_RE = r'[A-Za-z0-9][A-Za-z0-9_.+\-]*'


def parse_methods(values, table=None):
    """`--methods` values -> ordered {name: [train.py flags]}.

    Each value is a comma list of table names and `NAME=FLAGS` items. A piece
    that is neither a table name nor `NAME=...` continues the previous custom
    item's flags, so a flag value may itself contain commas.
    """
    table = compare_methods.METHODS if table is None else table
    items = []  # [name, flags text or None]
    for value in values:
        for piece in value.split(','):
            text = piece.strip()
            custom = re.match(r'^(' + _NAME_RE + r')=(.*)$', text, re.S)
            if text in table:
                items.append([text, None])
            elif custom and not text.startswith('-'):
                items.append([custom.group(1), custom.group(2)])
            elif items and items[-1][1] is not None:
                items[-1][1] += ',' + piece
            elif text:
                raise CompareError('--methods: unknown method {!r}; known: {} (or give NAME=FLAGS)'.format(
                    text, ', '.join(table)))
    if not items:
        raise CompareError('--methods: give at least one method, e.g. --methods=stylegan2+ada,stylegan2+diffaug')
    methods = {}
    for name, flags in items:
        if name in methods:
            raise CompareError('--methods: {} is named twice'.format(name))
        if flags is None:
            methods[name] = list(table[name])
        else:
            if name in table:
                raise CompareError('--methods: {} is already a table method ({}); give the custom one another '
                                   'name'.format(name, ' '.join(table[name])))
            try:
                methods[name] = shlex.split(flags)
            except ValueError as err:
                raise CompareError('--methods: cannot split the flags of {}: {}'.format(name, err))
    for name, flags in methods.items():
        check_flags(flags, 'method {}'.format(name))
    return methods


def parse_extra_for(items):
    """`--extra-for` values ('SELECTOR:FLAGS') or a preset's {selector: [flags]} -> ordered {selector: [flags]}.

    A method gets FLAGS when SELECTOR is one of its own flags (e.g. '--cfg=fastgan',
    '--loss=kdgan.KDDLGAN'): size flags differ by backbone (train.py refuses --ngf with a
    StyleGAN2 cfg and --cbase with FastGAN), teacher files only go with a KD loss.
    """
    if isinstance(items, dict):
        pairs = [(k, list(v) if not isinstance(v, str) else shlex.split(v)) for k, v in items.items()]
    else:
        pairs = []
        for item in items or []:
            selector, sep, flags = str(item).partition(':')
            if not sep or not selector.startswith('-'):
                raise CompareError("--extra-for: expected SELECTOR:FLAGS with SELECTOR a train.py flag, e.g. "
                                   "'--cfg=fastgan:--ngf=16 --ndf=16'; got {!r}".format(item))
            pairs.append((selector.strip(), shlex.split(flags)))
    out = {}
    for selector, flags in pairs:
        check_flags(flags, '--extra-for {}'.format(selector))
        out.setdefault(selector, []).extend(flags)
    return out


def apply_extra_for(methods, extra_for):
    """Each method's flags plus the flags of every selector it carries (in --extra-for order)."""
    out = {}
    for name, flags in methods.items():
        added = [f for selector, more in extra_for.items() if selector in flags for f in more]
        out[name] = list(flags) + added
    return out


def check_flags(flags, where):
    for flag in flags:
        head = flag.split('=', 1)[0]
        if head in RESERVED_FLAGS:
            raise CompareError('{}: {} is set by the runner (its own --kimg/--minutes/--tick/--snap/--seeds '
                               'options, and --resume when continuing); remove it'.format(where, head))


def parse_seeds(text):
    """'0,1,2' or '0-2' or '0,5-6' -> [0, 1, 2] ..."""
    seeds = []
    parts = [str(t) for t in text] if isinstance(text, (list, tuple)) else str(text).split(',')
    for part in parts:
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r'(\d+)-(\d+)', part)
        try:
            new = list(range(int(m.group(1)), int(m.group(2)) + 1)) if m else [int(part)]
        except ValueError:
            raise CompareError('--seeds: {!r} is not a number or a range a-b'.format(part))
        for seed in new:
            if seed not in seeds:
                seeds.append(seed)
    if not seeds:
        raise CompareError('--seeds: give at least one seed, e.g. --seeds=0,1,2')
    return seeds


def safe_name(name):
    return re.sub(r'[^A-Za-z0-9_.+=\-]', '_', name)


def run_key(method, seed):
    return '{}@seed{}'.format(method, seed)


class Config:
    def __init__(self, **kwargs):
        self.skip_start = False
        self.__dict__.update(kwargs)

    def run_dir(self, method, seed, *sub):
        return os.path.join(self.outdir, 'runs', '{}-seed{}'.format(safe_name(method), seed), *sub)


def _substitute(value, values):
    """`{name}` -> values[name] in the strings of a preset value (lists and dicts walked); other braces stay
    (a flag such as --kd-template='A photo of a {label}' passes through)."""
    if isinstance(value, str):
        for name, text in values.items():
            value = value.replace('{' + name + '}', str(text))
        return value
    if isinstance(value, (list, tuple)):
        return [_substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in value.items()}
    return value


def resolve_budget(name, outdir, known_keys):
    """A preset of compare_methods.BUDGETS with its `prepare` step run and its placeholders filled.

    `prepare` = (module:function, kwargs): called as function(outdir, **kwargs) before anything
    else, it makes what the preset points at (data, detector, teacher) and returns the
    placeholder values; the preset's strings may then say e.g. '{fmnist_train}'.
    '{outdir}' (the comparison's own folder) is always defined.
    """
    if name not in compare_methods.BUDGETS:
        raise CompareError('--budget: no preset {!r}; defined: {}'.format(
            name, ', '.join(compare_methods.BUDGETS) or 'none'))
    preset = dict(compare_methods.BUDGETS[name])
    hook = preset.pop('prepare', None)
    unknown = set(preset) - set(known_keys)
    if unknown:
        raise CompareError('budget preset {} has unknown keys: {}'.format(name, ', '.join(sorted(unknown))))
    values = dict(outdir=outdir)
    if hook is not None:
        import importlib
        target, kwargs = hook
        module, _, func = target.partition(':')
        say('[compare] budget {}: preparing data and networks ({})'.format(name, target))
        os.makedirs(outdir, exist_ok=True)
        try:
            values.update(getattr(importlib.import_module(module), func)(outdir, **dict(kwargs)))
        except (OSError, ValueError) as err:
            raise CompareError('budget {}: {}'.format(name, err))
    return _substitute(preset, values)
