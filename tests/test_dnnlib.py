"""dnnlib.util: EasyDict, name lookup, Logger, format_time, cache paths and open_url."""
import hashlib
import http.server
import os
import pickle
import pickletools
import sys
import threading
import urllib.request

import pytest

import dnnlib
from dnnlib import util


# EasyDict


def test_easydict_attribute_access_and_pickle():
    d = dnnlib.EasyDict(a=1, b=dnnlib.EasyDict(c=2))
    d.x = 5
    assert d["x"] == 5 and d.a == 1 and d.b.c == 2
    del d.a
    assert "a" not in d
    with pytest.raises(AttributeError):
        _ = d.missing
    assert getattr(d, "missing", "default") == "default"
    with pytest.raises(AttributeError):
        del d.missing

    data = pickle.dumps(d)
    # Pickles must name the class by its contract path.
    opcodes = [arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)]
    assert "dnnlib.util" in opcodes and "EasyDict" in opcodes
    back = pickle.loads(data)
    assert type(back) is dnnlib.EasyDict and back == d and back.b.c == 2
    assert dnnlib.util.EasyDict is dnnlib.EasyDict


def test_easydict_deepcopy():
    import copy
    d = dnnlib.EasyDict(a=[1, 2])
    e = copy.deepcopy(d)
    e.a.append(3)
    assert d.a == [1, 2] and type(e) is dnnlib.EasyDict


# Names


def test_get_obj_by_name_splits_and_prefixes():
    import numpy as np
    import os.path as osp
    assert util.get_obj_by_name("np.float32") is np.float32
    assert util.get_obj_by_name("numpy.random.RandomState") is np.random.RandomState
    # Module 'os.path' exists, and so does attribute chain os -> path -> join.
    assert util.get_obj_by_name("os.path.join") is osp.join
    # Attribute chain through a class.
    assert util.get_obj_by_name("dnnlib.util.EasyDict.__getattr__") is dnnlib.EasyDict.__getattr__
    module, rest = util.get_module_from_obj_name("dnnlib.util.EasyDict")
    assert module is util and rest == "EasyDict"
    assert util.get_obj_by_name("dnnlib") is dnnlib


def test_get_obj_by_name_error_names_what_was_tried():
    with pytest.raises(ImportError) as info:
        util.get_obj_by_name("dnnlib.util.NoSuchThing")
    message = str(info.value)
    assert "dnnlib.util.NoSuchThing" in message
    assert "NoSuchThing' in module 'dnnlib.util'" in message
    with pytest.raises(ImportError, match="no_such_top_module"):
        util.get_obj_by_name("no_such_top_module.x")


def test_get_obj_by_name_does_not_mask_broken_modules(tmp_path, monkeypatch):
    # A module that exists but fails on its own import must report that failure.
    (tmp_path / "kd_broken_mod.py").write_text("import kd_really_missing_dependency\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="kd_really_missing_dependency"):
        util.get_obj_by_name("kd_broken_mod.X")


def test_call_and_construct_by_name(tmp_path):
    assert util.call_func_by_name(3, -7, func_name="builtins.max") == 3
    d = util.construct_class_by_name(class_name="dnnlib.util.EasyDict", a=1)
    assert type(d) is dnnlib.EasyDict and d.a == 1
    with pytest.raises(ValueError):
        util.construct_class_by_name(a=1)
    with pytest.raises(TypeError):
        util.call_func_by_name(func_name="math.pi")
    assert util.get_module_dir_by_obj_name("dnnlib.util.EasyDict") == os.path.dirname(util.__file__)


def test_top_level_function_name():
    assert util.is_top_level_function(util.format_time)
    assert util.get_top_level_function_name(util.format_time) == "dnnlib.util.format_time"
    assert not util.is_top_level_function(lambda: 0)


# Formatting and logging


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (5, "5s"), (59.4, "59s"), (60, "1m 00s"), (724, "12m 04s"),
    (3 * 3600 + 5 * 60 + 7, "3h 05m"), (2 * 86400 + 3 * 3600, "2d 03h"),
])
def test_format_time(seconds, text):
    assert util.format_time(seconds) == text


def test_logger_tees_and_restores(tmp_path, capsys):
    log_path = tmp_path / "log.txt"
    out_before, err_before = sys.stdout, sys.stderr
    with util.Logger(file_name=str(log_path), file_mode="w") as logger:
        assert sys.stdout is not out_before
        print("hello stdout")
        print("hello stderr", file=sys.stderr)
        sys.stdout.write(b"bytes too\n")
        assert logger.file is not None
    assert sys.stdout is out_before and sys.stderr is err_before
    text = log_path.read_text()
    assert "hello stdout\n" in text and "hello stderr\n" in text and "bytes too\n" in text
    captured = capsys.readouterr()
    assert "hello stdout" in captured.out and "hello stderr" in captured.err

    # Append mode keeps earlier content.
    logger = util.Logger(file_name=str(log_path), file_mode="a", should_flush=False)
    print("second run")
    logger.close()
    logger.close()  # idempotent
    assert log_path.read_text().startswith(text) and log_path.read_text().endswith("second run\n")


# URLs and cache


def test_is_url():
    assert util.is_url("https://example.com/a.pkl")
    assert util.is_url("http://127.0.0.1:8000/x")
    assert not util.is_url("/tmp/a.pkl")
    assert not util.is_url("C:\\data\\a.pkl")
    assert not util.is_url(123)
    assert not util.is_url("file:///tmp/a.pkl")
    assert util.is_url("file:///tmp/a.pkl", allow_file_urls=True)


