"""The comparison report's two readings beside FID (issue 14): Welch's test of each KD row against its
baseline, and the share of samples the evaluator classifies with confidence >= 0.9.

Generators and the detector here are made so that the answer is known in advance: images are white or
black by a rule on z or on the class, and the detector's top probability is 0.95 for white and 0.85 for
black, so the share at threshold 0.9 is the share of white images."""
import json
import math
import os
import pickle
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, 'stylegan2_ada')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench.comparison import confidence, results as results_mod, stats  # noqa: E402
from bench.comparison.grid import Config, run_key  # noqa: E402
from torch_utils import persistence  # noqa: E402

pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:FutureWarning')

WHITE_P, BLACK_P = 0.95, 0.85      # top softmax probability the detector gives a white / black image

# Welch's test.


def shifted(values, by):
    return [v + by for v in values]


@pytest.mark.parametrize('n, t_crit, df', [(3, 2.776, 4), (6, 2.228, 10), (11, 2.086, 20)])
def test_welch_at_table_critical_values_gives_p_005(n, t_crit, df):
    """Equal sizes and spreads make Welch's df 2(n-1); at the table's two-sided 5 % critical t the p value
    is 0.05 and the 95 % interval of the difference just touches 0."""
    base = [float(i) for i in range(n)]
    se = math.sqrt(2 * stats.mean_std(base)[1] ** 2 / n)
    result = stats.welch(shifted(base, t_crit * se), base)
    assert result['df'] == pytest.approx(df, rel=1e-12)
    assert result['t'] == pytest.approx(t_crit, rel=1e-12)
    assert result['p'] == pytest.approx(0.05, abs=2e-4)       # table t values have 4 digits
    assert result['ci'][0] == pytest.approx(0.0, abs=2e-3 * se)
    assert result['ci'][1] == pytest.approx(2 * result['diff'], rel=1e-3)


def test_welch_unequal_variances_by_hand_and_against_scipy():
    from scipy import stats as sp
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    result = stats.welch(a, b)
    # By hand: variances 5/3 and 4; squared standard errors 5/12 and 4/3 (sum 7/4).
    assert result['diff'] == pytest.approx(-1.5)
    assert result['t'] == pytest.approx(-1.5 / math.sqrt(1.75))
    assert result['df'] == pytest.approx(1.75 ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2))
    reference = sp.ttest_ind(a, b, equal_var=False)
    assert result['t'] == pytest.approx(reference.statistic, rel=1e-10)
    assert result['p'] == pytest.approx(reference.pvalue, rel=1e-8)
    assert result['verdict'] == stats.WITHIN_NOISE
    far = stats.welch([10.0, 10.5, 11.0], [20.0, 21.0, 22.5])
    assert far['p'] < 0.01 and far['verdict'] == stats.DIFFERS and far['ci'][1] < 0


def test_welch_needs_two_seeds_a_side():
    for a, b in (([1.0], [2.0, 3.0]), ([1.0, 2.0], [3.0]), ([], [1.0, 2.0])):
        result = stats.welch(a, b)
        assert result['verdict'] == stats.TOO_FEW == 'needs >= 2 seeds'
        assert result['t'] is None and result['p'] is None and result['ci'] is None
    assert stats.welch([1.0], [3.0, 5.0])['diff'] == -3.0
    assert stats.welch([2.0, 2.0], [3.0, 3.0])['verdict'] == stats.NO_SPREAD
    assert stats.welch([2.0, float('nan')], [3.0, 4.0])['verdict'] == stats.NOT_FINITE


def test_kd_tests_pair_only_rows_present_and_say_which_side_is_better():
    methods = {name: dict(seeds=[0, 1, 2], final=dict(values=final), best=dict(values=best))
               for name, final, best in (('kd', [40.0, 41.0, 42.0], [30.0, 36.0, 38.0]),
                                         ('base', [50.0, 52.0, 54.0], [31.0, 35.0, 40.0]))}
    tests = stats.kd_tests(methods, {'kd': 'base', 'other': 'base'}, higher_is_better=False)
    assert [(t['method'], t['baseline']) for t in tests] == [('kd', 'base')]
    assert tests[0]['final']['verdict'] == stats.DIFFERS and tests[0]['final']['kd_better'] is True
    assert tests[0]['best']['verdict'] == stats.WITHIN_NOISE
    assert stats.kd_tests(methods, {'kd': 'base'}, higher_is_better=True)[0]['final']['kd_better'] is False

