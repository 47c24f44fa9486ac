"""Is a KD row's difference to its baseline more than seed noise? Welch's unequal-variance t-test on the
per-seed values, two-sided, with the mean difference's confidence interval.

Welch rather than Student: a KD loss may change the spread between seeds as well as the mean, and with
3 seeds a side nothing supports pooling the two variances. The t distribution is scipy's (a declared
dependency); the statistic and its degrees of freedom are computed here so that the report can show them.
"""
import math

ALPHA = 0.05
DIFFERS = 'differs at p<{:g}'.format(ALPHA)
WITHIN_NOISE = 'within seed noise'
TOO_FEW = 'needs >= 2 seeds'
NO_SPREAD = 'no spread between seeds: not testable'
NOT_FINITE = 'a value is not finite: not testable'


def mean_std(values):
    """Mean and sample standard deviation (n - 1); std None for one value, both None for none."""
    values = [float(v) for v in values]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def welch(a, b):
    """Welch's t-test of mean(a) - mean(b): t, Welch-Satterthwaite df, two-sided p, the difference and its
    95 % interval, and a plain verdict. Fewer than 2 values on a side: only the means and TOO_FEW."""
    from scipy import stats
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    out = dict(n_a=len(a), n_b=len(b), mean_a=None, mean_b=None, diff=None, t=None, df=None, p=None,
               ci=None, level=1 - ALPHA, verdict=TOO_FEW)
    if a and b:
        out.update(mean_a=sum(a) / len(a), mean_b=sum(b) / len(b))
        out['diff'] = out['mean_a'] - out['mean_b']
    if len(a) < 2 or len(b) < 2:
        return out
    if not all(math.isfinite(v) for v in a + b):   # a diverged run: its FID is NaN or inf
        out['verdict'] = NOT_FINITE
        return out
    sq_a, sq_b = (mean_std(v)[1] ** 2 / len(v) for v in (a, b))   # squared standard errors of the two means
    se2 = sq_a + sq_b
    if se2 == 0:
        out['verdict'] = NO_SPREAD
        return out
    t = out['diff'] / math.sqrt(se2)
    df = se2 ** 2 / (sq_a ** 2 / (len(a) - 1) + sq_b ** 2 / (len(b) - 1))
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(se2)
    out.update(t=t, df=df, p=p, ci=[out['diff'] - half, out['diff'] + half],
               verdict=DIFFERS if p < ALPHA else WITHIN_NOISE)
    return out


def kd_tests(methods, baselines, higher_is_better):
    """One entry per KD row whose baseline is in the comparison: Welch's test of KD minus baseline on the
    final and on the best values over seeds. `methods` is results.json's per-method summary."""
    tests = []
    for kd, base in baselines.items():
        if kd not in methods or base not in methods:
            continue
        entry = dict(method=kd, baseline=base, seeds=methods[kd]['seeds'], baseline_seeds=methods[base]['seeds'])
        for what in ('final', 'best'):
            result = welch(methods[kd][what]['values'], methods[base][what]['values'])
            result['kd_better'] = None
            if result['diff']:
                result['kd_better'] = (result['diff'] > 0) == bool(higher_is_better)
            entry[what] = result
        tests.append(entry)
    return tests
