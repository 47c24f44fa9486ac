"""Generic helpers shared by the harness and its tools.

Names here are part of the StyleGAN2-ADA contract: pickles refer to
`dnnlib.util.EasyDict`, and option dicts name classes that are built with
`construct_class_by_name`.
"""
import glob
import hashlib
import importlib
import inspect
import io
import os
import re
import sys
import tempfile
import time
import types
import urllib.parse
import urllib.request
import uuid
from typing import Any, BinaryIO, List, Optional, Tuple, Union

# EasyDict


class EasyDict(dict):
    """A dict whose keys also read and write as attributes (`opts.batch`).

    Stays a plain dict subclass so that it pickles by reference to
    `dnnlib.util.EasyDict` and JSON-serialises like a dict.
    """

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails. A missing key must raise AttributeError,
        # not KeyError, or getattr(obj, name, default), copy and pickle break.
        if name not in self:
            raise AttributeError(name)
        return self[name]

    def __delattr__(self, name: str) -> None:
        if name not in self:
            raise AttributeError(name)
        del self[name]

    def __setattr__(self, name: str, value: Any) -> None:
        # Attribute writes are item writes; the instance __dict__ stays empty.
        self[name] = value


# Logger


class _TeeStream:
    """Writes to an original stream and to the logger's file."""

    def __init__(self, logger: "Logger", stream):
        self._logger = logger
        self._stream = stream

    def write(self, text) -> int:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        if len(text) == 0:
            return 0
        if self._logger.file is not None:
            self._logger.file.write(text)
        if self._stream is not None:
            self._stream.write(text)
        if self._logger.should_flush:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._logger.file is not None and not self._logger.file.closed:
            self._logger.file.flush()
        if self._stream is not None:
            self._stream.flush()

    def __getattr__(self, name):
        # isatty(), fileno(), encoding, ... come from the real stream.
        return getattr(self._stream, name)


