"""kdgan_plugins.registry: presets as data, register/lookup/names, and the one
patching rule (deep merge; a new class_name or `replace` starts a section over)."""
import json
import sys

import pytest

from kdgan_plugins import registry



def test_register_lookup_names(clean_registry):
    preset = dict(description='tiny', defaults=dict(batch=8, lrate=0.01, mb=8),
                  G_kwargs=dict(synthesis_kwargs=dict(channel_max=32)))
    stored = registry.register('cfg', 'test.tiny', preset)
    assert 'test.tiny' in registry.names('cfg')
    assert registry.is_registered('cfg', 'test.tiny')
    assert not registry.is_registered('loss', 'test.tiny')  # names are per kind
    got = registry.lookup('cfg', 'test.tiny')
    # Table aliases (mb, lrate) normalise to the documented keys.
    assert got['defaults'] == dict(batch=8, lr=0.01)
    assert got == stored
    assert registry.defaults('cfg', 'test.tiny') == dict(batch=8, lr=0.01)
    # Stored as data: JSON round-trips.
    assert json.loads(json.dumps(got)) == got


def test_lookup_returns_independent_copies(clean_registry):
    preset = dict(loss_kwargs=dict(class_name='my.Loss', weights=[1, 2]))
    registry.register('loss', 'test.copy', preset)
    preset['loss_kwargs']['weights'].append(3)  # changing the caller's dict does not reach the registry
    first = registry.lookup('loss', 'test.copy')
    first['loss_kwargs']['weights'].append(99)
    assert registry.lookup('loss', 'test.copy')['loss_kwargs']['weights'] == [1, 2]


def test_dotted_names_and_overwrite(clean_registry):
    registry.register('loss', 'kdgan.TestKD', dict(loss_kwargs=dict(class_name='a.B', w=1)))
    with pytest.raises(ValueError, match='already registered'):
        registry.register('loss', 'kdgan.TestKD', dict(loss_kwargs=dict(class_name='a.B', w=2)))
    registry.register('loss', 'kdgan.TestKD', dict(loss_kwargs=dict(class_name='a.B', w=2)), overwrite=True)
    assert registry.lookup('loss', 'kdgan.TestKD')['loss_kwargs']['w'] == 2
    registry.unregister('loss', 'kdgan.TestKD')
    assert 'kdgan.TestKD' not in registry.names('loss')


def test_unknown_name_lists_known(clean_registry):
    registry.register('aug', 'test.one', dict(augment_kwargs=dict(class_name='x.Y')))
    registry.register('aug', 'test.two', dict(augment_kwargs=dict(class_name='x.Z')))
    with pytest.raises(KeyError) as info:
        registry.lookup('aug', 'nope')
    message = str(info.value)
    assert "'nope'" in message and 'test.one' in message and 'test.two' in message and 'ada' in message


@pytest.mark.parametrize('kind,name,preset,error,phrase', [
    ('bogus', 'x', {}, ValueError, 'unknown preset kind'),
    ('cfg', 'auto', {}, ValueError, 'built into train.py'),
    ('aug', 'ada', {}, ValueError, 'built into train.py'),
    ('loss', 'has space', {}, ValueError, 'bad loss name'),
    ('loss', '', {}, ValueError, 'bad loss name'),
    ('cfg', 'x', dict(G_kwarg={}), ValueError, 'unknown key'),
    ('cfg', 'x', dict(defaults=dict(speed=3)), ValueError, 'unknown default'),
    ('cfg', 'x', dict(base='fastgan'), ValueError, 'base must be a built-in'),
    ('loss', 'x', dict(base='auto'), ValueError, 'unknown key'),  # base is a cfg-only key
    ('cfg', 'x', dict(G_kwargs=[1]), TypeError, 'must be a dict'),
    ('cfg', 'x', dict(replace='G_kwargs'), ValueError, 'replace must list'),
    ('cfg', 'x', dict(G_kwargs=dict(cls=object)), TypeError, 'data only'),
    ('cfg', 'x', [1, 2], TypeError, 'must be a dict'),
])
def test_register_rejects(clean_registry, kind, name, preset, error, phrase):
    with pytest.raises(error, match=phrase):
        registry.register(kind, name, preset)


