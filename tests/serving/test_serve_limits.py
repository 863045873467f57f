"""The service and `predict` under hostile input: bounded decoding, EXIF, special files, options, host names and
slow clients."""


import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fashion_ensemble.cli import main
from fashion_ensemble.model import preprocess as pp
from fashion_ensemble.serving.serve import ServeConfig, create_app, timed_headers_protocol
from helpers import (
    garment_photo,
    multipart,
    one_line,
    png_bytes,
    post,
    serving,
)

# -- 1. one small request must not freeze the service, and decoding is bounded -----------------------------------------


def one_bit_bomb(side: int = 6300) -> bytes:
    """A 1-bit PNG of side² pixels (under the 40 MP limit) in a few KB: the work grows with pixels, not bytes."""
    return png_bytes(Image.new("1", (side, side), 1))


@pytest.mark.slow
def test_health_answers_while_pixel_bombs_are_decoded(tiny_run, monkeypatch):
    """A small body with many pixels is decoded off the event loop: /health answers while its decode is held
    (here by the test, so that nothing depends on how fast the machine decodes)."""
    bomb = one_bit_bomb()
    assert len(bomb) < 20_000  # a small body: the old code decoded bodies under 64 KiB on the event loop
    started, release = threading.Event(), threading.Event()
    real = pp.preprocess

    def held(*args, **kwargs):
        started.set()
        assert release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(pp, "preprocess", held)
    body, content_type = multipart({f"bomb{i}.png": bomb for i in range(2)})
    with serving(create_app(tiny_run, ServeConfig(max_files=8))) as url:
        answer = {}

        def send():
            answer["status"], answer["json"] = post(url + "/predict/batch", body, content_type)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        assert started.wait(60)  # a bomb is being decoded, and stays so until released
        for _ in range(3):
            with urllib.request.urlopen(url + "/health", timeout=30) as r:  # on the loop, it would hang here
                assert r.status == 200
        release.set()
        sender.join(120)
    assert answer["status"] == 200 and len(answer["json"]["results"]) == 2  # a blank image each: an error each


@pytest.mark.slow
def test_large_decodes_are_bounded_and_the_excess_gets_503(tiny_run, monkeypatch):
    running, peak, answered, lock = 0, 0, [], threading.Lock()
    release = threading.Event()
    real = pp.preprocess

    def held(*args, **kwargs):  # counts how many decodes run at once; each waits until the test releases them
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        assert release.wait(120)
        with lock:
            running -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pp, "preprocess", held)
    large = png_bytes(garment_photo(700, 700, box=(100, 100, 600, 400)))  # 490,000 pixels: over inline_pixels
    config = ServeConfig(max_decodes=2, max_waiting=2, inline_pixels=100_000)

    def send(_):
        status = post(url + "/predict", large, "image/png")[0]
        with lock:
            answered.append(status)
            if len(answered) == 6:  # the excess has been turned away while 2 decode and 2 wait: let them go
                release.set()
        return status

    with serving(create_app(tiny_run, config)) as url, ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(send, range(10)))
    assert peak == 2  # never more decodes at once than max_decodes, whatever arrives
    assert sorted(statuses) == [200] * 4 + [503] * 6  # 2 decoding + 2 queued; the other 6 told to retry


# -- 2. EXIF orientation ---------------------------------------------------------------------------------------------


def test_exif_orientation_is_applied():
    upright = garment_photo()  # 200 wide, 100 high: after preprocessing 28 wide, 14 high
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # stored as a phone stores a portrait shot
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    x = pp.preprocess(png_bytes(sideways, format="JPEG", exif=exif.tobytes()))
    rows, cols = np.nonzero(x > 128)
    assert cols.max() - cols.min() + 1 == 28 and rows.max() - rows.min() + 1 <= 15  # upright, as a browser shows it
    y = pp.preprocess(png_bytes(sideways, format="JPEG"))  # without the tag it stays sideways
    rows, cols = np.nonzero(y > 128)
    assert rows.max() - rows.min() + 1 == 28


# -- 8. predict on special files -------------------------------------------------------------------------------------


def test_special_and_huge_files_are_refused_and_the_rest_goes_on(tiny_run, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.png").write_bytes(png_bytes(garment_photo()))
    with open(folder / "huge.png", "wb") as f:  # sparse: no disk used, but too large to read
        f.truncate(pp.MAX_FILE_BYTES + 1)
    os.mkfifo(folder / "pipe.png")  # in a folder: skipped, not read (reading it would hang)
    fifo = tmp_path / "named.png"
    os.mkfifo(fifo)
    result = {}

    def predict():
        result["code"] = main(["predict", str(tiny_run), str(folder), str(fifo), "/dev/zero", "--json", "--quiet"])

    thread = threading.Thread(target=predict, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "predict hung on a special file"
    out, err = capsys.readouterr()
    records = {json.loads(line)["file"]: json.loads(line) for line in out.splitlines()}
    assert "label" in records[str(folder / "good.png")]  # the good file's answer is kept
    assert "more than the limit" in records[str(folder / "huge.png")]["error"]
    assert "not a regular file" in records[str(fifo)]["error"] and "not a regular file" in records["/dev/zero"]["error"]
    assert str(folder / "pipe.png") not in records and result["code"] == 1


# -- 9. smaller ones ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", [["--port", "99999"], ["--max-body-mb", "-1"], ["--max-megapixels", "0"]])
def test_serve_options_out_of_range_are_refused(tiny_run, option):
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "serve", str(tiny_run), *option],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "expected" in r.stderr and one_line(r.stderr)


def test_single_frame_formats_and_every_readable_suffix():
    spider = png_bytes(Image.fromarray(np.asarray(garment_photo().convert("L"), dtype=np.float32)), format="SPIDER")
    x = pp.preprocess(spider)  # was: "corrupt", from a seek(0) on a single-frame format
    assert x.shape == (28, 28) and x.max() > 128
    assert {".avif", ".jp2", ".png", ".jpg", ".webp"} <= set(pp.IMAGE_SUFFIXES)


def test_random_loads_the_test_images_once(tiny_run):
    calls = []

    def examples():
        calls.append(1)
        time.sleep(0.3)
        return np.zeros((5, 28, 28), np.uint8), np.arange(5)

    with serving(create_app(tiny_run, examples=examples)) as url, ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: urllib.request.urlopen(url + "/random", timeout=30).status, range(20)))
    assert statuses == [200] * 20 and len(calls) == 1


# -- 11. hosts and slow clients ----------------------------------------------------------------------------------------


def test_only_the_service_s_own_host_names_are_answered(tiny_run):
    app = create_app(tiny_run, ServeConfig(allowed_hosts=("shop.example",)))
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding
        assert c.get("/health", headers={"host": "shop.example"}).status_code == 200
        assert c.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200


@contextlib.contextmanager
def raw_connection(url):
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        yield s


@pytest.mark.slow
def test_slow_headers_and_bodies_are_cut_off(tiny_run):
    app = create_app(tiny_run, ServeConfig(header_timeout_s=0.5, body_timeout_s=0.5))
    with serving(app, http=timed_headers_protocol(0.5)) as url:
        with raw_connection(url) as s:  # headers never finished: closed
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            time.sleep(1.5)
            assert s.recv(1024) == b""
        with raw_connection(url) as s:  # a body that stalls: 408
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 1000\r\n\r\n" + b"x" * 10)
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer
        with urllib.request.urlopen(url + "/health", timeout=10) as r:  # and it keeps serving
            assert r.status == 200
