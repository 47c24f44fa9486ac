"""Build C++/CUDA plugins on first use, cached on disk and safe when several processes race.

The build directory is keyed by a hash of everything that changes the binary (source
contents, build flags, torch/CUDA/Python versions, target GPU architectures), so an edit
rebuilds and identical sources reuse the earlier build without invoking a compiler. A
build happens in a private temporary folder, under a file lock, and is renamed into place
only when complete, so DDP ranks never load a half-written library.

Callers that can do without the plugin use `load_op_plugin`, which turns any failure into
one warning per op and returns None so the op can take its reference path.
"""

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import warnings

import torch

verbosity = 'brief'  # 'none': silent; 'brief': one line per build; 'full': compiler output and paths.

# Architectures compiled when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset
# (e.g. a compile check on a CPU machine). Any arch the installed nvcc supports works.
DEFAULT_ARCH_LIST = '8.0'

_MARKER = 'plugin.json'
_loaded = {}   # (module_name, digest) -> module
_failed = {}   # (module_name, digest) -> PluginError
_warned = set()  # op names that already warned about their fallback


class PluginError(RuntimeError):
    """A plugin cannot be built or loaded. `reason` is one line; `hint` says how to fix it."""

    def __init__(self, reason, hint='', log_path=None):
        self.reason = reason
        self.hint = hint
        self.log_path = log_path
        msg = reason + (f'. Fix: {hint}' if hint else '') + (f' (build log: {log_path})' if log_path else '')
        super().__init__(msg)


class CustomOpFallbackWarning(UserWarning):
    """An op runs its slower reference path because its plugin is unavailable."""


def _print(level, msg):
    order = {'none': 0, 'brief': 1, 'full': 2}
    if order.get(verbosity, 1) >= order[level]:
        print(msg, flush=True)


def _one_line(text, limit=200):
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


# Toolchain discovery.

def _cpp_ext():
    import torch.utils.cpp_extension as cpp_extension  # noqa: deferred so importing ops stays cheap
    return cpp_extension


def _has_cuda_headers(home):
    return bool(home) and os.path.isfile(os.path.join(home, 'include', 'cuda_runtime.h'))


def _nvcc_path(home):
    return os.path.join(home, 'bin', 'nvcc.exe' if os.name == 'nt' else 'nvcc')


def resolve_cuda_home():
    """Return a usable CUDA toolkit root or None.

    torch guesses CUDA_HOME from `which nvcc`, which is wrong when nvcc is a wrapper script
    (e.g. /usr/local/bin/nvcc exec'ing the real toolkit). An explicit CUDA_HOME/CUDA_PATH
    is respected as given; otherwise the first candidate with nvcc and headers wins.
    """
    cpp_extension = _cpp_ext()
    explicit = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    if explicit:
        return explicit
    candidates = [cpp_extension.CUDA_HOME, '/usr/local/cuda']
    nvcc = shutil.which('nvcc')
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in candidates:
        if home and os.path.isfile(_nvcc_path(home)) and _has_cuda_headers(home):
            return home
    return cpp_extension.CUDA_HOME


def nvcc_version(home):
    """'major.minor' of the nvcc under `home`, or None when it cannot be run."""
    try:
        out = subprocess.run([_nvcc_path(home), '--version'], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'release (\d+)\.(\d+)', out)
    return f'{m.group(1)}.{m.group(2)}' if m else None


def _ensure_ninja():
    cpp_extension = _cpp_ext()
    if cpp_extension.is_ninja_available():
        return
    # `pip install ninja` puts the binary next to the interpreter, which is not on PATH
    # when a venv's python is run without activating the venv.
    bindir = os.path.dirname(sys.executable)
    if os.path.isfile(os.path.join(bindir, 'ninja')) or os.path.isfile(os.path.join(bindir, 'ninja.exe')):
        os.environ['PATH'] = bindir + os.pathsep + os.environ.get('PATH', '')
        if cpp_extension.is_ninja_available():
            return
    raise PluginError('ninja is not installed', 'pip install ninja')


def cuda_arch_list():
    """The TORCH_CUDA_ARCH_LIST a build will use (part of the cache key)."""
    env = os.environ.get('TORCH_CUDA_ARCH_LIST')
    if env:
        return env
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return 'devices:' + ';'.join(f'{a}.{b}' for a, b in caps)
    return DEFAULT_ARCH_LIST


