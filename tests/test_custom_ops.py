"""custom_ops: cache key, toolchain diagnostics, build/cache/rename on a real (tiny) build,
the one-warning fallback of both ops, and the compile check of the two CUDA plugins."""
import importlib
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'stylegan2_ada')


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """Private extensions dir and empty in-process caches."""
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'ext'))
    monkeypatch.setattr(custom_ops, '_loaded', {})
    monkeypatch.setattr(custom_ops, '_failed', {})
    monkeypatch.setattr(custom_ops, '_warned', set())
    return tmp_path


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_digest_tracks_contents_not_paths(tmp_path):
    a = _write(tmp_path / 'a' / 'k.cu', 'kernel v1')
    b = _write(tmp_path / 'b' / 'k.cu', 'kernel v1')
    h = _write(tmp_path / 'a' / 'k.h', 'header')
    hb = _write(tmp_path / 'b' / 'k.h', 'header')
    key = custom_ops.build_digest('m', [a], [h], {}, '8.0')
    assert custom_ops.build_digest('m', [b], [hb], {}, '8.0') == key            # same contents elsewhere
    assert custom_ops.build_digest('m', [a], [h], {'extra_cuda_cflags': ['-O2']}, '8.0') != key
    assert custom_ops.build_digest('m', [a], [h], {}, '9.0') != key              # other GPU arch
    assert custom_ops.build_digest('m2', [a], [h], {}, '8.0') != key
    _write(tmp_path / 'a' / 'k.h', 'header edited')
    assert custom_ops.build_digest('m', [a], [h], {}, '8.0') != key              # header edits count


# Toolchain problems: a one-line reason and a fix, found before any compiler runs.

def _cu_source(tmp_path):
    return [_write(tmp_path / 'src' / 'k.cu', '// kernel\n')]


def test_missing_nvcc_is_reported(fresh, monkeypatch):
    if torch.version.cuda is None:
        monkeypatch.setattr(torch.version, 'cuda', '12.4')
    monkeypatch.setenv('CUDA_HOME', str(fresh / 'no-cuda-here'))
    with pytest.raises(custom_ops.PluginError) as e:
        custom_ops.get_plugin('kdgan_t_nonvcc', _cu_source(fresh))
    assert 'nvcc not found' in e.value.reason and 'CUDA_HOME' in e.value.hint
    assert '\n' not in str(e.value)


def test_cuda_version_mismatch_is_reported(fresh, monkeypatch):
    home = fresh / 'fake-cuda'
    _write(home / 'bin' / 'nvcc', '')
    _write(home / 'include' / 'cuda_runtime.h', '')
    monkeypatch.setenv('CUDA_HOME', str(home))
    monkeypatch.setattr(torch.version, 'cuda', '12.4')
    monkeypatch.setattr(custom_ops, 'nvcc_version', lambda home: '99.1')
    with pytest.raises(custom_ops.PluginError) as e:
        custom_ops.get_plugin('kdgan_t_mismatch', _cu_source(fresh))
    assert 'nvcc 99.1' in e.value.reason and '12.4' in e.value.reason and 'does not match' in e.value.reason
    assert '\n' not in str(e.value)


def test_cpu_only_torch_is_reported(fresh, monkeypatch):
    monkeypatch.setattr(torch.version, 'cuda', None)
    with pytest.raises(custom_ops.PluginError, match='without CUDA'):
        custom_ops.get_plugin('kdgan_t_cpu', _cu_source(fresh))


def test_missing_ninja_is_reported(fresh, monkeypatch):
    monkeypatch.setattr(cpp_extension, 'is_ninja_available', lambda: False)
    src = [_write(fresh / 'src' / 'plain.cpp', '// nothing\n')]
    with pytest.raises(custom_ops.PluginError) as e:
        custom_ops.get_plugin('kdgan_t_ninja', src)
    assert 'ninja' in e.value.reason and 'pip install ninja' in e.value.hint


def test_failures_are_remembered(fresh, monkeypatch):
    calls = []

    def check():
        calls.append(1)
        raise custom_ops.PluginError('toolkit gone', 'reinstall')

    monkeypatch.setattr(custom_ops, '_check_cuda_toolchain', check)
    src = _cu_source(fresh)
    for _ in range(3):
        with pytest.raises(custom_ops.PluginError, match='toolkit gone'):
            custom_ops.get_plugin('kdgan_t_remember', src)
    assert len(calls) == 1


# A real build through torch's cpp_extension, of a plain-C module (seconds, not minutes).

