"""torch_utils.misc: constants, shape checks, sampler, parameter copying, DDP helpers, summary."""
import contextlib
import datetime
import json
import os
import warnings

import numpy as np
import pytest
import torch

from torch_utils import misc


# constant / nan_to_num


def test_constant_values_and_cache():
    a = misc.constant([1, 2, 3])
    assert a.dtype == torch.get_default_dtype() and a.device.type == "cpu"
    assert torch.equal(a, torch.tensor([1.0, 2.0, 3.0]))
    assert misc.constant([1, 2, 3]) is a  # cached
    assert misc.constant(np.array([1, 2, 3])) is a  # same value, same key
    assert misc.constant([1, 2, 3], dtype=torch.float64) is not a
    assert misc.constant([1, 2, 4]) is not a
    assert misc.constant([1, 2, 3], dtype=torch.int64).dtype == torch.int64

    b = misc.constant(0.5, shape=[2, 3])
    assert b.shape == (2, 3) and bool((b == 0.5).all())
    assert misc.constant(0.5, shape=(2, 3)) is b
    row = misc.constant([1, 2, 3], shape=[4, 3])
    assert torch.equal(row[3], torch.tensor([1.0, 2.0, 3.0]))

    c = misc.constant(1.0, shape=[2, 3, 4, 5], memory_format=torch.channels_last)
    assert c.is_contiguous(memory_format=torch.channels_last)
    assert misc.constant(1.0, shape=[2, 3, 4, 5]) is not c


def test_nan_to_num():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.5])
    y = misc.nan_to_num(x)
    assert y.tolist() == [0.0, torch.finfo(x.dtype).max, torch.finfo(x.dtype).min, 1.5]
    assert misc.nan_to_num(x, nan=7.0, posinf=1.0, neginf=-1.0).tolist() == [7.0, 1.0, -1.0, 1.5]


# Tracing helpers


def test_suppress_tracer_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with misc.suppress_tracer_warnings():
            warnings.warn("hidden", torch.jit.TracerWarning)
            warnings.warn("still shown", UserWarning)
        warnings.warn("shown again", torch.jit.TracerWarning)
    messages = [str(w.message) for w in caught]
    assert messages == ["still shown", "shown again"]


def test_assert_shape_messages():
    x = torch.zeros(2, 3, 4)
    misc.assert_shape(x, [2, 3, 4])
    misc.assert_shape(x, [None, 3, None])
    misc.assert_shape(x, [torch.tensor(2), None, 4])
    with pytest.raises(AssertionError, match="Wrong number of dimensions: got 3, expected 2"):
        misc.assert_shape(x, [2, 3])
    with pytest.raises(AssertionError, match="Wrong size for dimension 1: got 3, expected 5"):
        misc.assert_shape(x, [None, 5, 4])
    with pytest.raises(Exception, match="Wrong size for dimension 0"):
        misc.assert_shape(x, [torch.tensor(7), None, None])


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
def test_assert_shape_under_jit_trace():
    def fn(x):
        misc.assert_shape(x, [None, 3])
        return x * 2

    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # the check itself must not warn
        traced = torch.jit.trace(fn, torch.ones(4, 3))
    assert torch.equal(traced(torch.ones(6, 3)), torch.full([6, 3], 2.0))
    with pytest.raises(AssertionError, match="dimension 1"):
        torch.jit.trace(fn, torch.ones(4, 5))


def test_profiled_function_records_its_name():
    @misc.profiled_function
    def kd_profiled_op(x, scale=1.0):
        """doc"""
        return x * scale

    assert kd_profiled_op.__name__ == "kd_profiled_op" and kd_profiled_op.__doc__ == "doc"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = kd_profiled_op(torch.ones(3), scale=2.0)
    assert torch.equal(out, torch.full([3], 2.0))
    assert "kd_profiled_op" in [evt.name for evt in prof.events()]


# InfiniteSampler


def _take(sampler, count):
    it = iter(sampler)
    return [next(it) for _ in range(count)]


