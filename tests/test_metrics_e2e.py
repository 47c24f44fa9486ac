"""The metrics end to end on CPU: a small TorchScript detector with NVIDIA's call
signature, saved to files that go through the real resolver and loader
(detector folder / environment variable -> open_url -> torch.jit.load), a tiny
data set (builtin:shapes at 16x16) and tiny generators. Also: the real-image
statistics are cached once and reused, and the resolver's search order."""
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dnnlib
from helpers import one_thread  # noqa: F401  (module-scoped autouse fixture)
from metrics import detectors, metric_main, metric_utils
from metrics.frechet_inception_distance import fid_from_stats
from training import dataset as dataset_lib
from training import networks, shapes

# The stand-in detector is TorchScript, which recent torch calls deprecated.
pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:FutureWarning')

RES = 16
NUM_IMAGES = 40

# A stand-in detector: same inputs and keyword arguments as NVIDIA's files.


class TinyDetector(torch.nn.Module):
    """Takes uint8-range NCHW RGB images of any size. `return_features=True` gives
    features, `no_output_bias=True` softmax probabilities without the output bias
    (as the Inception file does), `return_lpips=True` unit-normalised activations
    whose squared distance acts as LPIPS (as the VGG16 file does)."""

    def __init__(self, num_features=24, num_classes=10, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.fc = torch.nn.Linear(16 * 4 * 4, num_features)
        self.out = torch.nn.Linear(num_features, num_classes)
        torch.nn.init.normal_(self.out.bias, std=3.0)

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False,
                return_lpips: bool = False, resize_images: bool = True) -> torch.Tensor:
        assert img.dim() == 4 and img.shape[1] == 3, 'expected RGB NCHW'
        x = img.to(torch.float32) / 127.5 - 1
        if resize_images:
            x = F.adaptive_avg_pool2d(x, [8, 8])
        else:
            x = F.interpolate(x, size=[8, 8], mode='area')
        h1 = torch.relu(self.conv1(x))
        h2 = torch.relu(self.conv2(h1))
        if return_lpips:
            n1 = h1 / (h1.square().sum(1, keepdim=True).sqrt() + 1e-8) / 8.0
            n2 = h2 / (h2.square().sum(1, keepdim=True).sqrt() + 1e-8) / 4.0
            return torch.cat([n1.flatten(1), n2.flatten(1)], dim=1)
        features = self.fc(h2.flatten(1))
        if return_features:
            return features
        if no_output_bias:
            logits = F.linear(features, self.out.weight)
        else:
            logits = self.out(features)
        return torch.softmax(logits, dim=1)


def save_test_detectors(folder, seed=0):
    """Write TorchScript stand-ins under NVIDIA's file names into `folder`."""
    os.makedirs(folder, exist_ok=True)
    module = torch.jit.script(TinyDetector(seed=seed).eval())
    for name in ('inception-2015-12-05.pt', 'vgg16.pt'):
        module.save(os.path.join(folder, name))
    return str(folder)


def tiny_G(c_dim=0, res=RES, seed=0):
    torch.manual_seed(seed)
    return networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=res, img_channels=3,
                               mapping_kwargs=dict(num_layers=2),
                               synthesis_kwargs=dict(channel_base=128, channel_max=16)).eval()


class ReplayG(torch.nn.Module):
    """A 'generator' that returns random real images mapped to [-1, 1]: every
    generated image is exactly one of the real ones after the uint8 mapping."""

    def __init__(self, images):
        super().__init__()
        self.register_buffer('images', torch.as_tensor(images, dtype=torch.float32) / 127.5 - 1)
        self.z_dim, self.c_dim, self.w_dim = 4, 0, 4
        self.img_channels, self.img_resolution = images.shape[1], images.shape[2]

    def forward(self, z, c, **_kwargs):
        idx = torch.randint(self.images.shape[0], [z.shape[0]], device=z.device)
        return self.images[idx]


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp('metrics')
    data = shapes.materialize_builtin(f'builtin:shapes-{RES}', str(root / 'datasets'), num_images=NUM_IMAGES)
    det_dir = save_test_detectors(root / 'detectors')
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, resolution=RES,
                             use_labels=False, max_size=None, xflip=False)
    ds = dataset_lib.ImageFolderDataset(path=data)
    images = np.stack([ds[i][0] for i in range(len(ds))])
    ds.close()
    return dnnlib.EasyDict(root=root, data=data, det_dir=det_dir, dataset_kwargs=kwargs, images=images)


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    """A fresh, empty dnnlib cache per test, and no detector folder from the environment."""
    path = tmp_path / 'cache'
    path.mkdir()
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(path))
    monkeypatch.delenv(detectors.DEFAULT_ENV_VAR, raising=False)
    detectors.clear_cache()
    return path