# The confidence share.


class BrightnessClassifier(torch.nn.Module):
    """Logits whose top softmax probability is WHITE_P for a bright image, BLACK_P for a dark one."""

    def __init__(self, mode: str = 'logits'):
        super().__init__()
        self.mode = mode
        self.white = math.log(WHITE_P / (1 - WHITE_P) * 9)
        self.black = math.log(BLACK_P / (1 - BLACK_P) * 9)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = img.to(torch.float32).mean(dim=[1, 2, 3]) / 255
        features = torch.stack([x, 2 * x + 1], dim=1)
        if return_features or self.mode == 'features':
            return features
        top = torch.where(x > 0.5, torch.full_like(x, self.white), torch.full_like(x, self.black))
        logits = torch.cat([top[:, None], torch.zeros([x.shape[0], 9])], dim=1)
        return torch.softmax(logits, dim=1) if self.mode == 'probabilities' else logits


def save_detector(path, mode='logits'):
    torch.jit.script(BrightnessClassifier(mode).eval()).save(str(path))
    return str(path)


class ClassG(torch.nn.Module):
    """Conditional: white images for classes 0-2, black for class 3."""
    z_dim, c_dim, img_resolution = 3, 4, 8

    def forward(self, z, c, noise_mode='random'):
        assert noise_mode == 'const' and c.shape == (z.shape[0], 4)
        white = (c.argmax(dim=1) < 3).to(torch.float32) * 2 - 1
        return white.view(-1, 1, 1, 1).expand(-1, 1, 8, 8)


@persistence.persistent_class
class CutG(torch.nn.Module):
    """Unconditional: white where z[0] > cut, black elsewhere (the expected share follows from the latents)."""

    def __init__(self, cut, z_dim=4):
        super().__init__()
        self.cut, self.z_dim, self.c_dim, self.img_resolution, self.img_channels = cut, z_dim, 0, 8, 1

    def forward(self, z, c, noise_mode='random'):
        del c, noise_mode
        white = (z[:, 0] > self.cut).to(torch.float32) * 2 - 1
        return white.view(-1, 1, 1, 1).expand(-1, 1, 8, 8)


def expected_share(cut, count):
    return float((confidence.latents(count, 4)[:, 0] > cut).to(torch.float64).mean())


def test_share_counts_images_whose_top_probability_reaches_the_threshold(tmp_path):
    det = torch.jit.load(save_detector(tmp_path / 'det.pt'))
    G, cpu = ClassG(), torch.device('cpu')
    # 100 images in batches of 30: the classes keep cycling across batch borders, 75 of them white.
    assert confidence.confident_share(G, det, cpu, count=100, batch=30) == dict(share=0.75, confident=75, count=100)
    assert confidence.confident_share(G, det, cpu, count=100, threshold=0.8)['share'] == 1.0
    assert confidence.confident_share(G, det, cpu, count=100, threshold=0.96)['share'] == 0.0


def test_share_uses_the_same_latents_for_every_generator(tmp_path):
    det = torch.jit.load(save_detector(tmp_path / 'det.pt'))
    cpu = torch.device('cpu')
    for cut in (-0.5, 0.0, 0.7):
        got = confidence.confident_share(CutG(cut), det, cpu, count=300, batch=64)
        assert got['share'] == expected_share(cut, 300)
    assert 0.25 < expected_share(0.0, 300) < 0.75                          # the rule does split the images
    assert expected_share(0.0, 300) != float((confidence.latents(300, 4, seed=1)[:, 0] > 0).double().mean())


