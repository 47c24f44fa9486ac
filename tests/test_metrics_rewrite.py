"""The pieces of metrics/metric_utils.py and metrics/perceptual_path_length.py
on their own: the cache-file layout of FeatureStats, label drawing for G,
progress mapping, and the PPL batch steps (random-number use, VGG input)."""
import io
import pickle

import numpy as np
import pytest
import torch

from helpers import one_thread  # noqa: F401  (module-scoped autouse fixture)
from metrics import metric_utils, perceptual_path_length as ppl
from training import networks

STATS_FIELDS = ['capture_all', 'capture_mean_cov', 'max_items', 'num_items', 'num_features', 'all_features',
                'raw_mean', 'raw_cov']


def test_cache_file_is_a_plain_dict_of_the_stats_fields(tmp_path):
    stats = metric_utils.FeatureStats(capture_mean_cov=True, max_items=5)
    stats.append(np.arange(12, dtype=np.float32).reshape(4, 3))
    stats.save(str(tmp_path / 's.pkl'))
    with open(tmp_path / 's.pkl', 'rb') as f:
        raw = pickle.load(f)
    assert type(raw) is dict and list(raw) == STATS_FIELDS
    assert raw['num_items'] == 4 and raw['num_features'] == 3 and raw['all_features'] == []

    # A cache written by other code with the same fields loads as well.
    other = dict(raw, capture_all=True, all_features=[np.ones([2, 3], np.float32)], num_items=2)
    with open(tmp_path / 'other.pkl', 'wb') as f:
        pickle.dump(other, f)
    loaded = metric_utils.FeatureStats.load(str(tmp_path / 'other.pkl'))
    assert loaded.get_all().shape == (2, 3) and loaded.num_items == 2


def test_moments_are_summed_batch_by_batch_in_float64():
    rng = np.random.RandomState(0)
    batches = [rng.normal(size=[n, 4]).astype(np.float32) for n in (3, 5, 2)]
    stats = metric_utils.FeatureStats(capture_mean_cov=True)
    for b in batches:
        stats.append(b)
    expected_sum = np.zeros(4)
    expected_gram = np.zeros([4, 4])
    for b in batches:
        b64 = b.astype(np.float64)
        expected_sum += b64.sum(axis=0)
        expected_gram += b64.T @ b64
    assert np.array_equal(stats.raw_mean, expected_sum) and np.array_equal(stats.raw_cov, expected_gram)
    with pytest.raises(ValueError):
        stats.append(np.zeros([1, 5], np.float32))


def test_full_stats_still_learn_the_width():
    stats = metric_utils.FeatureStats(capture_all=True, max_items=0)
    stats.append(np.zeros([3, 7], np.float32))
    assert stats.num_items == 0 and stats.num_features == 7 and stats.get_all().shape == (0, 7)


class _LabelledSet:
    def __init__(self, labels):
        self.labels = np.asarray(labels, dtype=np.float32)
        self.label_dim = self.labels.shape[1]

    def __len__(self):
        return len(self.labels)

    def get_label(self, idx):
        return self.labels[idx]


def test_label_sampler_uses_dataset_labels_or_uniform_classes(capsys):
    assert metric_utils.make_label_sampler(_LabelledSet(np.eye(3)), 0)(4, 'cpu').shape == (4, 0)

    labels = np.eye(3)[[0, 2, 1, 2, 2]]
    draw = metric_utils.make_label_sampler(_LabelledSet(labels), 3)
    np.random.seed(1)
    picks = np.random.randint(5, size=6)
    np.random.seed(1)
    assert torch.equal(draw(6, 'cpu'), torch.from_numpy(labels[picks].astype(np.float32)))
    assert 'warning' not in capsys.readouterr().out

    draw = metric_utils.make_label_sampler(_LabelledSet(labels), 4)  # width mismatch
    assert 'warning' in capsys.readouterr().out
    torch.manual_seed(2)
    classes = torch.randint(4, [6])
    torch.manual_seed(2)
    c = draw(6, 'cpu')
    assert c.dtype == torch.float32 and torch.equal(c.argmax(1), classes) and torch.equal(c.sum(1), torch.ones(6))


def test_progress_fn_sees_each_stage_in_its_stretch():
    seen = []
    root = metric_utils.ProgressMonitor(progress_fn=lambda cur, total: seen.append((cur, total)), stream=io.StringIO())
    stage = root.sub(tag='x', num_items=10, rel_lo=0.5, rel_hi=1.0)
    stage.update(10)
    stage.update(10)  # the end is reported once
    assert seen == [(0, 1000), (500.0, 1000), (1000.0, 1000)]


def test_gather_is_identity_for_one_process():
    x = torch.arange(6.0).reshape(3, 2)
    assert metric_utils.gather_across_ranks(x, 1) is x
    assert metric_utils.gather_across_ranks(x, 1, interleave=True) is x


def test_vgg_input_crop_and_box_downsampling():
    img = torch.rand([2, 1, 512, 512]) * 2 - 1
    out = ppl._for_vgg(img, crop=False, resolution=512)
    assert out.shape == (2, 3, 256, 256)
    expected = (torch.nn.functional.avg_pool2d(img, 2) + 1) * 127.5
    assert torch.allclose(out[:, :1], expected, atol=1e-4)
    cropped = ppl._for_vgg(img, crop=True, resolution=512)
    assert cropped.shape == (2, 3, 128, 128)
    assert torch.allclose(cropped[:, :1], expected[:, :, 96:224, 64:192], atol=1e-4)


class _FlatLPIPS(torch.nn.Module):
    """Stands in for VGG16: the image itself, flattened, as the 'LPIPS features'."""

    def forward(self, img, resize_images=True, return_lpips=False):
        assert return_lpips and not resize_images
        return img.flatten(1) / 255


@pytest.mark.parametrize('space', ['z', 'w'])
def test_ppl_batch_end_and_full_consume_the_same_random_numbers(space):
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=128, channel_max=16)).eval()
    c = torch.zeros([3, 0])
    after = {}
    for sampling in ppl.SAMPLINGS:
        torch.manual_seed(5)
        with torch.no_grad():
            dist = ppl.path_batch(G, _FlatLPIPS(), c, {}, epsilon=1e-2, space=space, sampling=sampling, crop=False)
        assert dist.shape == (3,) and torch.isfinite(dist).all() and (dist >= 0).all()
        after[sampling] = torch.randn(4)
    assert torch.equal(after['full'], after['end'])


def test_compute_ppl_rejects_unknown_space():
    with pytest.raises(ValueError, match='space'):
        ppl.compute_ppl(metric_utils.MetricOptions(device='cpu'), num_samples=2, epsilon=1e-4, space='x',
                        sampling='end', crop=False)