def calc(metric, G, env, **kwargs):
    return metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=env.dataset_kwargs, num_gpus=1, rank=0,
                                   device=torch.device('cpu'), **kwargs)


def direct_real_features(env, **detector_kwargs):
    det = torch.jit.load(os.path.join(env.det_dir, 'inception-2015-12-05.pt'))
    with torch.no_grad():
        return det(torch.from_numpy(env.images), **detector_kwargs).double().numpy()

# Small metrics for the tests, registered the public way.

metric_main.register_builtin('pr64_test', metric_main.make_pr(max_real=None, num_gen=64, nhood_size=3),
                             ('vgg16',))
metric_main.register_builtin('ppl_w_test', metric_main.make_ppl(num_samples=24, space='w', sampling='end',
                                                                crop=False, batch_size=4), ('vgg16',))
metric_main.register_builtin('ppl_z_test', metric_main.make_ppl(num_samples=24, space='z', sampling='full',
                                                                crop=True, batch_size=4), ('vgg16',))



def test_fid_kid_is_pr_ppl_end_to_end(env, cache_dir):
    G = tiny_G()
    torch.manual_seed(0)
    np.random.seed(0)
    fid = calc('fid64_full', G, env, detector_dir=env.det_dir)
    assert set(fid) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus'}
    assert fid.metric == 'fid64_full' and fid.num_gpus == 1
    assert list(fid.results) == ['fid64_full'] and fid.results.fid64_full > 0

    # The cached real statistics are exactly the detector's features of all real images.
    files = os.listdir(cache_dir / 'gan-metrics')
    assert len(files) == 1 and files[0].startswith(f'shapes-{RES}-n{NUM_IMAGES}-s0-inception-2015-12-05-')
    stats = metric_utils.FeatureStats.load(str(cache_dir / 'gan-metrics' / files[0]))
    feats = direct_real_features(env, return_features=True)
    mean, cov = stats.get_mean_cov()
    assert stats.num_items == NUM_IMAGES
    assert np.allclose(mean, feats.mean(0), atol=1e-5) and np.allclose(cov, np.cov(feats.T, bias=True), atol=1e-5)

    # The detector folder can come from the environment variable too.
    os.environ[detectors.DEFAULT_ENV_VAR] = env.det_dir
    try:
        kid = calc('kid64_full', G, env)
        is_ = calc('is20', G, env)
        pr = calc('pr64_test', G, env)
        ppl_w = calc('ppl_w_test', G, env)
        ppl_z = calc('ppl_z_test', G, env)
    finally:
        del os.environ[detectors.DEFAULT_ENV_VAR]
    assert np.isfinite(kid.results.kid64_full)
    assert 1.0 <= is_.results.is20_mean <= 10.0 and is_.results.is20_std >= 0
    assert 0 <= pr.results.pr64_test_precision <= 1 and 0 <= pr.results.pr64_test_recall <= 1
    assert ppl_w.results.ppl_w_test > 0 and np.isfinite(ppl_w.results.ppl_w_test)
    assert ppl_z.results.ppl_z_test > 0 and np.isfinite(ppl_z.results.ppl_z_test)


