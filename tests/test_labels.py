"""Labels must reach a conditional G and change what it draws: in the network itself,
in generate.py's --class, and in the labels the metrics hand to G (drawn from the data
set's own class frequencies). Each test fails if labels are dropped or zeroed."""
import json
import os
import pickle
import types

import numpy as np
import PIL.Image
import torch
from click.testing import CliRunner

import dnnlib
import generate
from metrics import metric_utils
from training import networks

NUM_CLASSES = 4


def cond_G(res=16, seed=5):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=8, c_dim=NUM_CLASSES, w_dim=8, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    return G.eval().requires_grad_(False)


def one_hot(classes):
    return torch.nn.functional.one_hot(torch.as_tensor(classes), NUM_CLASSES).to(torch.float32)


def assert_pairwise_different(images, min_gap):
    """Every pair of images differs by at least `min_gap` in mean absolute value."""
    images = [x.float() if torch.is_tensor(x) else torch.from_numpy(x.astype(np.float32)) for x in images]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            gap = (images[i] - images[j]).abs().mean().item()
            assert gap > min_gap, 'classes {} and {} give (nearly) the same image: {}'.format(i, j, gap)


def test_conditional_G_draws_differently_per_label():
    G = cond_G()
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(0)).repeat(NUM_CLASSES, 1)
    c = one_hot(range(NUM_CLASSES))
    ws = G.mapping(z, c)
    imgs = G(z, c, noise_mode='const')
    assert imgs.shape == (NUM_CLASSES, 3, 16, 16)
    assert_pairwise_different(ws, 0.05)
    assert_pairwise_different(imgs, 1e-3)
    # Same z and label alone (another batch size, so within float noise): the same image,
    # so the label is what made the difference.
    torch.testing.assert_close(G(z[:1], c[2:3], noise_mode='const'), imgs[2:3], rtol=0, atol=1e-5)


def test_generate_class_option_picks_that_class(tmp_path):
    G = cond_G()
    pkl = tmp_path / 'cond.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    seed = 3
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim))
    pngs = []
    for k in range(NUM_CLASSES):
        out = tmp_path / 'class{}'.format(k)
        result = CliRunner().invoke(generate.generate_images, [
            '--network', str(pkl), '--seeds', str(seed), '--class', str(k), '--trunc', '1', '--noise-mode', 'const',
            '--outdir', str(out)])
        assert result.exit_code == 0, result.output
        with PIL.Image.open(out / 'seed{:04d}.png'.format(seed)) as img:
            pngs.append(np.asarray(img))
        with torch.no_grad():
            expected = generate.image_to_uint8(G(z, one_hot([k]), noise_mode='const'))[0]
        assert np.array_equal(pngs[-1], expected), 'the PNG for --class={} is not G(z, one_hot({}))'.format(k, k)
    assert_pairwise_different(pngs, 0.5)


class LabelEcho(torch.nn.Module):
    """A stand-in G whose image carries its label: pixel (0, 0, x) of channel 0 is
    white where c[x] is 1 and black where it is 0, so the features give c back."""

    def __init__(self, res=8):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = 4, NUM_CLASSES, 4
        self.img_channels, self.img_resolution = 3, res

    def forward(self, z, c, **_kwargs):
        img = torch.zeros([z.shape[0], 3, self.img_resolution, self.img_resolution], device=z.device) - 1
        img[:, 0, 0, :NUM_CLASSES] = c * 2 - 1
        return img


def _label_folder(folder, counts, res=8):
    """An image folder whose dataset.json gives class k to counts[k] of its images."""
    os.makedirs(folder)
    entries = []
    for k, n in enumerate(counts):
        for i in range(n):
            name = 'img{}_{}.png'.format(k, i)
            PIL.Image.fromarray(np.full([res, res, 3], 40 * k, np.uint8)).save(os.path.join(folder, name))
            entries.append([name, k])
    with open(os.path.join(folder, 'dataset.json'), 'w') as f:
        json.dump(dict(labels=entries), f)
    return str(folder)


def test_metrics_feed_G_the_datasets_label_mix(tmp_path, monkeypatch):
    counts = np.array([12, 5, 2, 1])   # skewed: neither uniform nor all class 0
    data = _label_folder(tmp_path / 'data', counts)
    # The detector's "features" are the label pixels the stand-in G drew.
    monkeypatch.setattr(metric_utils, 'get_feature_detector',
                        lambda *args, **kwargs: lambda images, **_kw: images[:, 0, 0, :NUM_CLASSES].float() / 255)
    opts = metric_utils.MetricOptions(G=LabelEcho(), dataset_kwargs=dnnlib.EasyDict(
        class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True, max_size=None, xflip=False),
        device='cpu', cache=False)
    np.random.seed(0)
    torch.manual_seed(0)
    stats = metric_utils.compute_feature_stats_for_generator(opts, 'echo', {}, capture_all=True, max_items=2048)
    labels = stats.get_all()
    assert labels.shape == (2048, NUM_CLASSES)
    np.testing.assert_array_equal(labels.sum(axis=1), 1)   # one-hot: no zero labels
    freq = labels.mean(axis=0)
    np.testing.assert_allclose(freq, counts / counts.sum(), atol=0.04)


def _draw_training_labels(ds, phases=8, batch=64):
    """The labels the training loop hands G over one minibatch: every phase's rows, this
    rank being the only one (training_loop._draw_minibatch with a minimal run)."""
    from training import training_loop
    cfg = types.SimpleNamespace(batch_size=batch, batch_gpu=batch // 2, rank=0, num_gpus=1)
    reals = (torch.zeros([batch, 3, 8, 8], dtype=torch.uint8), torch.zeros([batch, NUM_CLASSES]))
    run = types.SimpleNamespace(cfg=cfg, batches=iter([reals]), device=torch.device('cpu'),
                                phases=[None] * phases, training_set=ds)
    state = types.SimpleNamespace(G=types.SimpleNamespace(z_dim=4), latent_gen=torch.Generator().manual_seed(0))
    _, latents = training_loop._draw_minibatch(run, state)
    return torch.cat([torch.cat(labels) for _, labels in latents]).numpy()


def test_training_loop_feeds_G_the_datasets_label_mix(tmp_path):
    from training import dataset
    counts = np.array([12, 5, 2, 1])
    ds = dataset.ImageFolderDataset(path=_label_folder(tmp_path / 'data', counts), use_labels=True)
    labels = _draw_training_labels(ds)
    assert labels.shape == (8 * 64, NUM_CLASSES)
    np.testing.assert_array_equal(labels.sum(axis=1), 1)   # one-hot: no zero labels
    # 512 draws: the standard error of a frequency is at most 0.022.
    np.testing.assert_allclose(labels.mean(axis=0), counts / counts.sum(), atol=0.07)