def test_make_cache_dir_path(monkeypatch, tmp_path):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "c"))
    assert util.make_cache_dir_path("downloads", "x") == os.path.join(str(tmp_path / "c"), "downloads", "x")
    monkeypatch.delenv("DNNLIB_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert util.make_cache_dir_path("d") == os.path.join(str(tmp_path / "home"), ".cache", "dnnlib", "d")
    monkeypatch.delenv("HOME")
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "profile"))
    assert util.make_cache_dir_path() == os.path.join(str(tmp_path / "profile"), ".cache", "dnnlib")
    monkeypatch.delenv("USERPROFILE")
    assert util.make_cache_dir_path("d").endswith(os.path.join(".cache", "dnnlib", "d"))
    util.set_cache_dir(str(tmp_path / "explicit"))
    try:
        assert util.make_cache_dir_path("d") == os.path.join(str(tmp_path / "explicit"), "d")
    finally:
        util.set_cache_dir(None)


def test_open_url_local_and_file_url(tmp_path):
    path = tmp_path / "some file.bin"
    path.write_bytes(b"\x00\x01payload")
    with util.open_url(str(path)) as f:
        assert f.read() == b"\x00\x01payload"
    assert util.open_url(str(path), return_filename=True) == str(path)
    file_url = "file://" + urllib.request.pathname2url(str(path))
    assert "%20" in file_url  # percent-decoding is exercised
    with util.open_url(file_url) as f:
        assert f.read() == b"\x00\x01payload"
    assert os.path.samefile(util.open_url(file_url, return_filename=True), str(path))
    with pytest.raises(ValueError):
        util.open_url(str(path), return_filename=True, cache=False)


class _Server:
    """A local HTTP server in a thread, counting requests per path."""

    def __init__(self, routes):
        self.routes = routes  # path -> (status, content_type, body)
        self.hits = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                status, content_type, body = server.routes.get(self.path, (404, "text/plain", b"not found"))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.base = "http://127.0.0.1:{}".format(self.httpd.server_address[1])

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(util, "RETRY_DELAY", 0.0)


def test_open_url_http_downloads_once_and_caches(tmp_path, fast_retries, capsys):
    body = os.urandom(3 << 20)  # several chunks
    cache_dir = tmp_path / "cache"
    with _Server({"/nets/model.pkl": (200, "application/octet-stream", body)}) as server:
        url = server.base + "/nets/model.pkl"
        with util.open_url(url, cache_dir=str(cache_dir)) as f:
            assert f.read() == body
        assert server.hits["/nets/model.pkl"] == 1
        assert "Downloading " + url in capsys.readouterr().err

        expected = cache_dir / (hashlib.md5(url.encode()).hexdigest() + "_model.pkl")
        assert expected.read_bytes() == body
        assert sorted(os.listdir(cache_dir)) == [expected.name]  # no temp files left

        # Second call: served from the cache, the server is not contacted.
        assert util.open_url(url, cache_dir=str(cache_dir), return_filename=True) == str(expected)
        with util.open_url(url, cache_dir=str(cache_dir), verbose=False) as f:
            assert f.read() == body
        assert server.hits["/nets/model.pkl"] == 1

        # cache=False always downloads and writes nothing.
        with util.open_url(url, cache_dir=str(tmp_path / "nocache"), cache=False, verbose=False) as f:
            assert f.read() == body
        assert server.hits["/nets/model.pkl"] == 2
        assert not (tmp_path / "nocache").exists()


def test_open_url_uses_dnnlib_cache_dir(tmp_path, fast_retries, monkeypatch):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "envcache"))
    with _Server({"/a.pt": (200, "application/octet-stream", b"abc")}) as server:
        filename = util.open_url(server.base + "/a.pt", verbose=False, return_filename=True)
    assert os.path.dirname(filename) == str(tmp_path / "envcache" / "downloads")
    assert open(filename, "rb").read() == b"abc"


def test_open_url_retries_then_fails_clearly(tmp_path, fast_retries):
    cache_dir = tmp_path / "cache"
    with _Server({"/flaky.pt": (503, "text/plain", b"busy"),
                  "/page.pt": (200, "text/html; charset=utf-8", b"<html>quota exceeded</html>")}) as server:
        url = server.base + "/flaky.pt"
        with pytest.raises(IOError) as info:
            util.open_url(url, cache_dir=str(cache_dir), num_attempts=3, verbose=False)
        assert server.hits["/flaky.pt"] == 3  # bounded attempts
        message = str(info.value)
        url_md5 = hashlib.md5(url.encode()).hexdigest()
        assert url in message and os.path.join(str(cache_dir), url_md5 + "_flaky.pt") in message
        assert "local path" in message

        # An HTML page is an error, and must never end up in the cache.
        with pytest.raises(IOError, match="HTML"):
            util.open_url(server.base + "/page.pt", cache_dir=str(cache_dir), num_attempts=2, verbose=False)
        assert server.hits["/page.pt"] == 2

        # Client errors are final: one request only.
        with pytest.raises(IOError, match="404"):
            util.open_url(server.base + "/missing.pt", cache_dir=str(cache_dir), num_attempts=5, verbose=False)
        assert server.hits["/missing.pt"] == 1
    assert not cache_dir.exists() or os.listdir(cache_dir) == []

    # Nothing listening at all.
    with pytest.raises(IOError, match="Could not download"):
        util.open_url(server.base + "/gone.pt", cache_dir=str(cache_dir), num_attempts=2, verbose=False)


def test_open_url_manual_placement_is_honoured(tmp_path):
    # The error message's advice works: a file placed at the cache path is used without network.
    url = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    placed = cache_dir / (hashlib.md5(url.encode()).hexdigest() + "_inception-2015-12-05.pt")
    placed.write_bytes(b"weights")
    with util.open_url(url, cache_dir=str(cache_dir)) as f:
        assert f.read() == b"weights"
