"""A bounded load test of the HTTP service: `requests` POST /predict, `concurrency` at a time, each over its own
keep-alive connection. The client is raw HTTP/1.1 on asyncio streams, so that it takes little of the CPU that the
server shares with it on one machine (an httpx client costs several times more per request)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit

import numpy as np

from fashion_ensemble.config.classes import CLASSES
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.preprocess import as_photo, to_png

BOUNDARY = "fashion-ensemble-load-test"


def multipart(data: bytes, filename: str, content_type: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def payloads(images: np.ndarray, photos: bool = False) -> list[bytes]:
    """Multipart bodies: the test images as PNGs of the model's input size, or as 224×224 RGB JPEG photos on white
    (`photos`)."""
    if photos:
        return [multipart(as_photo(im), f"{i}.jpg", "image/jpeg") for i, im in enumerate(images)]
    return [multipart(to_png(im), f"{i}.png", "image/png") for i, im in enumerate(images)]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), 0))
    return status, await reader.readexactly(length)


async def _load(url: str, bodies: list[bytes], labels: np.ndarray | None, requests: int, concurrency: int,
                classes=CLASSES) -> dict:
    parts = urlsplit(url)
    host, port, path = parts.hostname, parts.port or 80, (parts.path.rstrip("/") or "") + "/predict"
    counter = itertools.count()
    latencies, errors, correct = [], [], []

    async def worker():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (i := next(counter)) < requests:
                body = bodies[i % len(bodies)]
                head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
                        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode()
                t0 = time.perf_counter()
                writer.write(head + body)
                await writer.drain()
                status, answer = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"{status}: {answer[:200].decode(errors='replace')}")
                elif labels is not None:
                    correct.append(json.loads(answer)["label"] == classes[int(labels[i % len(bodies)])])
        finally:
            writer.close()

    t0 = time.perf_counter()
    results = await asyncio.gather(*(worker() for _ in range(concurrency)), return_exceptions=True)
    seconds = time.perf_counter() - t0
    errors += [repr(r) for r in results if isinstance(r, BaseException)]
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies), "concurrency": concurrency, "seconds": round(seconds, 3),
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "errors": len(errors), "first_errors": errors[:3],
        "accuracy": round(float(np.mean(correct)), 4) if correct else None,
    }


def load_test(url: str, images: np.ndarray, labels: np.ndarray | None = None, requests: int = 2000,
              concurrency: int = 16, photos: bool = False, warmup: int = 32, classes=CLASSES) -> dict:
    """POST `requests` images (cycled) to `url`/predict, `concurrency` at a time. Returns requests/s, latency p50/p99
    (ms), the error count and, with `labels` (indices into `classes`), the accuracy of the answers."""
    bodies = payloads(images[:requests], photos)  # cycled when there are fewer images than requests
    labels = None if labels is None else labels[:requests]
    asyncio.run(_load(url, bodies, None, warmup, min(concurrency, warmup)))  # first calls pay for lazy set-up
    return asyncio.run(_load(url, bodies, labels, requests, concurrency, classes))


def health(url: str) -> dict:
    """The service's GET /health: its classes and input shape among others."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10) as r:
            return json.loads(r.read())
    except (OSError, ValueError) as e:
        raise UserError(f"{url}/health did not answer with JSON ({e}); is a fashion-ensemble service running there?"
                        ) from None


def free_port() -> int:
    """A loopback port that nothing listens on now (the system picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def service(run_dir, startup_s: float = 120.0):
    """`fashion-ensemble serve RUN_DIR` in a child process on a free loopback port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "fashion_ensemble.cli", "serve", str(run_dir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise UserError(f"the service did not start: {proc.stderr.read().strip().splitlines()[-1:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise UserError(f"the service did not answer {url}/health within {startup_s:.0f} s") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