def _check_cuda_toolchain():
    """Raise PluginError with a precise reason when CUDA sources cannot be compiled here."""
    if torch.version.cuda is None:
        raise PluginError(f'this PyTorch ({torch.__version__}) was built without CUDA',
                          'install a CUDA build of PyTorch')
    home = resolve_cuda_home()
    want = torch.version.cuda
    if not home or not os.path.isfile(_nvcc_path(home)):
        raise PluginError(f'nvcc not found (CUDA_HOME={home!r})',
                          f'install a CUDA {want.split(".")[0]}.x toolkit and set CUDA_HOME to its root')
    if not _has_cuda_headers(home):
        raise PluginError(f'CUDA headers not found under CUDA_HOME={home!r}',
                          'set CUDA_HOME to the toolkit root that holds include/cuda_runtime.h')
    have = nvcc_version(home)
    if have is None:
        raise PluginError(f'cannot run {_nvcc_path(home)}', 'check the CUDA toolkit installation')
    if have.split('.')[0] != want.split('.')[0]:
        raise PluginError(f'nvcc {have} at {home} does not match the CUDA {want} PyTorch was built with',
                          f'set CUDA_HOME to a CUDA {want.split(".")[0]}.x toolkit '
                          f'(or install a PyTorch built for CUDA {have.split(".")[0]})')
    return home


# Cache key and locking.

def _resolve(paths, source_dir):
    out = []
    for p in paths or []:
        p = os.path.join(source_dir, p) if source_dir is not None else p
        out.append(os.path.abspath(p))
    return out


def build_digest(module_name, sources, headers=(), build_kwargs=None, arch_list=None):
    """Hash of every input that changes the built library; file *contents*, not paths."""
    h = hashlib.sha256()

    def add(tag, value):
        data = value if isinstance(value, bytes) else str(value).encode()
        h.update(f'{tag}:{len(data)}:'.encode())
        h.update(data)

    add('name', module_name)
    for path in list(sources) + list(headers):
        add('file', os.path.basename(path))
        with open(path, 'rb') as f:
            add('data', f.read())
    add('kwargs', repr(sorted((build_kwargs or {}).items())))
    add('torch', torch.__version__)
    add('cuda', torch.version.cuda)
    add('python', sys.implementation.cache_tag)
    add('platform', sys.platform)
    add('arch', arch_list if arch_list is not None else cuda_arch_list())
    return h.hexdigest()[:20]


def extensions_root():
    """Where builds are cached: $TORCH_EXTENSIONS_DIR or torch's default, under 'kdgan/'."""
    root = os.environ.get('TORCH_EXTENSIONS_DIR') or _cpp_ext().get_default_build_root()
    return os.path.join(root, 'kdgan')


@contextlib.contextmanager
def file_lock(path):
    """Exclusive inter-process lock held for the duration of the block."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'a+b') as f:
        if os.name == 'nt':
            import msvcrt
            import time
            while True:
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(0.5)
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _import_built(build_dir):
    with open(os.path.join(build_dir, _MARKER)) as f:
        meta = json.load(f)
    path = os.path.join(build_dir, meta['file'])
    spec = importlib.util.spec_from_file_location(meta['module'], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _scoped_env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _summarize_build_error(text):
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r'\berror\b', ln, re.IGNORECASE) and not ln.startswith('Error building extension'):
            ln = re.sub(r'(?:[A-Za-z]:)?[\\/]\S*[\\/]', '', ln)  # file names are enough; the log has paths
            return 'compile error: ' + _one_line(ln, 160)
    return 'build failed: ' + _one_line(lines[0] if lines else text, 160)



def get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Build (or reuse) and import a plugin; raise PluginError when that is impossible.

    Works without a GPU: the target architectures then come from TORCH_CUDA_ARCH_LIST or
    DEFAULT_ARCH_LIST. Extra keyword arguments go to torch.utils.cpp_extension.load.
    """
    sources = _resolve(sources, source_dir)
    headers = _resolve(headers, source_dir)
    for p in sources + headers:
        if not os.path.isfile(p):
            raise PluginError(f'plugin source missing: {p}', 'reinstall the package')
    names = [os.path.basename(p) for p in sources + headers]
    if len(set(names)) != len(names):
        raise PluginError(f'plugin {module_name}: source file names must be unique', '')

    with_cuda = any(p.endswith('.cu') for p in sources)
    arch = cuda_arch_list() if with_cuda else ''
    digest = build_digest(module_name, sources, headers, build_kwargs, arch)
    key = (module_name, digest)
    if key in _loaded:
        return _loaded[key]
    if key in _failed:
        raise _failed[key]

    root = extensions_root()
    final_dir = os.path.join(root, f'{module_name}-{digest}')
    try:
        module = _load_or_build(module_name, sources, headers, build_kwargs, with_cuda, arch, root, final_dir)
    except PluginError as e:
        _failed[key] = e
        raise
    _loaded[key] = module
    return module