def test_detectors_without_logits_are_refused_with_the_reason(tmp_path):
    outdir, cpu = str(tmp_path / 'out'), torch.device('cpu')
    from metrics import detectors
    for mode, words in (('logits', None), ('probabilities', 'probabilities'), ('features', 'features, not logits')):
        folder = detectors.stage_detector(save_detector(tmp_path / (mode + '.pt'), mode),
                                          os.path.join(outdir, 'detector'))
        link = os.path.join(folder, 'inception-2015-12-05.pt')
        det, md5, reason = confidence.open_classifier(dict(inception=dict(path=link, md5='m')), outdir, cpu)
        assert md5 == 'm'
        assert (det is None) == (words is not None)
        assert (reason is None) if words is None else (words in reason)
    # Inception (by its file name, outside <outdir>/detector) is not even loaded: this file is not a network.
    fake = tmp_path / 'cache' / 'inception-2015-12-05.pt'
    fake.parent.mkdir()
    fake.write_bytes(b'not a network')
    det, _, reason = confidence.open_classifier(dict(inception=dict(path=str(fake), md5='i')), outdir, cpu)
    assert det is None and 'Inception' in reason
    assert 'no FID/KID feature detector' in confidence.open_classifier({}, outdir, cpu)[2]

# The report: results.json and results.md from a made-up comparison with real snapshot files.


METRIC = 'fidkid5k_full'
KD, BASE = 'fastgan+kdgan', 'fastgan+diffaug'
FID = {   # method -> (tick-1 values, tick-2 values) over seeds 0, 1, 2: tick 1 is every run's best
    KD: ([29.0, 36.0, 37.0], [40.0, 41.0, 42.0]),
    BASE: ([30.0, 35.0, 40.0], [50.0, 52.0, 54.0]),
}
COUNT = 200


def cut_of(tick, seed):
    return (-0.6 if tick == 1 else 0.4) + 0.1 * seed


class FakeState:
    def __init__(self, runs):
        self.runs = runs


def make_comparison(tmp_path, detector_mode, seeds=(0, 1, 2)):
    """A finished comparison on disk: two snapshots per run (CutG pickles), FID/KID values, and a
    detector staged as compare.py --detector stages it."""
    from metrics import detectors
    outdir = str(tmp_path / 'out')
    methods = {KD: ['--cfg=fastgan', '--aug=diffaug', '--loss=kdgan.KDDLGAN'], BASE: ['--cfg=fastgan', '--aug=diffaug']}
    cfg = Config(outdir=outdir, data='fake', eval_data='fake', methods=methods, seeds=list(seeds), kimg=1.0,
                 minutes=None, tick=0.5, snap=1, metric=METRIC, better='auto', detector_dir=None, extra=[],
                 device='cpu', budget=None, skip_start=True)
    runs = {}
    for method in methods:
        for seed in seeds:
            folder = cfg.run_dir(method, seed, 'snapshots')
            os.makedirs(folder)
            snaps, evals = [], {}
            for tick in (1, 2):
                name = 'snapshot-seg00000-tick{:06d}.pkl'.format(tick)
                with open(os.path.join(folder, name), 'wb') as f:
                    pickle.dump(dict(G_ema=CutG(cut_of(tick, seed)), training_set_kwargs=None), f)
                value = FID[method][tick - 1][seed]
                snaps.append(dict(name=name, tick=tick, kimg=0.5 * tick, seconds=10.0 * tick, segment='00000-x'))
                evals[name] = dict(value=value, results=dict(fid5k_full=value, kid5k_full=value / 1000), seconds=1.0)
            runs[run_key(method, seed)] = dict(method=method, seed=seed, status='finished', snapshots=snaps,
                                               evals={'key': evals})
    folder = detectors.stage_detector(save_detector(tmp_path / 'det.pt', detector_mode),
                                      os.path.join(outdir, 'detector'))
    link = os.path.join(folder, 'inception-2015-12-05.pt')
    files = dict(inception=dict(path=link, md5=detectors.detector_fingerprint(link)))
    return cfg, FakeState(runs), files


def table_row(text, first_cell, cells):
    for line in text.splitlines():
        row = [c.strip() for c in line.strip().strip('|').split('|')]
        if row[0] == first_cell and len(row) == cells:
            return row
    raise AssertionError('no {}-cell row for {} in:\n{}'.format(cells, first_cell, text))


def kd_row(text, what):
    start = '| {} | {} | {} fid5k_full |'.format(KD, BASE, what)
    return next(line for line in text.splitlines() if line.startswith(start))


