"""metrics/inception_port.py: our port of pytorch-fid's FID Inception-v3.

The real weights cannot be downloaded here, so a random (but sensibly scaled)
state dict is written in pytorch-fid's file format and loaded by both
pytorch-fid's own module and our port; their 2048-d features must agree.
"""
import io

import pytest
import torch
import torch.nn.functional as F

from metrics import inception_port
from metrics.inception_port import (PYTORCH_FID_BASENAME, PYTORCH_FID_WEIGHTS_URL, load_pytorch_fid_inception,
                                    make_random_fid_inception)


@pytest.fixture(scope='module')
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('fid') / PYTORCH_FID_BASENAME
    torch.save(make_random_fid_inception(seed=0).state_dict(), path)
    return path


@pytest.fixture(scope='module')
def images():
    """Two image-like uint8 inputs, smaller than 299 so the resize path runs."""
    gen = torch.Generator().manual_seed(1)
    low = torch.rand([2, 3, 6, 6], generator=gen) * 255
    return F.interpolate(low, size=(48, 48), mode='bicubic', align_corners=False).clamp(0, 255).round().to(torch.uint8)


@pytest.fixture(scope='module')
def port(weights_file):
    return load_pytorch_fid_inception(str(weights_file), torch.device('cpu'))


def test_constants():
    assert PYTORCH_FID_BASENAME == 'pt_inception-2015-12-05-6726825d.pth'
    assert PYTORCH_FID_WEIGHTS_URL.startswith('https://github.com/mseitzer/pytorch-fid/releases/download/')
    assert PYTORCH_FID_WEIGHTS_URL.endswith('/' + PYTORCH_FID_BASENAME)


@pytest.mark.slow
def test_features_match_pytorch_fid(weights_file, port, images, monkeypatch):
    pfi = pytest.importorskip('pytorch_fid.inception', reason='pytorch-fid (test-only dependency) is not installed')
    # pytorch-fid fetches its weights from GitHub; hand it our file instead, through its own strict loading.
    monkeypatch.setattr(pfi, 'load_state_dict_from_url',
                        lambda *args, **kwargs: torch.load(weights_file, map_location='cpu', weights_only=True))
    reference = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()  # default resize + normalise
    assert reference.resize_input and reference.normalize_input

    with torch.no_grad():
        expected = reference(images.to(torch.float32) / 255)[0]
        ours = port(images, return_features=True)
        ours_float = port(images.to(torch.float32), return_features=True)
    assert expected.shape == (2, 2048, 1, 1)
    expected = expected[:, :, 0, 0]
    assert ours.shape == (2, 2048) and ours.dtype == torch.float32

    # The comparison means something: features are finite, mostly non-zero and differ between images.
    assert torch.isfinite(expected).all()
    assert (expected > 0).float().mean() > 0.5
    assert (expected[0] - expected[1]).abs().mean() > 1e-2 * expected.abs().mean()
    assert 1e-2 < expected.abs().mean() < 1e2

    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_float, ours, rtol=0, atol=1e-6)


def test_probabilities_and_output_bias(port, images):
    one = images[:1]
    with torch.no_grad():
        feats = port(one, return_features=True)
        probs = port(one)
        probs_nobias = port(one, no_output_bias=True)
        gray = port(one[:, :1], return_features=True)
        gray_rgb = port(one[:, :1].repeat(1, 3, 1, 1), return_features=True)
    assert probs.shape == (1, 1008) and probs_nobias.shape == (1, 1008)
    torch.testing.assert_close(probs.sum(1), torch.ones(1))
    torch.testing.assert_close(probs, F.softmax(feats @ port.fc.weight.T + port.fc.bias, dim=1))
    # NVIDIA's IS asks for the softmax of the pool features times the fc weights, without the bias.
    torch.testing.assert_close(probs_nobias, F.softmax(feats @ port.fc.weight.T, dim=1))
    assert (probs_nobias - probs).abs().max() > 1e-6
    # Grayscale input is repeated to RGB.
    torch.testing.assert_close(gray, gray_rgb)


def test_bad_files_fail_clearly(tmp_path):
    state = make_random_fid_inception(seed=0, calibrate=False).state_dict()
    del state['Mixed_7c.branch_pool.conv.weight']
    torch.save(state, tmp_path / 'partial.pth')
    with pytest.raises(ValueError, match=r'Mixed_7c\.branch_pool\.conv\.weight') as info:
        load_pytorch_fid_inception(str(tmp_path / 'partial.pth'))
    assert PYTORCH_FID_BASENAME in str(info.value)

    (tmp_path / 'junk.pth').write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match='cannot read'):
        load_pytorch_fid_inception(str(tmp_path / 'junk.pth'))


def test_loads_from_file_object(weights_file, port):
    with open(weights_file, 'rb') as f:
        again = load_pytorch_fid_inception(io.BytesIO(f.read()))
    assert not again.training
    assert all(not p.requires_grad for p in again.parameters())
    for (name, a), (_, b) in zip(port.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert isinstance(again, inception_port.FIDInceptionPort)