def _load_or_build(module_name, sources, headers, build_kwargs, with_cuda, arch, root, final_dir):
    # Fast path: a finished build needs no compiler, no lock and no ninja.
    if os.path.isfile(os.path.join(final_dir, _MARKER)):
        try:
            module = _import_built(final_dir)
            _print('full', f'Loaded cached plugin {module_name} from {final_dir}')
            return module
        except Exception as e:  # stale or foreign build: rebuild below, under the lock
            _print('full', f'Cached plugin {final_dir} unusable ({_one_line(e)}); rebuilding')

    env = {}
    if with_cuda:
        home = _check_cuda_toolchain()
        _cpp_ext().CUDA_HOME = home  # torch reads its module global when it writes the ninja file
        env['CUDA_HOME'] = home
        if not arch.startswith('devices:'):
            env['TORCH_CUDA_ARCH_LIST'] = arch
    _ensure_ninja()

    with file_lock(final_dir + '.lock'):
        marker = os.path.join(final_dir, _MARKER)
        if os.path.isfile(marker):  # another process finished it while we waited
            try:
                return _import_built(final_dir)
            except Exception:
                stale = f'{final_dir}.stale-{uuid.uuid4().hex[:8]}'
                os.replace(final_dir, stale)
                shutil.rmtree(stale, ignore_errors=True)
        elif os.path.isdir(final_dir):  # leftover without a marker: not ours to trust
            shutil.rmtree(final_dir, ignore_errors=True)

        tmp_prefix = f'.tmp-{os.path.basename(final_dir)}-'
        for leftover in os.listdir(root):  # builds of this key happen only under this lock: these crashed
            if leftover.startswith(tmp_prefix):
                shutil.rmtree(os.path.join(root, leftover), ignore_errors=True)
        tmp_dir = os.path.join(root, f'{tmp_prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}')
        os.makedirs(tmp_dir)
        for p in sources + headers:
            shutil.copyfile(p, os.path.join(tmp_dir, os.path.basename(p)))
        _print('brief', f'Building plugin {module_name} (first use; cached in {final_dir})...')
        log_path = final_dir + '.log'
        try:
            with _scoped_env(**env), warnings.catch_warnings():
                if verbosity != 'full':
                    warnings.simplefilter('ignore')  # torch's minor-version and arch notices
                module = _cpp_ext().load(
                    name=module_name,
                    sources=[os.path.join(tmp_dir, os.path.basename(p)) for p in sources],
                    build_directory=tmp_dir,
                    verbose=(verbosity == 'full'),
                    **build_kwargs)
            with open(os.path.join(tmp_dir, _MARKER), 'w') as f:
                json.dump({'module': module.__name__, 'file': os.path.basename(module.__file__)}, f)
        except Exception as e:
            with open(log_path, 'w') as f:
                f.write(str(e))
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise PluginError(_summarize_build_error(e), 'see the build log; set custom_ops.verbosity = "full" '
                              'for the compiler command lines', log_path) from e
        os.replace(tmp_dir, final_dir)  # atomic: readers see all of it or nothing
        _print('brief', f'Built plugin {module_name}.')
        return module


def load_op_plugin(op_name, module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """get_plugin for an op that has a reference path: None plus one warning on failure."""
    try:
        return get_plugin(module_name, sources, headers=headers, source_dir=source_dir, **build_kwargs)
    except Exception as e:
        if op_name not in _warned:
            _warned.add(op_name)
            if isinstance(e, PluginError):
                detail = e.reason + (f'. Fix: {e.hint}' if e.hint else '') + (f' (log: {e.log_path})' if e.log_path else '')
            else:
                detail = _one_line(f'{type(e).__name__}: {e}')
            warnings.warn(f'{op_name}: CUDA plugin unavailable, using the slower reference path. Reason: {detail}',
                          CustomOpFallbackWarning, stacklevel=4)  # the caller of the op
        return None


KERNEL_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class OpPlugin:
    """The CUDA plugin of one op that also has a reference path.

    Built (or loaded from the cache) on the first call that needs it and tried
    only once per process, so a failed build costs one warning, not one per call.
    """

    def __init__(self, op_name, module_name, sources, headers=None, source_dir=None, **build_kwargs):
        self.op_name = op_name
        self.args = dict(module_name=module_name, sources=list(sources), headers=list(headers or []),
                         source_dir=source_dir, **build_kwargs)
        self.plugin = None
        self.tried = False

    def build(self):
        """Build/import now; raises PluginError. Needs no GPU (used by the compile check)."""
        return get_plugin(**self.args)

    def get(self):
        """The plugin, or None (after one warning) when it cannot be built."""
        if not self.tried:
            self.tried = True
            self.plugin = load_op_plugin(self.op_name, **self.args)
        return self.plugin

    def wants(self, x, impl):
        """Should this call try the kernel? Only for impl='cuda' on a CUDA tensor of a kernel dtype."""
        return impl == 'cuda' and x.device.type == 'cuda' and x.dtype in KERNEL_DTYPES