def test_replayed_real_images_score_perfect_precision_and_low_fid(env, cache_dir):
    replay = ReplayG(env.images)
    torch.manual_seed(1)
    pr = calc('pr64_test', replay, env, detector_dir=env.det_dir)
    assert pr.results.pr64_test_precision == 1.0  # every generated image is a real one
    fid_replay = calc('fid64_full', replay, env, detector_dir=env.det_dir).results.fid64_full
    fid_random = calc('fid64_full', tiny_G(), env, detector_dir=env.det_dir).results.fid64_full
    assert fid_replay < 0.2 * fid_random


def test_fid_result_is_fid_of_the_two_feature_sets(env, cache_dir, monkeypatch):
    seen = {}
    original = metric_utils.compute_feature_stats_for_generator

    def spy(*args, **kwargs):
        seen['gen'] = original(*args, **kwargs)
        return seen['gen']

    monkeypatch.setattr(metric_utils, 'compute_feature_stats_for_generator', spy)
    res = calc('fid64_full', tiny_G(), env, detector_dir=env.det_dir).results.fid64_full
    gen = seen['gen']
    assert gen.num_items == 64 and gen.num_features == 24
    feats = direct_real_features(env, return_features=True)
    expected = fid_from_stats(feats.mean(0), np.cov(feats.T, bias=True), *gen.get_mean_cov())
    assert res == pytest.approx(expected, rel=1e-4)


def test_fidkid_is_fid_and_kid_from_one_generation_pass(env, cache_dir, monkeypatch):
    """fidkid64_full reports the FID and KID that fid64_full and kid64_full give on the same
    generated images, and generates them once."""
    calls = []
    original = metric_utils.compute_feature_stats_for_generator

    def spy(*args, **kwargs):
        calls.append(kwargs.get('max_items'))
        return original(*args, **kwargs)

    monkeypatch.setattr(metric_utils, 'compute_feature_stats_for_generator', spy)
    G = tiny_G()
    torch.manual_seed(3)
    np.random.seed(3)
    both = calc('fidkid64_full', G, env, detector_dir=env.det_dir).results
    assert list(both) == ['fid64_full', 'kid64_full'] and calls == [64]
    torch.manual_seed(3)
    np.random.seed(3)
    fid = calc('fid64_full', G, env, detector_dir=env.det_dir).results.fid64_full
    torch.manual_seed(3)
    np.random.seed(3)
    kid = calc('kid64_full', G, env, detector_dir=env.det_dir).results.kid64_full
    assert both.fid64_full == pytest.approx(fid, rel=1e-9) and both.fid64_full > 0
    assert both.kid64_full == pytest.approx(kid, rel=1e-9)
    assert metric_main.is_valid_metric('fidkid5k_full') and metric_main.required_detectors(['fidkid5k_full'])


def test_real_stats_cache_written_once_and_reused(env, cache_dir, monkeypatch):
    loads = []
    original = dataset_lib.ImageFolderDataset._load_raw_image

    def counting(self, raw_idx):
        loads.append(raw_idx)
        return original(self, raw_idx)

    monkeypatch.setattr(dataset_lib.ImageFolderDataset, '_load_raw_image', counting)
    G = tiny_G()
    calc('fid64_full', G, env, detector_dir=env.det_dir)
    assert len(loads) == NUM_IMAGES
    (cache_file,) = list((cache_dir / 'gan-metrics').iterdir())
    mtime = cache_file.stat().st_mtime_ns
    time.sleep(0.05)

    loads.clear()
    calc('fid64_full', G, env, detector_dir=env.det_dir)
    assert loads == []  # no real image was read: the statistics came from the cache
    assert list((cache_dir / 'gan-metrics').iterdir()) == [cache_file]
    assert cache_file.stat().st_mtime_ns == mtime

    # Other options are other statistics: mirroring doubles the real set.
    loads.clear()
    mirrored = dict(env.dataset_kwargs, xflip=True)
    metric_main.register_builtin('fid64_mirror_test', metric_main.make_fid(max_real=None, num_gen=64, full=False),
                                 ('inception',))
    metric_main.calc_metric(metric='fid64_mirror_test', G=G, dataset_kwargs=mirrored, device='cpu',
                            detector_dir=env.det_dir)
    assert len(loads) == 2 * NUM_IMAGES
    assert len(list((cache_dir / 'gan-metrics').iterdir())) == 2

    # cache=False neither reads nor writes.
    loads.clear()
    calc('fid64_full', G, env, detector_dir=env.det_dir, cache=False)
    assert len(loads) == NUM_IMAGES