PLAIN_SRC = textwrap.dedent('''\
    #include <Python.h>
    #define KD_CAT2(a, b) a##b
    #define KD_CAT(a, b) KD_CAT2(a, b)
    #define KD_STR2(a) #a
    #define KD_STR(a) KD_STR2(a)
    static struct PyModuleDef kd_def = {PyModuleDef_HEAD_INIT, KD_STR(TORCH_EXTENSION_NAME), nullptr, -1, nullptr};
    PyMODINIT_FUNC KD_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
        PyObject* m = PyModule_Create(&kd_def);
        if (m) PyModule_AddIntConstant(m, "answer", ANSWER);
        return m;
    }
''')


def _no_compiler():
    import shutil
    return shutil.which(os.environ.get('CXX', 'c++')) is None


@pytest.mark.skipif(_no_compiler(), reason='no C++ compiler on PATH')
def test_build_is_cached_renamed_and_rebuilt_on_edit(fresh, monkeypatch, capsys):
    src_dir = fresh / 'src'
    _write(src_dir / 'plain.cpp', '#define ANSWER 41\n' + PLAIN_SRC)
    root = fresh / 'ext' / 'kdgan'

    monkeypatch.setattr(custom_ops, 'verbosity', 'brief')
    m = custom_ops.get_plugin('kdgan_t_plain', ['plain.cpp'], source_dir=str(src_dir))
    assert m.answer == 41
    assert 'Building plugin kdgan_t_plain' in capsys.readouterr().out
    built = [p for p in os.listdir(root) if os.path.isdir(root / p)]
    assert len(built) == 1 and built[0].startswith('kdgan_t_plain-')          # renamed into place,
    assert os.path.isfile(root / built[0] / 'plugin.json')                      # complete,
    assert not [p for p in os.listdir(root) if p.startswith('.tmp-')]          # nothing left behind

    assert custom_ops.get_plugin('kdgan_t_plain', ['plain.cpp'], source_dir=str(src_dir)) is m  # in-process cache

    # As a new process would: the finished build loads without any compiler.
    monkeypatch.setattr(custom_ops, '_loaded', {})
    with monkeypatch.context() as mp:
        mp.setattr(cpp_extension, 'load', lambda *a, **k: pytest.fail('rebuilt an unchanged plugin'))
        assert custom_ops.get_plugin('kdgan_t_plain', ['plain.cpp'], source_dir=str(src_dir)).answer == 41

    # An edit gets its own build directory.
    monkeypatch.setattr(custom_ops, 'verbosity', 'none')
    _write(src_dir / 'plain.cpp', '#define ANSWER 42\n' + PLAIN_SRC)
    assert custom_ops.get_plugin('kdgan_t_plain', ['plain.cpp'], source_dir=str(src_dir)).answer == 42
    assert capsys.readouterr().out == ''
    assert len([p for p in os.listdir(root) if os.path.isdir(root / p) and not p.startswith('.')]) == 2


@pytest.mark.skipif(_no_compiler(), reason='no C++ compiler on PATH')
def test_compile_error_gives_first_error_and_log(fresh, monkeypatch):
    monkeypatch.setattr(custom_ops, 'verbosity', 'none')
    src = [_write(fresh / 'src' / 'broken.cpp', '#error deliberately broken for the test\n')]
    with pytest.raises(custom_ops.PluginError) as e:
        custom_ops.get_plugin('kdgan_t_broken', src)
    assert e.value.reason.startswith('compile error:') and 'deliberately broken' in e.value.reason
    assert '\n' not in str(e.value)
    with open(e.value.log_path) as f:
        assert 'deliberately broken' in f.read()
    root = fresh / 'ext' / 'kdgan'
    assert not [p for p in os.listdir(root) if os.path.isdir(root / p)]       # no half-built dirs


def test_file_lock_serialises_builders(tmp_path):
    path = str(tmp_path / 'x.lock')
    events = []
    held = threading.Event()

    def holder():
        with custom_ops.file_lock(path):
            held.set()
            time.sleep(0.3)
            events.append('first released')

    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    with custom_ops.file_lock(path):
        events.append('second acquired')
    t.join()
    assert events == ['first released', 'second acquired']


# Fallback: the reference path, and exactly one warning per op however often it is called.

def _pretend_cuda(monkeypatch, op):
    monkeypatch.setattr(op._op, 'plugin', None)
    monkeypatch.setattr(op._op, 'tried', False)
    monkeypatch.setattr(op._op, 'wants', lambda x, impl: impl == 'cuda')