def test_infinite_sampler_no_shuffle_and_ranks():
    data = list(range(10))
    assert _take(misc.InfiniteSampler(data, shuffle=False), 23) == [i % 10 for i in range(23)]
    assert _take(misc.InfiniteSampler(data, rank=1, num_replicas=3, shuffle=False), 4) == [1, 4, 7, 0]
    with pytest.raises(ValueError):
        misc.InfiniteSampler(data, rank=3, num_replicas=3)
    with pytest.raises(ValueError):
        misc.InfiniteSampler([])


def test_infinite_sampler_shuffled_ranks_are_disjoint_and_cover():
    n, replicas = 60, 3
    data = list(range(n))
    steps = 5 * n
    per_rank = [_take(misc.InfiniteSampler(data, rank=r, num_replicas=replicas, seed=5), steps // replicas)
                for r in range(replicas)]
    # All ranks walk one seeded stream and each takes every `replicas`-th draw: disjoint
    # slices that interleave back into exactly the single-process stream.
    interleaved = [per_rank[step % replicas][step // replicas] for step in range(steps)]
    assert interleaved == _take(misc.InfiniteSampler(data, seed=5), steps)
    first = _take(misc.InfiniteSampler(data, seed=5), n)
    assert first != data and len(set(first)) > 0.6 * n  # shuffled, mostly distinct within a pass

    # Same seed reproduces; another seed differs.
    assert _take(misc.InfiniteSampler(data, seed=5), 200) == _take(misc.InfiniteSampler(data, seed=5), 200)
    assert _take(misc.InfiniteSampler(data, seed=6), 200) != _take(misc.InfiniteSampler(data, seed=5), 200)

    # Over a long run every index keeps being drawn, with roughly even frequency, and
    # the order keeps changing from pass to pass (windowed shuffle).
    long_run = _take(misc.InfiniteSampler(data, seed=1), 60 * n)
    counts = np.bincount(long_run, minlength=n)
    assert counts.min() > 30 and counts.max() < 90
    assert long_run[:n] != long_run[n:2 * n]


def test_infinite_sampler_works_with_dataloader():
    dataset = torch.utils.data.TensorDataset(torch.arange(8))
    sampler = misc.InfiniteSampler(dataset, seed=0)
    loader = iter(torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=3))
    batches = [next(loader)[0] for _ in range(5)]  # more than one epoch's worth
    assert all(b.shape == (3,) for b in batches)


# Parameters and buffers


class _Tiny(torch.nn.Module):
    def __init__(self, extra=False):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.register_buffer("avg", torch.zeros(2))
        if extra:
            self.more = torch.nn.Parameter(torch.ones(4))


def test_params_and_buffers():
    m = _Tiny()
    names = [name for name, _ in misc.named_params_and_buffers(m)]
    assert names == ["fc.weight", "fc.bias", "avg"]
    assert [t.shape for t in misc.params_and_buffers(m)] == [(2, 3), (2,), (2,)]
    with pytest.raises(TypeError):
        misc.params_and_buffers(object())


def test_copy_params_and_buffers():
    torch.manual_seed(0)
    src, dst = _Tiny(), _Tiny(extra=True)
    src.avg.fill_(3.0)
    dst.fc.bias.requires_grad_(False)
    misc.copy_params_and_buffers(src, dst)
    assert torch.equal(dst.fc.weight, src.fc.weight) and torch.equal(dst.fc.bias, src.fc.bias)
    assert torch.equal(dst.avg, src.avg)
    assert dst.fc.weight.requires_grad and not dst.fc.bias.requires_grad  # flags kept
    assert dst.fc.weight.grad_fn is None and dst.fc.weight.data_ptr() != src.fc.weight.data_ptr()
    assert torch.equal(dst.more, torch.ones(4))  # no source: untouched
    with pytest.raises(KeyError, match="more"):
        misc.copy_params_and_buffers(src, dst, require_all=True)
    bigger = torch.nn.Module()
    bigger.fc = torch.nn.Linear(3, 5)
    with pytest.raises(ValueError, match="fc.weight"):
        misc.copy_params_and_buffers(bigger, dst)


def test_ddp_sync_and_consistency_without_distributed():
    m = _Tiny()
    with misc.ddp_sync(m, sync=False):  # not DDP: a plain pass-through
        m.fc(torch.ones(1, 3)).sum().backward()
    assert m.fc.weight.grad is not None
    misc.check_ddp_consistency(m)  # single process: nothing to compare, must not fail


class _RecordingDDP(torch.nn.parallel.DistributedDataParallel):
    """A DDP instance without a process group (real DDP construction costs seconds):
    only no_sync() matters to ddp_sync, and here it records that it was entered."""

    def __init__(self, module):
        torch.nn.Module.__init__(self)
        self.module = module
        self.entered = 0

    @contextlib.contextmanager
    def no_sync(self):
        self.entered += 1
        yield

    def forward(self, x):
        return self.module(x)


def test_ddp_sync_skips_gradient_sync_only_for_ddp_when_asked():
    ddp = _RecordingDDP(torch.nn.Linear(2, 1))
    with misc.ddp_sync(ddp, sync=False):
        ddp(torch.ones(1, 2)).sum().backward()
    assert ddp.entered == 1 and ddp.module.weight.grad is not None
    with misc.ddp_sync(ddp, sync=True):
        pass
    assert ddp.entered == 1


def _ddp_worker(rank, tmp_dir):
    torch.distributed.init_process_group(backend="gloo", init_method="file://" + os.path.join(tmp_dir, "init"),
                                         rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    try:
        result = {}
        torch.manual_seed(0)
        m = _Tiny()
        m.avg.fill_(float("nan"))  # NaN on both ranks counts as equal
        misc.check_ddp_consistency(m)
        result["consistent_ok"] = True

        if rank == 1:
            with torch.no_grad():
                m.fc.bias.add_(1.0)
        try:
            misc.check_ddp_consistency(m)
            result["inconsistent_detected"] = False
        except AssertionError as err:
            result["inconsistent_detected"] = "_Tiny.fc.bias" in str(err)
        misc.check_ddp_consistency(m, ignore_regex=r".*\.fc\.bias")
        result["ignore_ok"] = True

        with open(os.path.join(tmp_dir, "rank{}.json".format(rank)), "w") as f:
            json.dump(result, f)
    finally:
        torch.distributed.destroy_process_group()


def test_check_ddp_consistency_two_processes(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tmp_path),), nprocs=2, join=True)
    results = [json.loads((tmp_path / "rank{}.json".format(r)).read_text()) for r in range(2)]
    for rank, result in enumerate(results):
        assert result["consistent_ok"] and result["ignore_ok"]
        assert result["inconsistent_detected"] == (rank == 1)  # rank 0 is the reference


# print_module_summary


class _SummaryNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Identity())
        self.head = torch.nn.Linear(8, 2)
        self.register_buffer("shift", torch.ones(2))

    def forward(self, x):
        h = self.body(x)
        return self.head(h) + self.shift, h.to(torch.float64)


def test_print_module_summary(capsys):
    net = _SummaryNet()
    x = torch.randn(5, 4)
    out = misc.print_module_summary(net, [x])
    assert torch.equal(out[0], net(x)[0])
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "Module" in lines and "Total" in lines
    total_params = sum(p.numel() for p in net.parameters())
    assert lines["Total"].split()[1:3] == [str(total_params), "2"]
    assert lines["body.0"].split()[1:3] == ["40", "-"] and "[5, 8]" in lines["body.0"]
    assert lines["head"].split()[1:3] == ["18", "-"]
    assert "[5, 2]" in lines["<top-level>"] and "float32" in lines["<top-level>"]
    assert "[5, 8]" in lines["<top-level>:1"] and "float64" in lines["<top-level>:1"]
    assert "body.2" not in lines  # Identity adds nothing new: skipped as redundant

    misc.print_module_summary(net, [x], skip_redundant=False)
    assert "body.2" in capsys.readouterr().out

    misc.print_module_summary(net, [x], max_nesting=0)
    shallow = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "head" not in shallow and shallow["Total"].split()[1] == str(total_params)