def test_a_different_detector_file_gets_its_own_statistics(env, cache_dir, tmp_path):
    G = tiny_G()
    calc('fid64_full', G, env, detector_dir=env.det_dir)
    other = save_test_detectors(tmp_path / 'other', seed=1)
    calc('fid64_full', G, env, detector_dir=other)
    assert len(list((cache_dir / 'gan-metrics').iterdir())) == 2


def test_grayscale_generator_and_conditional_labels(env, cache_dir):
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=RES, img_channels=1,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    assert np.isfinite(calc('fid64_full', G.eval(), env, detector_dir=env.det_dir).results.fid64_full)
    Gc = tiny_G(c_dim=5)
    cond_kwargs = dict(env.dataset_kwargs, use_labels=True)
    res = metric_main.calc_metric(metric='kid64_full', G=Gc, dataset_kwargs=cond_kwargs, device='cpu',
                                  detector_dir=env.det_dir)
    assert np.isfinite(res.results.kid64_full)


def test_report_metric_appends_jsonl(tmp_path, capsys):
    result = dnnlib.EasyDict(results=dnnlib.EasyDict(fid64_full=12.5), metric='fid64_full', total_time=3.0,
                             total_time_str='3s', num_gpus=1)
    snap = tmp_path / 'network-snapshot-000010.pkl'
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(snap))
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(snap))
    import json
    lines = (tmp_path / 'metric-fid64_full.jsonl').read_text().splitlines()
    assert len(lines) == 2
    entry = json.loads(lines[0])
    assert set(entry) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl',
                          'timestamp'}
    assert entry['snapshot_pkl'] == 'network-snapshot-000010.pkl' and entry['results'] == {'fid64_full': 12.5}
    assert 'fid64_full' in capsys.readouterr().out

# The registry and the resolver.


def test_registry_names():
    for name in ('fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'is50k', 'fid50k', 'kid50k', 'pr50k3',
                 'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend', 'fid5k_full', 'kid5k_full'):
        assert metric_main.is_valid_metric(name) and name in metric_main.list_valid_metrics()
    assert metric_main.is_valid_metric('fid10k_full') and metric_main.is_valid_metric('is1k')
    assert not metric_main.is_valid_metric('fid0_full') and not metric_main.is_valid_metric('nope')
    assert metric_main.required_detectors(['fid5k_full', 'is50k', 'pr50k3_full', 'ppl2_wend']) == ['inception',
                                                                                                  'vgg16']
    with pytest.raises(ValueError, match='nope'):
        metric_main.validate_metrics(['fid50k_full', 'nope'], check_files=False)


