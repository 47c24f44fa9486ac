"""training/preflight.py's cheap paths: before a real run the networks are built with meta weights
(the training loop builds the real ones) and must have exactly the names, shapes and dtypes of a
real build; a dry run never downloads a URL resume source; the exact-resume option check and
checkpoint.check_options compare options the same way."""
import pytest
import torch

import dnnlib
from helpers import dry_run
from training import checkpoint, config, preflight

CASES = {
    'stylegan2': ['--cfg=auto', '--cbase=2048', '--cmax=64'],
    'fastgan': ['--cfg=fastgan', '--ngf=8', '--ndf=8'],
    'biggan': ['--cfg=biggan_cifar', '--cond=1'],
}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))


@pytest.mark.parametrize('case', sorted(CASES))
def test_meta_build_matches_a_real_build(tmp_path, case):
    options, _, _ = dry_run(tmp_path / 'runs', 'builtin:shapes-32', *CASES[case])
    args = dnnlib.EasyDict(options)
    dims = dict(c_dim=5 if '--cond=1' in CASES[case] else 0, img_resolution=32, img_channels=3)
    meta = preflight.build_networks(args, dims, meta=True)
    real = preflight.build_networks(args, dims, meta=False)
    for key in ('G', 'D'):
        meta_state, real_state = meta[key].state_dict(), real[key].state_dict()
        assert list(meta_state) == list(real_state), key
        for name, tensor in real_state.items():
            assert (meta_state[name].shape, meta_state[name].dtype) == (tensor.shape, tensor.dtype), (key, name)
        assert not any(t.is_meta for t in real_state.values())
        big = [name for name, t in real_state.items() if t.numel() >= preflight._META_NUMEL]
        assert big and all(meta_state[name].is_meta for name in big), (key, big)


def test_meta_build_keeps_the_callers_random_stream():
    args = dnnlib.EasyDict(
        G_kwargs=dict(class_name='training.networks.Generator', z_dim=8, w_dim=8, mapping_kwargs=dict(num_layers=1),
                      synthesis_kwargs=dict(channel_base=4096, channel_max=64)),
        D_kwargs=dict(class_name='training.networks.Discriminator', channel_base=4096, channel_max=64))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    preflight.build_networks(args, dict(c_dim=0, img_resolution=32, img_channels=3), meta=True)
    assert torch.equal(torch.rand(3), expected)


def test_dry_run_does_not_download_a_url_resume(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError('a dry run tried to download its resume source')
    monkeypatch.setattr(dnnlib.util, 'open_url', no_download)
    args = dnnlib.EasyDict(resume_pkl='https://example.com/network-snapshot.pkl', G_kwargs={}, D_kwargs={})
    assert preflight.check_resume(args, {}, dry_run=True) is None
    with pytest.raises(config.ConfigError, match='--resume'):   # a real run reads it, here before any folder
        preflight.check_resume(args, {}, dry_run=False)


def test_exact_resume_options_are_compared_like_the_loop_does():
    saved = dict(batch_size=4, G_kwargs=dict(class_name='x', channel_max=16), ema_kimg=10)
    state = dict(options_json=checkpoint.options_json(saved), options_hash=checkpoint.options_hash(saved))
    now = dict(batch_size=4, G_kwargs=dnnlib.EasyDict(channel_max=32, class_name='x'), ema_kimg=10,
               total_kimg=5, resume_mode='auto')
    with pytest.raises(config.ConfigError, match=r'differ: G_kwargs; '):
        preflight._check_exact_options(state, now, 'x.ckpt.pt')
    assert checkpoint.option_differences(state, now, shared_only=True) == [
        ('G_kwargs', dict(class_name='x', channel_max=16), dict(class_name='x', channel_max=32))]
    with pytest.raises(ValueError, match=r'(?s)G_kwargs: checkpoint .* total_kimg: checkpoint "<absent>"'):
        checkpoint.check_options(state, {k: v for k, v in now.items() if k != 'resume_mode'}, 'x.ckpt.pt')
    now['G_kwargs'].channel_max = 16
    preflight._check_exact_options(state, now, 'x.ckpt.pt')   # only options the preflight knows both ways