def test_failed_build_falls_back_with_one_warning(fresh, monkeypatch):
    attempts = []

    def failing_get_plugin(module_name, *args, **kwargs):
        attempts.append(module_name)
        if 'bias_act' in module_name:
            raise custom_ops.PluginError('nvcc not found (test)', 'install the CUDA toolkit')
        raise OSError('disk full (test)')  # an unexpected error must not crash either

    monkeypatch.setattr(custom_ops, 'get_plugin', failing_get_plugin)
    _pretend_cuda(monkeypatch, bias_act)
    _pretend_cuda(monkeypatch, upfirdn2d)
    x = torch.randn(2, 3, 8, 8)
    b = torch.randn(3)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(4):
            assert torch.equal(bias_act.bias_act(x, b, act='lrelu', clamp=1.0),
                               bias_act.bias_act(x, b, act='lrelu', clamp=1.0, impl='ref'))
            assert torch.equal(upfirdn2d.upsample2d(x, f), upfirdn2d.upsample2d(x, f, impl='ref'))
            assert torch.equal(upfirdn2d.downsample2d(x, f), upfirdn2d.downsample2d(x, f, impl='ref'))
    ours = [w for w in caught if issubclass(w.category, custom_ops.CustomOpFallbackWarning)]
    msgs = sorted(str(w.message) for w in ours)
    assert len(msgs) == 2, msgs
    assert msgs[0].startswith('bias_act: ') and 'nvcc not found (test)' in msgs[0] and 'Fix:' in msgs[0]
    assert msgs[1].startswith('upfirdn2d: ') and 'disk full (test)' in msgs[1]
    assert all('\n' not in m for m in msgs)
    assert sorted(attempts) == ['kdgan_bias_act', 'kdgan_upfirdn2d']  # one attempt each


def test_fallback_without_toolkit_in_a_fresh_process(tmp_path):
    """The real path, no mocks in the build: CUDA_HOME points at nothing."""
    script = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {HARNESS!r})
        import torch
        from torch_utils.ops import bias_act, upfirdn2d
        for op in (bias_act, upfirdn2d):  # behave as if x were on a GPU
            op._op.wants = lambda x, impl: impl == 'cuda'
        x = torch.randn(2, 3, 8, 8)
        f = upfirdn2d.setup_filter([1, 3, 3, 1])
        for _ in range(3):
            assert torch.equal(bias_act.bias_act(x, act='lrelu'), bias_act.bias_act(x, act='lrelu', impl='ref'))
            assert torch.equal(upfirdn2d.upsample2d(x, f), upfirdn2d.upsample2d(x, f, impl='ref'))
        print('ok')
    ''')
    env = dict(os.environ, CUDA_HOME=str(tmp_path / 'nothing'), TORCH_EXTENSIONS_DIR=str(tmp_path / 'ext'))
    env.pop('CUDA_PATH', None)
    r = subprocess.run([sys.executable, '-W', 'always', '-c', script], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == 'ok'
    lines = [ln for ln in r.stderr.splitlines() if 'CUDA plugin unavailable' in ln]
    if torch.version.cuda is None:
        assert all('without CUDA' in ln for ln in lines)
    else:
        assert all('nvcc not found' in ln and 'CUDA_HOME' in ln for ln in lines)
    assert len([ln for ln in lines if 'bias_act:' in ln]) == 1
    assert len([ln for ln in lines if 'upfirdn2d:' in ln]) == 1


# Compile check: the real CUDA plugins build with nvcc (no GPU needed) and import.

def _cuda_toolkit_unusable():
    if torch.version.cuda is None:
        return f'PyTorch {torch.__version__} has no CUDA support'
    home = custom_ops.resolve_cuda_home()
    if not home or not os.path.isfile(custom_ops._nvcc_path(home)):
        return f'CUDA toolkit (nvcc) not found; set CUDA_HOME (now {home!r})'
    have = custom_ops.nvcc_version(home)
    if have is None or have.split('.')[0] != torch.version.cuda.split('.')[0]:
        return f'nvcc {have} at {home} cannot build for PyTorch CUDA {torch.version.cuda}'
    return None


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize('op_name', ['bias_act', 'upfirdn2d'])
def test_cuda_plugin_compiles_and_imports(op_name, monkeypatch):
    reason = _cuda_toolkit_unusable()
    if reason:
        pytest.skip(reason)
    op = importlib.import_module(f'torch_utils.ops.{op_name}')
    plugin = op.build_plugin()  # first run compiles (minutes); later runs load the cached build
    fn = getattr(plugin, op_name)
    # The binding is live: it runs its argument checks and refuses CPU tensors cleanly.
    x = torch.zeros(1, 1, 4, 4)
    args = ((x, x.new_empty(0), x.new_empty(0), 0, 1, 1, 0.0, 1.0, -1.0) if op_name == 'bias_act'
            else (x, torch.ones(1, 1), 1, 1, 1, 1, 0, 0, 0, 0, 1.0))
    with pytest.raises(RuntimeError, match='must be a CUDA tensor'):
        fn(*args)
    # Cached on disk under a content key: a fresh lookup needs no compiler.
    monkeypatch.setattr(custom_ops, '_loaded', {})
    monkeypatch.setattr(cpp_extension, 'load', lambda *a, **k: pytest.fail('rebuilt an unchanged plugin'))
    assert callable(getattr(op.build_plugin(), op_name))
