"""The kdgan hook around a host train.py with upstream StyleGAN2-ADA's layout and names.

`main(host)` makes one click command out of the host's own `main`: every
host option as the host declares it (with --cfg and --aug opened to any
name) plus the kdgan options the host lacks, taken from our train.py's
declarations. What it does with a command line:

* no plug-in name and no kdgan option: the host's main runs as if the hook
  were not there;
* otherwise the names are resolved with kdgan_plugins.registry and the
  functions of our training/config.py, in its order of precedence, and the
  host's main is invoked with what the host knows: --cfg=<the preset's base
  cfg>, --aug=noaug for a plug-in aug, no kdgan options. The host's own
  setup_training_loop_kwargs builds data, metrics, snapshots, ADA, resume and
  the run name; `patch_options` rewrites its result on the way back to main
  (networks, optimisers, loss, augment pipe, batch, EMA, loop options), and
  main then prints, dry-runs, writes and launches as it always does. Spawned
  ranks get the patched options and build every object by class name.

Why not build everything ourselves: a user's checkout may carry its own
edits, and the host's setup is the authority on its data, metrics, resume
and run folders. Precedence is written once, in training/config.py.
"""

import dataclasses
import inspect
import json
import os
import re
import sys
import types

import click

from kdgan_plugins.upstream import harness

__all__ = ['hook_options', 'main', 'make_command', 'resolve_names', 'patch_options']