def test_report_with_a_classifier_has_the_shares_and_the_kd_test(tmp_path, monkeypatch):
    cfg, state, files = make_comparison(tmp_path, 'logits')
    out = results_mod.write_outputs(cfg, state, 'key', files, 'cmd', confidence_samples=COUNT)
    assert out['confidence']['applies'] and out['confidence']['samples'] == COUNT
    for run in out['runs']:    # the best snapshot is tick 1's, the final tick 2's: each has its own share
        assert run['best']['snapshot'].endswith('tick000001.pkl')
        for what, tick in (('best', 1), ('final', 2)):
            assert run[what]['confidence'] == expected_share(cut_of(tick, run['seed']), COUNT)
    text = (tmp_path / 'out' / 'results.md').read_text(encoding='utf-8')
    assert 'Best conf ≥ 0.9 | Final conf ≥ 0.9' in text
    for method in (KD, BASE):
        summary = out['methods'][method]['confidence']
        for what, tick in (('best', 1), ('final', 2)):
            shares = [expected_share(cut_of(tick, s), COUNT) for s in (0, 1, 2)]
            assert summary[what]['values'] == shares
            assert summary[what]['mean'] == pytest.approx(sum(shares) / 3)
        row = table_row(text, method, 10)    # method, seeds, FID x2, KID x2, conf x2, kimg, time
        assert row[6] == results_mod.fmt_share(summary['best']) and row[7] == results_mod.fmt_share(summary['final'])
        assert row[6].endswith('%') and '±' in row[6]
    # KD against its baseline: the same numbers as Welch's test on the per-seed FIDs.
    (test,) = out['kd_tests']
    assert (test['method'], test['baseline']) == (KD, BASE)
    for what, index in (('final', 1), ('best', 0)):
        assert test[what] == dict(stats.welch(FID[KD][index], FID[BASE][index]), kd_better=True)
    assert '## KD against its baseline' in text
    final_row = kd_row(text, 'final')
    assert 'differs at p<0.05 (KD better)' in final_row and '3 vs 3' in final_row
    assert '{:.3g}'.format(test['final']['p']) in final_row
    best_row = kd_row(text, 'best')
    assert 'within seed noise' in best_row
    with open(tmp_path / 'out' / 'results.json', encoding='utf-8') as f:
        assert json.load(f)['kd_tests'][0]['final']['p'] == test['final']['p']
    # Written again (after the next run, say): every share comes from the runs' caches.
    cache = os.path.join(cfg.run_dir(KD, 0, 'snapshots'), confidence.CACHE_NAME)
    with open(cache, encoding='utf-8') as f:
        assert len(json.load(f)['entries']) == 2
    monkeypatch.setattr(confidence, 'confident_share', lambda *a, **k: pytest.fail('recomputed a cached share'))
    again = results_mod.write_outputs(cfg, state, 'key', files, 'cmd', confidence_samples=COUNT)
    assert again['methods'][KD]['confidence'] == out['methods'][KD]['confidence']


@pytest.mark.parametrize('mode', ['probabilities', 'features'])
def test_report_without_logits_omits_the_share_and_says_why(tmp_path, mode):
    cfg, state, files = make_comparison(tmp_path, mode, seeds=(0,))
    out = results_mod.write_outputs(cfg, state, 'key', files, 'cmd', confidence_samples=COUNT)
    assert out['confidence']['applies'] is False and 'no class logits' in out['confidence']['reason']
    assert 'confidence' not in out['methods'][KD] and 'confidence' not in out['runs'][0]['final']
    text = (tmp_path / 'out' / 'results.md').read_text(encoding='utf-8')
    assert 'conf ≥' not in text
    assert 'not computed, the detector gives no class logits' in text
    table_row(text, KD, 8)                    # method, seeds, FID x2, KID x2, kimg, time
    assert not os.path.exists(os.path.join(cfg.run_dir(KD, 0, 'snapshots'), confidence.CACHE_NAME))
    # One seed a side: the KD section says what it needs.
    final_row = kd_row(text, 'final')
    assert 'needs >= 2 seeds' in final_row and '1 vs 1' in final_row
