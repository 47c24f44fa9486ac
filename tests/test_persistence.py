"""torch_utils.persistence: pickles that carry their source and load without it."""
import copy
import importlib
import io
import json
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import dnnlib
from torch_utils import persistence

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stylegan2_ada")

NET_SRC = textwrap.dedent('''
    """A network module as a plug-in would write it."""
    import numpy as np
    import torch
    from torch_utils import misc, persistence


    @persistence.persistent_class
    class Inner(torch.nn.Module):
        def __init__(self, features):
            super().__init__()
            self.fc = torch.nn.Linear(features, features)
            self.register_buffer("scale", torch.linspace(0.5, 2.0, features))

        def forward(self, x):
            misc.assert_shape(x, [None, self.fc.in_features])
            return self.fc(x) * self.scale


    @persistence.persistent_class
    class Offset:
        def __init__(self, value):
            self.value = value


    @persistence.persistent_class
    class Net(torch.nn.Module):
        def __init__(self, features, cfg=None):
            super().__init__()
            self.inner = Inner(features)
            self.offset = Offset(np.float32(0.25))
            self.cfg = cfg

        def forward(self, x):
            return torch.tanh(self.inner(x)) + float(self.offset.value)
''')


@pytest.fixture
def net_module(tmp_path, monkeypatch):
    """Import NET_SRC from a file under a unique name, as a user's module would be."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    name = "kdtest_persist_net_{}".format(os.getpid())
    (mod_dir / (name + ".py")).write_text(NET_SRC)
    monkeypatch.syspath_prepend(str(mod_dir))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture
def clean_hooks():
    saved = list(persistence._import_hooks)
    yield
    persistence._import_hooks[:] = saved


class _MetaCatcher(pickle.Unpickler):
    """Unpickles with _reconstruct_persistent_obj replaced by a recorder of metas."""

    def __init__(self, data):
        super().__init__(io.BytesIO(data))
        self.metas = []

    def find_class(self, module, name):
        if (module, name) == ("torch_utils.persistence", "_reconstruct_persistent_obj"):
            def record(meta):
                self.metas.append(meta)
                return meta
            return record
        return super().find_class(module, name)


def _globals_in(data):
    """(module, name) pairs a pickle refers to, from its opcodes."""
    names, strings = [], []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            names.append(tuple(arg.split(" ")))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.append((strings[-2], strings[-1]))
    return names


def test_pickle_format(net_module):
    torch.manual_seed(0)
    net = net_module.Net(4, cfg=dnnlib.EasyDict(depth=2))
    data = pickle.dumps(net)
    refs = _globals_in(data)
    assert ("torch_utils.persistence", "_reconstruct_persistent_obj") in refs
    assert not any(module == net_module.__name__ for module, _ in refs)  # the defining module is not needed

    catcher = _MetaCatcher(data)
    top = catcher.load()
    assert top["type"] == "class" and top["version"] == 6
    assert top["class_name"] == "Net"
    assert top["module_src"] == NET_SRC
    assert top["state"]["_init_args"] == (4,)
    assert top["state"]["_init_kwargs"] == {"cfg": {"depth": 2}}
    # Nested persistent objects are metas of their own inside the state.
    assert sorted(m["class_name"] for m in catcher.metas) == ["Inner", "Net", "Offset"]


def test_class_attributes_and_init_args(net_module):
    cfg = {"depth": [1, 2]}
    net = net_module.Net(3, cfg=cfg)
    cfg["depth"].append(3)  # later changes to the caller's objects are not recorded
    assert persistence.is_persistent(net) and persistence.is_persistent(net_module.Net)
    assert not persistence.is_persistent(torch.nn.Linear(1, 1)) and not persistence.is_persistent([])
    assert net_module.Net.__name__ == "Net" and net_module.Net.__module__ == net_module.__name__
    assert net.init_args == (3,)
    assert net.init_kwargs == {"cfg": {"depth": [1, 2]}} and isinstance(net.init_kwargs, dnnlib.EasyDict)
    assert persistence.persistent_class(net_module.Net) is net_module.Net  # decorating twice is a no-op


def test_roundtrip_in_process_and_deepcopy(net_module):
    torch.manual_seed(1)
    net = net_module.Net(5)
    x = torch.randn(7, 5)
    loaded = pickle.loads(pickle.dumps(net))
    assert torch.equal(loaded(x), net(x))
    assert loaded.init_args == (5,)
    # Same source text as a live module: the live module is reused, so classes stay identical.
    assert type(loaded) is net_module.Net and type(loaded.inner) is net_module.Inner
    twin = copy.deepcopy(net)
    assert type(twin) is net_module.Net and torch.equal(twin(x), net(x))
    assert twin.inner.fc.weight is not net.inner.fc.weight


def test_load_in_fresh_process_without_defining_module(net_module, tmp_path):
    torch.manual_seed(2)
    net = net_module.Net(6, cfg=dnnlib.EasyDict(name="demo"))
    x = torch.randn(3, 6)
    with torch.no_grad():
        y = net(x)
    with open(tmp_path / "net.pkl", "wb") as f:
        pickle.dump(dict(G=net, x=x, y=y), f)

    script = textwrap.dedent('''
        import importlib.util, io, json, pickle, sys, torch
        from torch_utils import persistence
        with open(sys.argv[1], "rb") as f:
            data = pickle.load(f)
        net = data["G"]
        with torch.no_grad():
            y = net(data["x"])
        again = pickle.dumps(net)
        metas = []
        class Catch(pickle.Unpickler):
            def find_class(self, module, name):
                if name == "_reconstruct_persistent_obj":
                    return lambda meta: metas.append(meta) or meta
                return super().find_class(module, name)
        Catch(io.BytesIO(again)).load()
        print(json.dumps(dict(
            defining_module_found=importlib.util.find_spec(sys.argv[2]) is not None,
            identical=bool(torch.equal(y, data["y"])),
            class_module=type(net).__module__,
            inner_module=type(net.inner).__module__,
            init_args=list(net.init_args),
            cfg_type=type(net.init_kwargs.cfg).__name__,
            cfg_name=net.init_kwargs.cfg.name,
            src_of_reload=metas[0]["module_src"],
        )))
    ''')
    env = dict(os.environ, PYTHONPATH=HARNESS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "net.pkl"), net_module.__name__],
                          cwd=str(elsewhere), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["defining_module_found"] is False
    assert result["identical"] is True
    assert result["class_module"].startswith("_imported_module_")
    assert result["inner_module"] == result["class_module"]
    assert result["init_args"] == [6]
    assert result["cfg_type"] == "EasyDict" and result["cfg_name"] == "demo"
    # Re-pickling an object whose class came from a pickle keeps the same source.
    assert result["src_of_reload"] == NET_SRC


def test_reloaded_source_repickles_and_plain_classes(tmp_path, monkeypatch):
    # A module that exists only as source text (as after loading a pickle). Its
    # non-persistent helper class pickles by reference to the generated module name,
    # which is stable (md5 of the source), so it resolves again once any persistent
    # object of that source earlier in the same pickle has been rebuilt.
    src = textwrap.dedent('''
        from torch_utils import persistence

        class Plain:
            def __init__(self, v):
                self.v = v

        @persistence.persistent_class
        class Holder:
            def __init__(self, v):
                self.v = v
    ''')
    module = persistence._src_to_module(src)
    assert module.__name__.startswith("_imported_module_") and sys.modules[module.__name__] is module
    assert persistence._src_to_module(src) is module  # cached by source text
    data = pickle.dumps([module.Holder(11), module.Plain(12)])
    catcher = _MetaCatcher(data)
    catcher.load()
    assert catcher.metas[0]["module_src"] == src  # re-pickled with the very same source

    # Forget the generated module, as a fresh process would not have it.
    monkeypatch.delitem(sys.modules, module.__name__)
    monkeypatch.setattr(persistence, "_src_to_module_cache", {})
    monkeypatch.setattr(persistence, "_module_to_src_cache", {})
    holder, plain = pickle.loads(data)
    assert holder.v == 11 and holder.init_args == (11,) and plain.v == 12
    assert type(holder).__module__ == module.__name__  # same stable name
    assert type(holder) is not module.Holder           # but a freshly executed module
    assert type(plain) is sys.modules[module.__name__].Plain
    assert _MetaCatcher(pickle.dumps(holder)).load()["module_src"] == src


def test_class_defined_in_main_script(tmp_path):
    script = tmp_path / "train_like_script.py"
    script.write_text(textwrap.dedent('''
        import pickle, sys
        from torch_utils import persistence

        @persistence.persistent_class
        class ScriptThing:
            def __init__(self, k):
                self.k = k

            def twice(self):
                return 2 * self.k

        if __name__ == "__main__":
            assert ScriptThing.__module__ == "__main__"
            with open(sys.argv[1], "wb") as f:
                pickle.dump(ScriptThing(k=21), f)
    '''))
    out = tmp_path / "thing.pkl"
    env = dict(os.environ, PYTHONPATH=HARNESS)
    proc = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert _MetaCatcher(data).load()["module_src"] == script.read_text()
    thing = pickle.loads(data)  # loads here, where __main__ is pytest: the `if __name__` block must not run
    assert thing.twice() == 42 and thing.init_kwargs == {"k": 21}
    assert type(thing).__module__.startswith("_imported_module_")


def test_import_hook_rewrites_meta(net_module, clean_hooks):
    seen = []

    def record(meta):
        seen.append(meta.class_name)  # metas arrive as EasyDicts
        # In-place edit, returning None.
        if meta.class_name == "Net":
            meta.state["cfg"] = "patched"

    def upgrade(meta):
        # Patch the embedded source: an old pickle gains new behaviour.
        if meta.class_name == "Offset":
            meta = dict(meta)
            meta["state"] = dict(meta["state"], value=1.5)
        return meta

    persistence.import_hook(record)
    persistence.import_hook(upgrade)
    with pytest.raises(TypeError):
        persistence.import_hook("not callable")
    net = net_module.Net(2, cfg="original")
    loaded = pickle.loads(pickle.dumps(net))
    assert sorted(seen) == ["Inner", "Net", "Offset"]
    assert loaded.cfg == "patched" and net.cfg == "original"
    assert loaded.offset.value == 1.5


def test_import_hook_can_replace_source_and_version_is_checked(net_module, clean_hooks):
    def swap_source(meta):
        if meta.class_name == "Net":
            meta.module_src = meta.module_src.replace("torch.tanh(self.inner(x))", "self.inner(x) * 0")
        return meta

    persistence.import_hook(swap_source)
    net = net_module.Net(3)
    loaded = pickle.loads(pickle.dumps(net))
    assert type(loaded) is not net_module.Net and type(loaded).__module__.startswith("_imported_module_")
    assert torch.equal(loaded(torch.ones(2, 3)), torch.full([2, 3], 0.25))

    persistence.import_hook(lambda meta: dict(meta, version=5))
    with pytest.raises(pickle.UnpicklingError, match="version 5"):
        pickle.loads(pickle.dumps(net))


def test_check_pickleable_names_the_path(net_module):
    with pytest.raises(pickle.PicklingError, match=r"\['cfg'\]\['fn'\]"):
        net_module.Net(2, cfg={"fn": lambda x: x})
    with pytest.raises(pickle.PicklingError, match=r"obj\['a'\]\[1\]"):
        persistence._check_pickleable({"a": [1, threading.Lock()], "t": torch.zeros(2)})
    net = net_module.Net(2)
    net.inner.bad = threading.Lock()
    with pytest.raises(pickle.PicklingError, match=r"obj\._modules\['inner'\]\.bad"):
        persistence._check_pickleable(net)
    persistence._check_pickleable({"ok": [net_module.Net(2), torch.ones(3), (1, "a")]})


def test_errors_for_local_and_undecorated_subclasses(net_module):
    @persistence.persistent_class
    class Local:
        pass

    with pytest.raises(pickle.PicklingError, match="top level"):
        pickle.dumps(Local())

    class Sub(net_module.Net):
        pass

    with pytest.raises(pickle.PicklingError, match="not decorated"):
        pickle.dumps(Sub(2))
    with pytest.raises(TypeError):
        persistence.persistent_class(lambda: 0)