# Options the hook adds where the host lacks them. The plug-in ones (these and every option of
# config.Flags.plugin_options) never reach the host; the harness ones reach a host that declares
# them (ours), and the hook applies them itself in one that does not.
_PLUGIN_ONLY = ('loss', 'ngf', 'ndf', 'diffaug')
_HARNESS_EXTRAS = ('cbase', 'cmax', 'map_depth', 'mbstd_group', 'ema', 'ada_kimg', 'detector_dir')
SECTIONS = ('G_kwargs', 'D_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'loss_kwargs')
# Loss options that only our loss core understands.
_CORE_ONLY = ('terms', 'teacher', 'class_names', 'adversarial', 'hinge_margin', 'G_aux')
_NOT_TABLE = ('p', 'target', 'policy')  # Preset defaults that steer the augment pipe, not the table row.
_OPEN_NAMES = ('cfg', 'aug')  # Host options whose choices the hook widens to registered names.


def _config():
    harness.install()
    from training import config
    return config


def hook_options(plugin_only=False):
    """The names of the options the hook adds (only those that never reach the host)."""
    config = _config()
    fields = {field.name for field in dataclasses.fields(config.Flags)}
    names = _PLUGIN_ONLY + tuple(config.Flags().plugin_options()) + (() if plugin_only else _HARNESS_EXTRAS)
    return tuple(name for name in names if name in fields)


def _our_train():
    """Our train.py (its option declarations and console helpers), loaded under a private name."""
    harness.install()
    return harness.load_private(os.path.join(harness.harness_dir(), 'train.py'), harness.PRIVATE + '.train')


def _host_module(host):
    return sys.modules[host] if isinstance(host, str) else host


# Resolution.

def _flags(values):
    """config.Flags from the command line's values; None means the Flags default."""
    config = _config()
    fields = {field.name for field in dataclasses.fields(config.Flags)}
    given = {key: value for key, value in values.items() if key in fields and value is not None}
    if isinstance(given.get('metrics'), list):
        given['metrics'] = tuple(given['metrics'])
    flags = config.Flags(**given)
    return dataclasses.replace(flags, kimg=config._whole(flags.kimg), tick=config._whole(flags.tick))


def resolve_names(flags):
    """(registry, presets, Names) for the flags, as our train.py resolves them."""
    config = _config()
    registry = config.load_registry()
    return registry, config.load_presets(), config._resolve_names(flags, registry)


def _uses_plugins(names, values, host_names):
    """A plug-in name, or an option that the host cannot take."""
    if any(names.is_plugin(kind) for kind in ('cfg', 'loss', 'aug')):
        return True
    plugin_only = hook_options(plugin_only=True)
    return any(value is not None and (key in plugin_only or key not in host_names)
               for key, value in values.items() if key in hook_options())


def _table_defaults(names):
    """Whether a loss or aug preset changes the table row (then the sections are rebuilt)."""
    for kind in ('loss', 'aug'):
        if set(names.preset[kind].get('defaults', {})) - set(_NOT_TABLE):
            return True
    return False


def _data_facts(set_kwargs):
    """(resolution, class names) of the host's data set. Class names are our datasets'
    extension (upstream's have none); the resolution is the host's if it recorded one."""
    import dnnlib
    resolution = set_kwargs.get('resolution')
    if not os.path.exists(str(set_kwargs.get('path', ''))):
        return resolution, None  # A dry run of our built-in set: drawn into a scratch folder already gone.
    dataset = dnnlib.util.construct_class_by_name(**set_kwargs)
    try:
        return resolution or dataset.resolution, getattr(dataset, 'class_names', None)
    finally:
        dataset.close()


def _base_sections(flags, names, registry, presets, spec, args):
    """Precedence steps 1-4 for the sections. A plug-in cfg (or a preset or --ema changing
    the table row) rebuilds them from the table, as our train.py does; a built-in cfg keeps
    what the host's setup built and only the loss preset patches it. Returns (sections, loop
    options, batch note)."""
    config = _config()
    if names.is_plugin('cfg') or _table_defaults(names) or flags.ema is not None:
        args.batch_size, args.batch_gpu, note = config._split_batch(spec, flags.gpus, flags.batch is None, flags.cfg)
        args.total_kimg, args.ema_kimg = spec.kimg, spec.ema
        if not args.get('resume_pkl'):
            args.ema_rampup = spec.ramp  # A resume keeps the host's transfer settings.
        sections, loop_extra = config._sections(spec, names, registry, presets)
        return sections, loop_extra, note
    sections = type(args)({key: args.get(key) for key in SECTIONS}, augment_kwargs=None)
    if names.is_plugin('loss'):
        presets.apply_loss_preset(names.loss, sections)
    return sections, {}, None


def _augment(flags, names, registry, args, sections):
    """A plug-in aug replaces the host's (it was given --aug=noaug); ada/fixed/noaug stay the host's."""
    config = _config()
    choice = config._aug_choice(flags, names)
    if names.is_plugin('aug'):
        args.ada_target, args.augment_p = choice.ada_target, choice.augment_p
        if choice.ada_kimg is not None:
            args.ada_kimg = choice.ada_kimg
        args.augment_kwargs = sections.get('augment_kwargs')
        config._apply_augment(args, choice, names, registry)
    config._apply_diffaug_policy(flags, names, args)
    if flags.ada_kimg is not None:
        args.ada_kimg = flags.ada_kimg
    return choice


def _host_ready_loss(loss_kwargs):
    """Point the loss at kdgan_plugins.upstream.loss where the host's training.loss is
    upstream's and the options need our core."""
    class_name = loss_kwargs.get('class_name')
    if harness.host_loss_takes_terms():
        return
    from kdgan_plugins.upstream.loss import CLASS_NAMES
    needs_core = class_name != 'training.loss.StyleGAN2Loss' or any(key in loss_kwargs for key in _CORE_ONLY)
    if class_name in CLASS_NAMES and needs_core:
        loss_kwargs['class_name'] = CLASS_NAMES[class_name]


def _check_loop_options(args):
    """Every top-level option must be one the host's training_loop takes."""
    from training import training_loop
    params = inspect.signature(training_loop.training_loop).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise click.UsageError(f'this host\'s training_loop takes no {", ".join(unknown)}; these options need '
                               f'kdgan\'s own tree (stylegan2_ada/)')


def patch_options(flags, names, registry, presets, args):
    """Patch the host's training options in place with the kdgan resolution; returns the
    report that our train.py prints as 'Resolved names'."""
    config = _config()
    resolution, class_names = _data_facts(args.training_set_kwargs)
    spec = config._table_spec(flags, names, resolution)
    sections, loop_extra, note = _base_sections(flags, names, registry, presets, spec, args)
    args.update({key: value for key, value in sections.items() if key != 'augment_kwargs'})
    args.update(loop_extra)
    choice = _augment(flags, names, registry, args, sections)
    info = types.SimpleNamespace(class_names=class_names)
    explicit = config._explicit_patch(flags, args, registry.deep_merge, presets, info)
    for section, part in explicit.items():
        registry.deep_merge(args[section], part)
    _host_ready_loss(args.loss_kwargs)
    _check_loop_options(args)
    return config._report(flags, names, spec, args, choice, explicit, note, None)


def _swap_token(text, pattern, new):
    """`text` with the last '-'-separated run matching `pattern` replaced by `new` (a
    template for re's expand), or with '-new' appended when there is none."""
    found = list(re.finditer(rf'-(?:{pattern})(?=-|$)', text))
    if not found:
        return f'{text}-{new}'
    last = found[-1]
    return text[:last.start()] + '-' + last.expand(new) + text[last.end():]


def _describe(desc, flags, names):
    """The host's run name with the plug-in names in place of what the host was given, in
    our train.py's order: cfg, its gamma/kimg/batch tags, loss, aug."""
    if names.is_plugin('cfg'):
        desc = _swap_token(desc, re.escape(names.base), names.cfg)
    if names.loss_given and names.loss != names.cfg_loss:
        hyper = r'(?:-(?:gamma|kimg|batch)[^-]*)*'
        desc = _swap_token(desc, f'({re.escape(names.cfg)}{hyper})', rf'\1-{names.loss}')
    if names.is_plugin('aug'):
        tags = []
        _config()._aug_tags(flags, names, tags)  # The host was given --aug=noaug and none of these.
        desc = _swap_token(desc, 'noaug', '-'.join(tags))
    return desc


# The command.

def _print_report(report):
    """Where each name came from and what it became (the presets' own text is left out)."""
    brief = {kind: {key: value for key, value in part.items() if key != 'preset'} if isinstance(part, dict) else part
             for kind, part in report.items()}
    print('kdgan plug-ins (kdgan_plugins.upstream):')
    print(json.dumps(brief, indent=2))
    print()


def _patched_setup(host, flags, names, registry, presets, dry_run):
    """The host's setup_training_loop_kwargs, then the kdgan patch; same return shape."""
    ours = _our_train()
    original = host.setup_training_loop_kwargs

    def setup(**config_kwargs):
        result = original(**config_kwargs)
        desc, args = result[0], result[1]
        try:
            report = patch_options(flags, names, registry, presets, args)
        except _config().ConfigError as err:
            raise ours._click_error(err) from err
        _print_report(report)
        if not dry_run and not hasattr(host, 'check_loss_assets'):  # Ours does both itself.
            ours.show_plugin_logs()
            for line in ours.check_loss_assets(args.loss_kwargs, flags.detector_dir):
                print(f'Asset: {line}')
        rest = tuple(result[2:])
        if rest and isinstance(rest[0], dict) and 'cfg' in rest[0]:
            rest = (report,) + rest[1:]  # A host that reports resolved names (ours) shows ours.
        return (_describe(desc, flags, names), args) + rest
    return setup


def _host_values(values, names, host_names):
    """The host's share of the command line: built-in names, no kdgan options."""
    out = {key: value for key, value in values.items() if key in host_names}
    if names.is_plugin('cfg'):
        out['cfg'] = names.base
    if names.is_plugin('aug'):
        out.update(aug='noaug', p=None, target=None, augpipe=None, ada_kimg=None)
    elif out.get('aug') is None and names.aug != 'ada':
        out['aug'] = names.aug  # A plug-in cfg's built-in default aug.
    for key in hook_options(plugin_only=True):
        out[key] = None
    return {key: value for key, value in out.items() if key in host_names}


def _run(ctx, host, host_command, values):
    host_names = {param.name for param in host_command.params}
    flags = _flags(values)
    try:
        registry, presets, names = resolve_names(flags)
    except _config().ConfigError as err:
        raise _our_train()._click_error(err) from err
    if not _uses_plugins(names, values, host_names):
        return ctx.invoke(host_command, **{k: v for k, v in values.items() if k in host_names})
    if flags.detector_dir is not None:
        from metrics import detectors
        flags = dataclasses.replace(flags, detector_dir=os.path.abspath(os.path.expanduser(flags.detector_dir)))
        os.environ[detectors.DEFAULT_ENV_VAR] = flags.detector_dir  # Spawned ranks inherit it.
    original = host.setup_training_loop_kwargs
    host.setup_training_loop_kwargs = _patched_setup(host, flags, names, registry, presets,
                                                     bool(values.get('dry_run')))
    try:
        return ctx.invoke(host_command, **_host_values(values, names, host_names))
    finally:
        host.setup_training_loop_kwargs = original


def _widened(param):
    if param.name not in _OPEN_NAMES or not isinstance(param.type, click.Choice):
        return param
    return click.Option(param.opts, type=str, default=param.default, metavar='NAME',
                        help=(param.help or '') + ' (with kdgan: or a registered plug-in name)')


def make_command(host):
    """The host's main command with --cfg/--aug widened and the kdgan options added."""
    host = _host_module(host)
    host_command = host.main
    params = [_widened(param) for param in host_command.params]
    have = {param.name for param in params}
    for declarations, keywords in _our_train()._OPTIONS:
        option = click.Option(declarations, **keywords)
        if option.name in hook_options() and option.name not in have:
            params.append(option)

    @click.pass_context
    def callback(ctx, **values):
        return _run(ctx, host, host_command, values)

    doc = (host_command.help or '') + '\n\nWith the kdgan hook: plug-in --cfg/--loss/--aug names and options.'
    return click.Command(host_command.name, params=params, callback=callback, help=doc,
                         context_settings=dict(help_option_names=['-h', '--help']))


def main(host='__main__', args=None):
    """Run the host's train.py through the hook (`host`: the module or its name)."""
    host = _host_module(host)
    command = make_command(host)
    prog = os.path.basename(getattr(host, '__file__', None) or 'train.py')
    return command.main(args=args, prog_name=prog)
