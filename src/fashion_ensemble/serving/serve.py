"""The HTTP service (FastAPI on uvicorn) and its web page.

    GET  /               the web page (web/index.html)
    GET  /health         {"status": "ok", "run", "members", "weights", "classes", "input_shape", "ood_flag_rate",
                         "engine" ("onnx" or "torch"), "batches", "images", ...}
    POST /predict        one image: multipart field "file", or the raw bytes as the body → a record (predict.py)
                         with "ood" and "ood_score" (does it look like the training images?);
                         ?input=true adds "input", the pixels the model saw (28×28 for Fashion-MNIST)
    POST /predict/batch  several images: multipart fields "files" (or "file") → {"results": [record or error]}
    GET  /random         a random test image: {"index", "label", "png": data URL} (when started with `examples`)
    GET  /docs           OpenAPI docs

Every error is a JSON {"detail": "..."} that says why. Concurrent requests are batched: while the model runs
one batch (in its own thread), the next requests queue up, and the model takes them all at once.

What one request can cost is bounded, so that no request freezes or exhausts the service: the body's size
(`max_body_bytes`, 413), the image's pixels (`max_pixels`, from its header, 413), the time to send headers and body
(`header_timeout_s`, `body_timeout_s`: the connection is closed, or 408), and decoding: an image of more than
`inline_pixels` is decoded off the event loop, at most `max_decodes` at once with `max_waiting` more queued (else 503
with Retry-After), so /health answers while a large image decodes. Only requests whose Host header names this
service are answered (400 otherwise), which defeats DNS rebinding against a service on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import re
import resource
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from fashion_ensemble.errors import UserError
from fashion_ensemble.model import preprocess
from fashion_ensemble.model.ensemble import SoftVotingEnsemble
from fashion_ensemble.model.runs import RunFolder, load, run_or_pretrained
from fashion_ensemble.serving import predict
from fashion_ensemble.text import markdown


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise: the service has no authentication
    port: int = 8000
    max_body_bytes: int = 10 * 2**20  # 10 MiB: a phone's JPEG is 2-8 MB
    max_pixels: int = 40_000_000  # checked from the header before decoding: a decompression bomb is refused
    max_files: int = 64  # per /predict/batch request
    max_model_batch: int = 256  # images per model call when requests pile up
    inline_pixels: int = 512 * 512  # images up to this are decoded on the event loop (~1 ms); larger in a thread
    max_decodes: int = 2  # larger images decoded at once (one thread each): CPU and memory (~200 MB each) bounded
    max_waiting: int = 32  # larger images queued behind those; beyond, 503 with Retry-After
    header_timeout_s: float = 10.0  # a connection that has not sent its request's headers by then is closed
    body_timeout_s: float = 30.0  # a body that stalls this long between two parts gets 408
    allowed_hosts: tuple[str, ...] = ()  # Host header names answered besides localhost and the bound address; "*": any
    engine: str = "auto"  # ONNX Runtime where installed (3.5× PyTorch eager's images/s on 2 cores), else PyTorch

    def __post_init__(self):
        for name in self.allowed_hosts:  # Host checks compare names without the port: NAME:PORT would never match
            if re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]+):\d+", name):
                raise UserError(f"--allowed-host takes a host name without its port: got {name!r}, give "
                                f"{name.rsplit(':', 1)[0]!r} (the service answers it on any port it listens on)")

    def hosts(self) -> list[str]:
        """The Host header values (without port) that the service answers."""
        names = {"localhost", "127.0.0.1", "::1", "[::1]", *self.allowed_hosts}
        if self.host in ("0.0.0.0", "::", ""):  # every interface: this machine's own names too
            names |= {socket.gethostname(), socket.getfqdn()}
        else:
            names.add(self.host)
        return sorted(names)


STATUS = {"empty": 400, "not_an_image": 415, "corrupt": 422, "blank": 422, "too_many_pixels": 413, "too_large": 413}


class Prediction(BaseModel):
    """The answer's shape, for the OpenAPI docs (answers are built as plain dicts: faster)."""
    label: str
    ood: bool | None = None  # the input looks unlike the training images: the label is a guess (None: no signal)
    ood_score: float | None = None  # how unlike, in [0, 1]: the share of validation images that look more typical
    probabilities: dict[str, float]
    members: dict[str, dict[str, float]]
    input: list | None = None  # the pixels the model saw: rows of greyscale values, or of [R, G, B]