class Logger:
    """Copies everything printed to stdout and stderr into a log file.

    Run folders must be self-describing, so the training script keeps a
    `log.txt` of its console output. Usable as a context manager; `close()`
    puts the original streams back.
    """

    def __init__(self, file_name: Optional[str] = None, file_mode: str = "w", should_flush: bool = True):
        # The streams being replaced, restored by close().
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.should_flush = should_flush
        self.file = None if file_name is None else open(file_name, file_mode, encoding="utf-8")
        self._closed = False
        self._tee_out, self._tee_err = _TeeStream(self, self.stdout), _TeeStream(self, self.stderr)
        sys.stdout, sys.stderr = self._tee_out, self._tee_err

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.close()

    def write(self, text) -> int:
        """Kept for callers that write to the logger directly (goes to stdout)."""
        return self._tee_out.write(text)

    def flush(self) -> None:
        self._tee_out.flush()
        self._tee_err.flush()

    def close(self) -> None:
        """Flush, restore the original streams and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        # Only undo our own redirection, so nested loggers unwind sensibly.
        if sys.stdout is self._tee_out:
            sys.stdout = self.stdout
        if sys.stderr is self._tee_err:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None


# Small formatting helpers


def format_time(seconds) -> str:
    """Compact human-readable duration for status lines: '5s', '12m 04s', '3h 05m', '2d 03h'."""
    total = int(round(float(seconds)))
    # (unit length, unit symbol, next smaller unit length, its symbol), largest first.
    for unit, name, sub, sub_name in _TIME_UNITS:
        if total >= unit:
            return "{}{} {:02}{}".format(total // unit, name, total % unit // sub, sub_name)
    return "{}s".format(total)


_TIME_UNITS = ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s"))


def ask_yes_no(question: str) -> bool:
    """Ask a yes/no question on the console until answered."""
    while True:
        answer = input("{} [y/n] ".format(question)).strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


# Objects by dotted name (how option dicts name classes and functions)

_NAME_PREFIXES = {"np.": "numpy.", "tf.": "tensorflow."}


def _expand_name(name: str) -> str:
    for short, full in _NAME_PREFIXES.items():
        if name.startswith(short):
            return full + name[len(short):]
    return name


def _is_missing_module_error(err: ImportError, module_name: str) -> bool:
    """True when `err` says `module_name` (or a parent) does not exist, as opposed
    to the module existing but failing inside its own imports."""
    missing = getattr(err, "name", None)
    if not isinstance(err, ModuleNotFoundError) or missing is None:
        return False
    return module_name == missing or module_name.startswith(missing + ".")


def _get_attr_chain(obj: Any, attrs: List[str]) -> Any:
    for attr in attrs:
        obj = getattr(obj, attr)
    return obj


def get_module_from_obj_name(obj_name: str) -> Tuple[types.ModuleType, str]:
    """Split a dotted name into (imported module, remaining attribute path).

    Tries every split, longest module first, so 'a.b.C.method' works whether
    'a.b' or 'a.b.C' is the module. A module that exists but fails to import
    raises its own error rather than being silently skipped.
    """
    if not isinstance(obj_name, str) or not obj_name:
        raise ValueError("Expected a dotted object name, got {!r}".format(obj_name))
    obj_name = _expand_name(obj_name)
    parts = obj_name.split(".")
    tried = []
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        attrs = parts[split:]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            if _is_missing_module_error(err, module_name):
                tried.append("module '{}' (not found)".format(module_name))
                continue
            raise
        try:
            _get_attr_chain(module, attrs)
        except AttributeError:
            tried.append("'{}' in module '{}' (no such attribute)".format(".".join(attrs), module_name))
            continue
        return module, ".".join(attrs)
    raise ImportError("Cannot find object '{}'. Tried: {}".format(obj_name, "; ".join(tried)), name=obj_name)


def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    """Follow a dotted attribute path inside `module` ('' is the module itself)."""
    if obj_name == "":
        return module
    return _get_attr_chain(module, obj_name.split("."))


def get_obj_by_name(name: str) -> Any:
    """Find a Python object by its fully qualified dotted name."""
    module, obj_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, obj_name)


def call_func_by_name(*args, func_name: Optional[str] = None, **kwargs) -> Any:
    """Look up a function by dotted name and call it with the given arguments."""
    if func_name is None:
        raise ValueError("call_func_by_name() needs func_name")
    func_obj = get_obj_by_name(func_name)
    if not callable(func_obj):
        raise TypeError("'{}' is not callable".format(func_name))
    return func_obj(*args, **kwargs)


def construct_class_by_name(*args, class_name: Optional[str] = None, **kwargs) -> Any:
    """Look up a class by dotted name and instantiate it (how presets build everything)."""
    if class_name is None:
        raise ValueError("construct_class_by_name() needs class_name")
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_module_dir_by_obj_name(obj_name: str) -> str:
    """Folder of the source file of the module that holds `obj_name`."""
    return os.path.dirname(inspect.getfile(get_module_from_obj_name(obj_name)[0]))


def is_top_level_function(obj: Any) -> bool:
    """True for a plain function reachable by name from its module's top level."""
    return callable(obj) and getattr(sys.modules.get(obj.__module__), obj.__name__, None) is obj


def get_top_level_function_name(obj: Any) -> str:
    """Dotted name of a top-level function, resolving `__main__` to the script's module name."""
    if not is_top_level_function(obj):
        raise ValueError("{!r} is not a top-level function".format(obj))
    module = obj.__module__
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None) or "__main__"
        module = os.path.splitext(os.path.basename(main_file))[0]
    return module + "." + obj.__name__


# URLs and the download cache

_dnnlib_cache_dir: Optional[str] = None

# Seconds before the first retry of a failed download; doubles per retry, capped.
# A module variable (not an argument) keeps open_url()'s contract signature; tests set it to 0.
RETRY_DELAY = 1.0
RETRY_DELAY_MAX = 10.0
# (connect, read) timeouts for each request, so a dead server cannot hang a run.
REQUEST_TIMEOUT = (20, 120)


def set_cache_dir(path: Optional[str]) -> None:
    """Override where downloads are cached (takes precedence over the environment)."""
    global _dnnlib_cache_dir
    _dnnlib_cache_dir = path


def make_cache_dir_path(*paths: str) -> str:
    """Path inside the cache: set_cache_dir(), else $DNNLIB_CACHE_DIR, else ~/.cache/dnnlib."""
    if _dnnlib_cache_dir is not None:
        return os.path.join(_dnnlib_cache_dir, *paths)
    if os.environ.get("DNNLIB_CACHE_DIR"):
        return os.path.join(os.environ["DNNLIB_CACHE_DIR"], *paths)
    for var in ("HOME", "USERPROFILE"):
        if os.environ.get(var):
            return os.path.join(os.environ[var], ".cache", "dnnlib", *paths)
    # No home at all (some containers/services): fall back to the temp folder.
    return os.path.join(tempfile.gettempdir(), ".cache", "dnnlib", *paths)


