"""The fault-injection suite, short (issue 12, item 7): a small CPU run killed with SIGKILL three
times (at start-up, in training, at a snapshot write), resumed from its --outdir each time, ends
bit for bit where an uninterrupted run ends, with no corrupt or leftover file and no kill costing
more than one snapshot interval. `make faults` runs the same with 20 kills (bench/faults.py)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import faults  # noqa: E402


@pytest.mark.slow
def test_three_kills_resume_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    figures = faults.run_faults(str(tmp_path), kills=3, seed=1, kimg=0.1, log=lambda line: print(line))
    assert figures['kills'] == 3 and figures['kinds'] == dict(startup=1, train=1, write=1)
    assert figures['corrupt'] == [] and figures['leftovers'] == []
    assert figures['worst_loss_nimg'] <= figures['interval_nimg']
    assert figures['diffs'] == [] and figures['ok']