class BatchResult(BaseModel):
    results: list[dict]


IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


class Batcher:
    """Runs the model in one worker thread on whatever requests have queued up since its last call."""

    def __init__(self, ensemble: SoftVotingEnsemble, max_batch: int):
        self.ensemble, self.max_batch = ensemble, max_batch
        self.batches = self.images = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def predict(self, images: list[np.ndarray]) -> list[dict]:
        """Model inputs (uint8 (S, S) or (S, S, 3)) → their records, computed in a batch with other requests' images."""
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((images, future))
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            count = len(jobs[0][0])
            while count < self.max_batch and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                count += len(jobs[-1][0])
            images = np.stack([image for job_images, _ in jobs for image in job_images])
            try:
                recs = await loop.run_in_executor(self._executor, predict.records, self.ensemble, images)
            except Exception as e:  # e.g. out of memory: fail these requests, keep serving
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batches += 1
            self.images += len(images)
            start = 0
            for job_images, future in jobs:
                if not future.done():  # the client may have gone
                    future.set_result(recs[start : start + len(job_images)])
                start += len(job_images)


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413, whether its Content-Length says so or it streams; a body
    that stalls for `timeout_s` gets 408."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(int(declared), self.max_bytes)(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                raise BodyTooSlow(seen) from None
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(seen)
            return message

        await self.app(scope, limited_receive, send)


class Decoder:
    """Images → model inputs: small ones at once on the event loop, larger ones in `max_decodes` threads with at
    most `max_waiting` queued behind them (then `Busy`), so that neither the loop nor memory is at one request's
    mercy."""

    def __init__(self, config: ServeConfig, geometry: dict | None = None):
        self.config = config
        self.geometry = geometry or {}  # preprocess's size and channels: the model's input
        self.pending = 0  # decodes running or queued in the threads
        self._executor = ThreadPoolExecutor(config.max_decodes, thread_name_prefix="decode")

    async def decode(self, data: bytes, name: str) -> np.ndarray:
        c = self.config
        if preprocess.header_pixels(data, max_pixels=c.max_pixels, name=name) <= c.inline_pixels:
            return preprocess.preprocess(data, max_pixels=c.max_pixels, name=name, **self.geometry)
        if self.pending >= c.max_decodes + c.max_waiting:
            raise HTTPException(503, f"busy: {self.pending} large images are being decoded; try again in a moment",
                                headers={"Retry-After": "1"})
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, functools.partial(preprocess.preprocess, data, max_pixels=c.max_pixels, name=name,
                                                  **self.geometry))
        finally:
            self.pending -= 1

    def stop(self) -> None:
        self._executor.shutdown(wait=True)


def test_scores(run_dir) -> dict:
    """{"test_accuracy", "test_images"} of the run's ensemble from its metrics.json (None when it has none)."""
    try:
        metrics = RunFolder(run_dir).metrics()
        return {"test_accuracy": metrics["models"]["ensemble"]["accuracy"],
                "test_images": int(metrics["split"]["sizes"]["test"])}
    except (UserError, OSError, KeyError, TypeError, ValueError):
        return {"test_accuracy": None, "test_images": None}


def too_large(size: int, limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"the request body ({size:,}+ bytes) is larger than the limit of {limit:,} bytes"},
                        status_code=413)