def test_deep_merge_semantics():
    dst = dict(a=1, nested=dict(x=1, y=dict(k=1)), lst=[1, 2])
    patch = dict(b=2, nested=dict(y=dict(j=2), z=3), lst=[9])
    out = registry.deep_merge(dst, patch)
    assert out is dst
    assert dst == dict(a=1, b=2, nested=dict(x=1, y=dict(k=1, j=2), z=3), lst=[9])
    patch['lst'].append(10)  # values are copied
    assert dst['lst'] == [9]


def test_deep_merge_keeps_mapping_class():
    import dnnlib
    dst = dnnlib.EasyDict(a=dnnlib.EasyDict())
    registry.deep_merge(dst, dict(a=dict(b=1), c=dict(d=2)))
    assert dst.a.b == 1 and dst.c.d == 2  # attribute access works on new nested dicts too


def _options():
    return dict(
        G_kwargs=dict(class_name='training.networks.Generator', z_dim=512,
                      synthesis_kwargs=dict(channel_base=16384, channel_max=512)),
        D_kwargs=dict(class_name='training.networks.Discriminator', channel_base=16384),
        loss_kwargs=dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1),
        augment_kwargs=dict(class_name='training.augment.AugmentPipe', xflip=1),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.0025),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.0025),
        batch_size=64,
    )


def test_apply_merges_same_class_and_replaces_new_class(clean_registry):
    registry.register('cfg', 'test.patch', dict(
        G_kwargs=dict(synthesis_kwargs=dict(channel_max=64)),           # merged: same class
        D_kwargs=dict(class_name='plugins.OtherD', width=3),              # new class: section starts over
        G_opt_kwargs=dict(lr=0.01),
        defaults=dict(batch=8),
    ))
    options = _options()
    registry.apply('cfg', 'test.patch', options)
    assert options['G_kwargs'] == dict(class_name='training.networks.Generator', z_dim=512,
                                       synthesis_kwargs=dict(channel_base=16384, channel_max=64))
    assert options['D_kwargs'] == dict(class_name='plugins.OtherD', width=3)
    assert options['G_opt_kwargs'] == dict(class_name='torch.optim.Adam', lr=0.01)
    # Untouched sections and top-level values stay; defaults are not applied by apply().
    assert options['D_opt_kwargs'] == dict(class_name='torch.optim.Adam', lr=0.0025)
    assert options['loss_kwargs']['r1_gamma'] == 1
    assert options['batch_size'] == 64


def test_apply_same_class_name_merges_and_replace_list(clean_registry):
    registry.register('loss', 'test.samecls', dict(loss_kwargs=dict(class_name='training.loss.StyleGAN2Loss',
                                                                    pl_weight=0)))
    options = registry.apply('loss', 'test.samecls', _options())
    assert options['loss_kwargs'] == dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1, pl_weight=0)

    registry.register('loss', 'test.fresh', dict(loss_kwargs=dict(pl_weight=0), replace=['loss_kwargs']))
    options = registry.apply('loss', 'test.fresh', _options())
    assert options['loss_kwargs'] == dict(pl_weight=0)


def test_apply_onto_missing_section(clean_registry):
    registry.register('aug', 'test.newpipe', dict(augment_kwargs=dict(class_name='x.Pipe', policy='color')))
    options = _options()
    options['augment_kwargs'] = None  # --aug=noaug leaves no pipe
    registry.apply('aug', 'test.newpipe', options)
    assert options['augment_kwargs'] == dict(class_name='x.Pipe', policy='color')


def test_load_plugins_from_env(clean_registry, tmp_path, monkeypatch):
    (tmp_path / 'thirdparty_presets.py').write_text(
        'from kdgan_plugins import registry\n'
        "registry.register('cfg', 'thirdparty.small', dict(defaults=dict(batch=4)), overwrite=True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv('KDGAN_PLUGINS', 'thirdparty_presets, ')
    assert registry.load_plugins() == ['thirdparty_presets']
    assert registry.defaults('cfg', 'thirdparty.small') == dict(batch=4)
    sys.modules.pop('thirdparty_presets', None)
    monkeypatch.setenv('KDGAN_PLUGINS', 'no_such_plugin_module_xyz')
    with pytest.raises(ImportError, match='no_such_plugin_module_xyz'):
        registry.load_plugins()