def test_resolver_search_order(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    explicit, envdir = tmp_path / 'explicit', tmp_path / 'envdir'
    explicit.mkdir()
    envdir.mkdir()
    cached = detectors.cache_path_for_url(detectors.INCEPTION_URL)
    os.makedirs(os.path.dirname(cached))
    for path in (explicit / 'inception-2015-12-05.pt', envdir / 'inception-2015-12-05.pt', cached):
        open(path, 'wb').close()
    monkeypatch.setenv(detectors.DEFAULT_ENV_VAR, str(envdir))
    assert detectors.resolve_asset('inception', detector_dir=str(explicit), download=False) == \
        str(explicit / 'inception-2015-12-05.pt')
    assert detectors.resolve_asset(detectors.INCEPTION_URL, download=False) == str(envdir / 'inception-2015-12-05.pt')
    monkeypatch.delenv(detectors.DEFAULT_ENV_VAR)
    assert detectors.resolve_asset(detectors.INCEPTION_URL, download=False) == cached
    # open_url finds the same cached file without a download.
    assert dnnlib.util.open_url(detectors.INCEPTION_URL, return_filename=True) == cached
    os.remove(cached)

    # pytorch-fid's weights stand in for the Inception file, in a folder or in torch hub's cache.
    (explicit / 'inception-2015-12-05.pt').unlink()
    (explicit / detectors.PYTORCH_FID_INCEPTION_NAME).write_bytes(b'')
    assert detectors.resolve_asset('inception', detector_dir=str(explicit), download=False) == \
        str(explicit / detectors.PYTORCH_FID_INCEPTION_NAME)
    hub = tmp_path / 'torch' / 'hub' / 'checkpoints'
    hub.mkdir(parents=True)
    (hub / detectors.PYTORCH_FID_INCEPTION_NAME).write_bytes(b'')
    assert detectors.resolve_asset('inception', download=False) == str(hub / detectors.PYTORCH_FID_INCEPTION_NAME)
    # A plain local path is used as it is; an unknown non-URL name is a clear error.
    assert detectors.resolve_asset(str(envdir / 'inception-2015-12-05.pt')) == str(envdir / 'inception-2015-12-05.pt')
    with pytest.raises(detectors.AssetUnavailableError, match='no-such-file.pt'):
        detectors.resolve_asset(str(tmp_path / 'no-such-file.pt'))


def test_missing_asset_error_is_one_line_and_names_the_ways(cache_dir, monkeypatch, tmp_path):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    with pytest.raises(detectors.AssetUnavailableError) as info:
        detectors.resolve_asset('vgg16', download=False)
    msg = str(info.value)
    assert '\n' not in msg
    for phrase in ('vgg16.pt', detectors.VGG16_URL, '--detector-dir', 'KDGAN_DETECTOR_DIR',
                   detectors.cache_path_for_url(detectors.VGG16_URL)):
        assert phrase in msg


def test_check_detectors_offline_fails_fast(cache_dir, monkeypatch, tmp_path):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    # Whatever this machine's network: a dead proxy makes every request fail at once.
    for var in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'):
        monkeypatch.setenv(var, 'http://127.0.0.1:9')
    for var in ('NO_PROXY', 'no_proxy'):
        monkeypatch.delenv(var, raising=False)
    start = time.time()
    with pytest.raises(detectors.AssetUnavailableError) as info:
        metric_main.check_detectors(['fid50k_full'])
    assert time.time() - start < 5
    assert 'inception-2015-12-05.pt' in str(info.value) and 'downloading' in str(info.value)
    assert not os.listdir(cache_dir) or not os.listdir(cache_dir / 'downloads')


def test_pytorch_fid_weights_stand_in_for_the_inception_file(tmp_path, cache_dir, monkeypatch):
    """With only pytorch-fid's .pth at hand, FID/KID/IS load it through our Inception port."""
    from metrics import inception_port
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    net = inception_port.make_random_fid_inception(seed=0, calibrate=False)
    pth = tmp_path / detectors.PYTORCH_FID_INCEPTION_NAME
    torch.save(net.state_dict(), pth)
    assert metric_main.check_detectors(['fid5k_full'], detector_dir=str(tmp_path)) == {'inception': str(pth)}
    det = detectors.load_detector(detectors.INCEPTION_URL, 'cpu', detector_dir=str(tmp_path))
    assert isinstance(det, inception_port.FIDInceptionPort)
    assert detectors.load_detector(detectors.INCEPTION_URL, 'cpu', detector_dir=str(tmp_path)) is det  # cached
    images = torch.randint(0, 256, [2, 3, RES, RES], dtype=torch.uint8)
    with torch.no_grad():
        feats = det(images, return_features=True)
        probs = det(images, no_output_bias=True)
        expected = net.eval()(images, return_features=True)
    assert feats.shape == (2, 2048) and torch.allclose(feats, expected, atol=1e-5)
    assert probs.shape == (2, 1008) and torch.allclose(probs.sum(1), torch.ones(2), atol=1e-4)
    detectors.clear_cache()