def create_app(run_dir, config: ServeConfig = ServeConfig(), device: str = "cpu",
               examples: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> FastAPI:
    """The service for one run folder (loaded once, here). `examples` gives the labelled images (model inputs,
    labels (N,)) that /random draws from, read on its first call (the CLI passes a reader of the run's own test split);
    without it /random answers 404."""
    run_dir = run_or_pretrained(run_dir)  # None: the shipped model
    ensemble = load(run_dir, device=device, engine=config.engine).warm_up()  # the first request as fast as the rest
    batcher = Batcher(ensemble, config.max_model_batch)
    scores = test_scores(run_dir)
    decoder = Decoder(config, predict.geometry(ensemble))
    page = resources.files("fashion_ensemble.serving").joinpath("web/index.html").read_text()
    test_set: dict = {}
    test_set_lock = asyncio.Lock()  # the first /random calls load the images once, not once each

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()
        decoder.stop()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the package, not from a CDN (they work offline)
    # The description is Markdown that /docs and /redoc render: class and folder names go in escaped (text.py).
    classes = ", ".join(map(markdown, ensemble.classes))
    app = FastAPIOffline(title="fashion-ensemble", lifespan=lifespan,
                         description=f"Classifies images into {len(ensemble.classes)} classes ({classes}) with an "
                                     "ANN + depthwise-separable CNN soft-voting ensemble "
                                     f"({markdown(Path(run_dir).name)}).")
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, timeout_s=config.body_timeout_s)
    if "*" not in config.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=config.hosts())

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request, exc):
        return too_large(exc.args[0], config.max_body_bytes)

    @app.exception_handler(BodyTooSlow)
    async def body_too_slow(request, exc):
        return JSONResponse({"detail": f"the request body stalled for {config.body_timeout_s:g} s after "
                                       f"{exc.args[0]:,} bytes"}, status_code=408)

    @app.exception_handler(Exception)
    async def failed(request, exc: Exception):  # e.g. a model that gave non-finite probabilities: JSON, not text
        return JSONResponse({"detail": f"the service failed on this request: {exc}"}, status_code=500)

    @app.exception_handler(preprocess.ImageError)
    async def bad_image(request, exc: preprocess.ImageError):
        return JSONResponse({"detail": str(exc)}, status_code=STATUS.get(exc.reason, 422))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    @app.get("/health")
    async def health():
        return {"status": "ok", "run": Path(run_dir).name, **scores, "members": list(ensemble.members),
                "weights": ensemble.weights, "classes": ensemble.classes, "input_shape": list(ensemble.input_shape),
                "ood_flag_rate": ensemble.ood.flag_rate if getattr(ensemble, "ood", None) else None,
                "engine": ensemble.engine_in_use, "batches": batcher.batches, "images": batcher.images}

    @app.post("/predict", responses={200: {"model": Prediction}}, openapi_extra=IMAGE_BODY)
    async def predict_one(request: Request, input: bool = False):
        """Classify one image: multipart field `file`, or the image's bytes as the body."""
        if is_multipart(request):
            uploads = await read_uploads(request, ("file",), 1)
            if not uploads:
                raise HTTPException(400, "no image: send it as the multipart field 'file', or as the raw body")
            name, data = uploads[0]
        else:
            name, data = "body", await request.body()
        image = await decode(data, name)
        record = (await batcher.predict([image]))[0]
        if input:
            record["input"] = image.tolist()
        return JSONResponse(record)

    @app.post("/predict/batch", responses={200: {"model": BatchResult}}, openapi_extra=BATCH_BODY)
    async def predict_batch(request: Request):
        """Classify several images (multipart fields `files`); a bad one gets {"file", "error"}, the rest go on."""
        if not is_multipart(request):
            raise HTTPException(415, "send the images as multipart/form-data fields named 'files'")
        uploads = await read_uploads(request, ("files", "file"), config.max_files)
        if not uploads:
            raise HTTPException(400, "no images: send them as multipart fields named 'files'")
        images, errors = {}, {}
        for i, (name, data) in enumerate(uploads):
            try:
                images[i] = await decode(data, name)
            except preprocess.ImageError as e:
                errors[i] = str(e)
        recs = iter(await batcher.predict(list(images.values())) if images else [])
        return JSONResponse({"results": [
            {"file": name, "error": errors[i]} if i in errors else {"file": name, **next(recs)}
            for i, (name, _) in enumerate(uploads)
        ]})

    @app.get("/random")
    async def random_test_image(index: int | None = None):
        """A random official test image (or the one at `index`) as a PNG data URL, with its true label."""
        async with test_set_lock:
            if not test_set:
                if examples is None:
                    raise HTTPException(404, "no test images on this server (it was started without them)")
                try:
                    images, labels = await run_in_threadpool(examples)
                except UserError as e:
                    raise HTTPException(404, f"no test images on this server: {e}") from None
                test_set.update(images=images, labels=labels)
        n = len(test_set["labels"])
        i = int(np.random.default_rng().integers(n)) if index is None else index
        if not 0 <= i < n:
            raise HTTPException(422, f"index must be in 0..{n - 1}, got {i}")
        png = base64.b64encode(preprocess.to_png(test_set["images"][i])).decode()
        label = ensemble.classes[int(test_set["labels"][i])]
        return {"index": i, "label": label, "png": f"data:image/png;base64,{png}"}

    decode = decoder.decode

    async def read_uploads(request: Request, fields: tuple[str, ...], limit: int) -> list[tuple[str, bytes]]:
        try:
            form = await request.form(max_files=limit, max_fields=limit + 16)
        except StarletteHTTPException as e:  # Starlette's own 400s; "Too many files/fields" is a size limit: 413
            if str(e.detail).startswith("Too many"):
                raise HTTPException(413, f"{e.detail} per request") from None
            raise
        except BodyTooLarge:  # our 413
            raise
        except Exception as e:
            raise HTTPException(400, f"malformed multipart body ({e})") from None
        uploads = [v for field in fields for v in form.getlist(field) if isinstance(v, UploadFile)]
        if len(uploads) > limit:
            raise HTTPException(413, f"{len(uploads)} files is more than the limit of {limit} per request")
        out = [(u.filename or f"file {i}", await u.read()) for i, u in enumerate(uploads)]
        await form.close()
        return out

    return app


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


