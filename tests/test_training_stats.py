"""torch_utils.training_stats: report anywhere, collect per interval, sum across processes."""
import datetime
import json
import math
import os

import numpy as np
import pytest
import torch

import dnnlib
from torch_utils import training_stats


def test_report_returns_value_and_ignores_unmatched_names(monkeypatch):
    # Collectors made by earlier tests (e.g. the training loop's, regex '.*') would enable every name.
    monkeypatch.setattr(training_stats, "_collector_regexes", [])
    monkeypatch.setattr(training_stats, "_name_enabled", {})
    collector = training_stats.Collector(regex="TsA/.*")
    value = torch.tensor([1.0, 2.0])
    assert training_stats.report("TsA/x", value) is value
    assert training_stats.report("TsUnmatched/x", 5.0) == 5.0
    assert "TsUnmatched/x" not in training_stats._counters  # costs nothing, never synced
    collector.update()
    assert collector.names() == ["TsA/x"]


def test_collector_statistics_single_process():
    collector = training_stats.Collector(regex="TsB/.*")
    values = [0.5, 1.5, -2.0, 4.0, 3.25]
    training_stats.report("TsB/loss", torch.tensor(values[:2]))
    training_stats.report("TsB/loss", values[2])
    training_stats.report("TsB/loss", np.array(values[3:]).reshape(1, 2))  # any shape flattens
    training_stats.report("TsB/one", 7)
    training_stats.report("TsB/empty", [])
    collector.update()

    assert collector.num("TsB/loss") == 5
    assert collector.mean("TsB/loss") == pytest.approx(np.mean(values), abs=1e-12)
    assert collector.std("TsB/loss") == pytest.approx(np.std(values), abs=1e-12)
    assert collector["TsB/loss"] == collector.mean("TsB/loss")
    assert collector.num("TsB/one") == 1 and collector.std("TsB/one") == 0.0
    assert collector.num("TsB/empty") == 0 and math.isnan(collector.mean("TsB/empty"))
    assert math.isnan(collector.std("TsB/never"))
    assert collector.names() == ["TsB/empty", "TsB/loss", "TsB/one"]  # sorted

    stats = collector.as_dict()
    assert isinstance(stats, dnnlib.EasyDict) and sorted(stats) == ["TsB/loss", "TsB/one"]
    assert stats["TsB/loss"].num == 5 and stats["TsB/one"].mean == 7.0
    json.dumps(stats)  # stats.jsonl needs plain numbers

    # Next interval: only what was reported since the previous update.
    training_stats.report("TsB/loss", [10.0, 20.0])
    collector.update()
    assert collector.num("TsB/loss") == 2 and collector.mean("TsB/loss") == 15.0
    assert collector.num("TsB/one") == 1  # keep_previous: nothing new, last stats kept

    with pytest.raises(RuntimeError):
        training_stats.init_multiprocessing(rank=0, sync_device=None)  # too late after a sync


def test_keep_previous_false_and_independent_collectors():
    first = training_stats.Collector(regex="TsC/.*", keep_previous=False)
    training_stats.report("TsC/a", 1.0)
    training_stats.report("TsC/b", 2.0)
    first.update()
    # A collector created now starts empty, but sees later reports.
    second = training_stats.Collector(regex="TsC/a")
    assert second.num("TsC/a") == 0
    training_stats.report("TsC/a", 3.0)
    first.update()
    second.update()
    assert first.num("TsC/a") == 1 and first.mean("TsC/a") == 3.0
    assert first.num("TsC/b") == 0 and "TsC/b" not in first.as_dict()  # not kept
    assert second.names() == ["TsC/a"] and second.mean("TsC/a") == 3.0


def test_new_collector_enables_previously_ignored_names():
    training_stats.report("TsD/late", 1.0)  # nobody listens yet
    collector = training_stats.Collector(regex="TsD/.*")
    training_stats.report("TsD/late", 4.0)
    collector.update()
    assert collector.num("TsD/late") == 1 and collector.mean("TsD/late") == 4.0


RANK_VALUES = {0: [1.0, 2.0, 3.0], 1: [10.0, 20.0]}


def _stats_worker(rank, tmp_dir):
    torch.distributed.init_process_group(backend="gloo", init_method="file://" + os.path.join(tmp_dir, "init"),
                                         rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    try:
        training_stats.init_multiprocessing(rank=rank, sync_device=torch.device("cpu"))
        collector = training_stats.Collector(regex="Loss/.*")
        fresh = training_stats.Collector(regex="Loss/.*", keep_previous=False)
        training_stats.report("Loss/a", torch.tensor(RANK_VALUES[rank]))
        training_stats.report0("Loss/b", 5.0)
        training_stats.report("Other/x", 1.0)
        collector.update()
        fresh.update()
        result = dict(first=collector.as_dict(), ignored="Other/x" in training_stats._counters)

        # Second interval: only rank 1 reports Loss/a; names stay in step across ranks.
        if rank == 1:
            training_stats.report("Loss/a", 100.0)
        collector.update()
        fresh.update()
        result.update(second=collector.as_dict(), second_fresh=fresh.as_dict())
        with open(os.path.join(tmp_dir, "rank{}.json".format(rank)), "w") as f:
            json.dump(result, f)
    finally:
        torch.distributed.destroy_process_group()


def test_collector_sums_across_two_processes(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    torch.multiprocessing.spawn(_stats_worker, args=(str(tmp_path),), nprocs=2, join=True)
    both = RANK_VALUES[0] + RANK_VALUES[1]
    results = [json.loads((tmp_path / "rank{}.json".format(r)).read_text()) for r in range(2)]
    for result in results:
        first = result["first"]
        assert sorted(first) == ["Loss/a", "Loss/b"] and not result["ignored"]
        assert first["Loss/a"]["num"] == len(both)
        assert first["Loss/a"]["mean"] == pytest.approx(np.mean(both), abs=1e-12)
        assert first["Loss/a"]["std"] == pytest.approx(np.std(both), abs=1e-12)
        assert first["Loss/b"] == {"num": 1, "mean": 5.0, "std": 0.0}  # report0: rank 0's value only

        second = result["second"]
        assert second["Loss/a"] == {"num": 1, "mean": 100.0, "std": 0.0}
        assert second["Loss/b"] == first["Loss/b"]  # kept from the previous interval
        assert result["second_fresh"] == {"Loss/a": {"num": 1, "mean": 100.0, "std": 0.0}}
    assert results[0] == results[1]  # every rank sees the same statistics
