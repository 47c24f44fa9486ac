"""Shared test setup: the harness runs as scripts from its own folder, so its
top-level packages (dnnlib, torch_utils, training, ...) come from stylegan2_ada/."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, "stylegan2_ada")
if HARNESS not in sys.path:
    sys.path.insert(0, HARNESS)

import pytest  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n N` every worker is one process: one intra-op thread each keeps
    # N workers from oversubscribing the cores (on 2 cores, two threads per worker
    # made small ops 5-10x slower).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch
        torch.set_num_threads(1)
        # torch's compiler stack, loaded up front: a worker runs a share of the whole suite, and some
        # test of it builds an optimiser (which loads it) anyway. Once it is loaded, train.py's preflight
        # builds networks with meta weights in in-process dry runs too, whatever test ran first
        # (the golden dry-run case: about 53 -> 25 CPU seconds).
        import torch._dynamo  # noqa: F401
    except Exception:  # torch missing: the import errors speak elsewhere
        pass


@pytest.fixture
def clean_registry():
    """kdgan_plugins.registry, restored after the test: presets a test registers never
    leak into the next one."""
    import copy
    from kdgan_plugins import registry
    saved = copy.deepcopy(registry._registry)
    yield registry
    registry._registry.clear()
    registry._registry.update(saved)


def pytest_collection_modifyitems(config, items):
    """Skip `cuda` tests cleanly on machines without a CUDA device."""
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: let the import errors speak elsewhere
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