def serve(run_dir, config: ServeConfig = ServeConfig(), device: str = "cpu", access_log: bool = False,
          examples: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> None:
    """Run the service until interrupted (uvicorn, one process: the model is loaded once)."""
    import uvicorn

    check_port_free(config.host, config.port)
    app = create_app(run_dir, config, device=device, examples=examples)
    _raise_open_files_limit()
    uvicorn.run(app, host=config.host, port=config.port, access_log=access_log, log_level="info",
                http=timed_headers_protocol(config.header_timeout_s), limit_concurrency=MAX_CONNECTIONS)


def check_port_free(host: str, port: int) -> None:
    """Refuse, in one line, a port that something already listens on (uvicorn would log a traceback and exit 3)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT leftovers are fine
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}): another program uses it; choose "
                            "another with --port") from None


MAX_CONNECTIONS = 4096  # connections and requests at once; beyond, uvicorn answers 503


def timed_headers_protocol(timeout_s: float):
    """uvicorn's HTTP protocol, but a connection that has not sent a whole request head within `timeout_s` of
    connecting (or of its previous response) is closed: slow or silent clients cannot hold connections open."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class TimedHeaders(HttpToolsProtocol):
        _deadline = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection, if any, gets the same time

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return TimedHeaders


def _raise_open_files_limit() -> None:
    """Each connection holds a file descriptor: raise the soft limit (often 1,024) to the hard one, up to 65,536."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else 65_536, 65_536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