def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """True for 'scheme://host/...' strings; file:// URLs only when allowed."""
    if not isinstance(obj, str) or "://" not in obj:
        return False
    try:
        res = urllib.parse.urlparse(obj)
    except ValueError:
        return False
    if not res.scheme or not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*", res.scheme):
        return False
    if res.scheme.lower() == "file":
        return bool(allow_file_urls) and bool(res.path or res.netloc)
    return bool(res.netloc)


def _file_url_to_path(url: str) -> str:
    res = urllib.parse.urlparse(url)
    path = urllib.request.url2pathname(res.path)
    if res.netloc and res.netloc not in ("", "localhost"):
        # file://server/share/x -> UNC path on Windows; elsewhere keep it as given.
        path = "//" + res.netloc + path
    return path


def _safe_file_name(url: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    name = re.sub(r"[^0-9a-zA-Z._-]", "_", name)
    return name[:128]


def _google_drive_confirm_url(url: str, html: str) -> Optional[str]:
    """Google Drive answers large files with a 'cannot scan for viruses' page; find the
    link that confirms the download, if this is one."""
    if "drive.google.com" not in url and "drive.usercontent.google.com" not in url:
        return None
    m = re.search(r'href="(/uc\?export=download[^"]+)"', html)
    if m:
        return urllib.parse.urljoin(url, m.group(1).replace("&amp;", "&"))
    m = re.search(r"confirm=([0-9A-Za-z_-]+)", html)
    if m:
        sep = "&" if "?" in url else "?"
        return url + sep + "confirm=" + m.group(1)
    return None


class _FinalDownloadError(IOError):
    """A failure that retrying cannot fix (e.g. 404)."""


class _RedirectDownload(IOError):
    """Raised when the server asks for a different URL (Drive confirmation)."""

    def __init__(self, url: str):
        super().__init__("Google Drive download confirmation")
        self.url = url


def _download(session, url: str, out, verbose: bool) -> None:
    """Fetch `url` into the binary file object `out`, or raise: _FinalDownloadError when
    retrying is pointless, _RedirectDownload for a Drive confirmation, IOError otherwise."""
    import requests  # lazy: only downloads need it

    with session.get(url, stream=True, timeout=REQUEST_TIMEOUT) as res:
        try:
            res.raise_for_status()
        except requests.HTTPError as err:
            status = res.status_code
            if 400 <= status < 500 and status not in (408, 425, 429):
                raise _FinalDownloadError(str(err)) from err
            raise
        content_type = res.headers.get("Content-Type", "").lower()
        if "text/html" in content_type:
            # Never cache an HTML page in place of a binary asset.
            html = res.text
            confirm = _google_drive_confirm_url(url, html)
            if confirm is not None:
                raise _RedirectDownload(confirm)
            raise IOError("server returned an HTML page instead of the file (an error or login page?)")
        # Content-Length counts encoded bytes; iter_content yields decoded ones.
        encoded = res.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        total = 0 if encoded else int(res.headers.get("Content-Length") or 0)
        done = 0
        last_print = 0.0
        for chunk in res.iter_content(chunk_size=1 << 20):
            if not chunk:
                continue
            out.write(chunk)
            done += len(chunk)
            now = time.time()
            if verbose and now - last_print > 0.5:
                last_print = now
                _print_progress(url, done, total)
        if done == 0:
            raise IOError("no data received")
        if total and done != total:
            raise IOError("incomplete download: {} of {} bytes".format(done, total))
        if verbose:
            _print_progress(url, done, total, end=True)


def _print_progress(url: str, done: int, total: int, end: bool = False) -> None:
    size = "{:.1f} MB".format(done / 2**20)
    if total:
        size += " / {:.1f} MB".format(total / 2**20)
    sys.stderr.write("\rDownloading {} ... {}{}".format(url, size, " done\n" if end else ""))
    sys.stderr.flush()


def open_url(url_or_path: Union[str, "os.PathLike[str]"], cache_dir: Optional[str] = None, num_attempts: int = 10,
             verbose: bool = True, return_filename: bool = False, cache: bool = True) -> Union[BinaryIO, str]:
    """Open a local path, file:// URL or http(s) URL as a binary file object.

    Downloads are cached under `<cache_dir>/<md5 of URL>_<name>` so that metric
    detectors and pretrained networks are fetched once; a machine without
    network can use them by placing the file at that path.
    """
    if num_attempts < 1:
        raise ValueError("num_attempts must be at least 1")
    if return_filename and not cache:
        raise ValueError("return_filename=True needs cache=True (there is no file otherwise)")

    local = _local_file(url_or_path)
    if local is not None:
        return local if return_filename else open(local, "rb")
    url = str(url_or_path)
    if cache_dir is None:
        cache_dir = make_cache_dir_path("downloads")
    url_md5 = hashlib.md5(url.encode("utf-8")).hexdigest()
    if cache:
        hits = sorted(glob.glob(os.path.join(glob.escape(cache_dir), url_md5 + "_*")))
        if hits:
            return hits[0] if return_filename else open(hits[0], "rb")

    target = _DownloadTarget(cache_dir, url_md5 + "_" + _safe_file_name(url)) if cache else None
    fetched, last_err = _fetch_with_retries(url, target, num_attempts, verbose)
    if fetched is None:
        where = os.path.join(cache_dir, url_md5 + "_" + _safe_file_name(url))
        raise IOError(
            "Could not download '{url}' ({err}). Without network access, fetch the file elsewhere and either "
            "place it at '{path}' (the cache; set DNNLIB_CACHE_DIR to move it) or pass its local path instead "
            "of the URL.".format(url=url, err=last_err, path=where))
    if isinstance(fetched, str):
        return fetched if return_filename else open(fetched, "rb")
    return fetched


def _local_file(url_or_path) -> Optional[str]:
    """The file a path or file:// URL names; None for an http(s) URL (raises for other schemes)."""
    text = str(url_or_path)
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        return url_or_path
    if text.lower().startswith("file://"):
        return _file_url_to_path(text)
    if not is_url(text) or urllib.parse.urlparse(text).scheme.lower() not in ("http", "https"):
        raise IOError("Unsupported URL '{}': expected a local path, file://, http:// or https://".format(text))
    return None


class _DownloadTarget:
    """Where a cached download goes: written to a unique temporary name, renamed into
    place only when complete, so readers (other ranks) never see a partial file."""

    def __init__(self, cache_dir: str, file_name: str):
        self.cache_dir = cache_dir
        self.final = os.path.join(cache_dir, file_name)
        self.partial: Optional[str] = None

    def open(self) -> BinaryIO:
        os.makedirs(self.cache_dir, exist_ok=True)
        self.partial = os.path.join(self.cache_dir, "tmp_" + uuid.uuid4().hex + "_" + os.path.basename(self.final))
        return open(self.partial, "wb")

    def commit(self) -> str:
        os.replace(self.partial, self.final)
        self.partial = None
        return self.final

    def discard(self) -> None:
        if self.partial is not None and os.path.exists(self.partial):
            os.remove(self.partial)
        self.partial = None


def _fetch_with_retries(url: str, target: Optional["_DownloadTarget"], num_attempts: int,
                        verbose: bool) -> Tuple[Union[str, BinaryIO, None], Optional[BaseException]]:
    """Download with exponential back-off. Returns (cached path, or an in-memory file when
    `target` is None, or None on failure; the last error)."""
    import requests  # lazy: only downloads need it

    fetch_url = url
    last_err: Optional[BaseException] = None
    with requests.Session() as session:
        for attempt in range(num_attempts):
            out = target.open() if target is not None else io.BytesIO()
            try:
                try:
                    _download(session, fetch_url, out, verbose)
                finally:
                    if target is not None:
                        out.close()
            except _RedirectDownload as redirect:
                fetch_url, last_err = redirect.url, redirect
            except _FinalDownloadError as err:
                last_err = err
            except (KeyboardInterrupt, SystemExit):
                if target is not None:
                    target.discard()
                raise
            except Exception as err:  # network errors, 5xx, HTML pages, truncation
                last_err = err
            else:
                if target is None:
                    out.seek(0)
                    return out, None
                return target.commit(), None
            if target is not None:
                target.discard()
            if isinstance(last_err, _FinalDownloadError):
                break  # e.g. 404: say nothing more, the caller's error names it
            if verbose:
                sys.stderr.write("\nDownload of {} failed (attempt {}/{}): {}\n".format(
                    url, attempt + 1, num_attempts, last_err))
            _back_off(attempt, num_attempts, last_err)
    return None, last_err


def _back_off(attempt: int, num_attempts: int, last_err: Optional[BaseException]) -> None:
    """Sleep before the next try; a Drive confirmation redirect is retried at once."""
    if attempt + 1 >= num_attempts or isinstance(last_err, _RedirectDownload):
        return
    delay = min(RETRY_DELAY * (2 ** attempt), RETRY_DELAY_MAX)
    if delay > 0:
        time.sleep(delay)
