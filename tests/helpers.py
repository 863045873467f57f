"""Helpers the tests share (imported as `helpers`; fixtures live in conftest.py): tiny synthetic IDX data sets, the
test-only run configurations, and image files made in memory."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from fashion_ensemble.config import (
    ANNConfig,
    AugmentConfig,
    CNNConfig,
    DataConfig,
    EnsembleConfig,
    MemberConfig,
    RunConfig,
    TrainConfig,
)
from fashion_ensemble.data.idx import FILES

# -- IDX data sets ---------------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as IDX: magic 0x0000_08_<ndim>, then the big-endian dims, then the data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    path.write_bytes(gzip.compress(idx_bytes(array)))
    return path


def synthetic_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Class k: a bright horizontal bar at row 2k+4 over dim noise, so that any model can learn it in an epoch."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 4 : 2 * k + 6, 4:24] = 220
    return images


def write_dataset(folder: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        rng.shuffle(labels)
        images_file, labels_file = FILES[part]
        write_idx(folder / images_file, synthetic_images(labels, seed + len(part)))
        write_idx(folder / labels_file, labels)
    return folder


def image_folder(root: Path, classes=("coat", "bag", "shoe"), per_class=40, splits=None, size=28) -> Path:
    """Class folders of PNGs (synthetic bars, one class per row band), at the top or under each of `splits`."""
    rng = np.random.default_rng(1)
    for part in splits or [None]:
        for k, name in enumerate(classes):
            folder = root / part / name if part else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = synthetic_images(np.array([k]), seed=int(rng.integers(1 << 30)))[0]
                if size != 28:
                    image = np.kron(image, np.ones((size // 28, size // 28), np.uint8))
                (folder / f"{i:03d}.png").write_bytes(png_bytes(image))
    return root


# -- test-only run configurations -------------------------------------------------------------------------------------


def smoke_config(**data) -> RunConfig:
    """A few seconds on synthetic data (or 2,000 real images with train_subset=2000): every part of the study runs —
    calibrated, tuned voting, flip TTA, random erasing, the pool_first CNN. Numbers from it mean nothing."""
    tiny = TrainConfig(epochs=2, batch_size=128, augment=AugmentConfig(epochs=1, erase_prob=0.5))
    return RunConfig(
        profile="smoke",
        data=DataConfig(**{"train_subset": None, "verify_checksums": False, **data}),
        members={
            "ann": MemberConfig("ann", ANNConfig(hidden=(64,)), tiny),
            "cnn": MemberConfig("cnn", CNNConfig(stem=8, stages=((8,), (16,)), dw_bn=False, pool_first=True), tiny,
                                tta_flip=True),
        },
        ensemble=EnsembleConfig(calibrate=True),
    )


def write_config(path: Path, cfg: RunConfig) -> Path:
    """`cfg` as a JSON file for `--config`."""
    path.write_text(json.dumps(cfg.to_dict()))
    return path


def resume_config() -> RunConfig:
    """Both members, several epochs each on 2,000 synthetic images: a few seconds of training to kill."""
    return RunConfig(
        profile="resume-test",
        data=DataConfig(verify_checksums=False),
        members={
            "ann": MemberConfig("ann", ANNConfig(hidden=(256, 128)), TrainConfig(epochs=8, batch_size=64, patience=3)),
            "cnn": MemberConfig("cnn", CNNConfig(stem=8, stages=((8,), (16,), (32,))),
                                TrainConfig(epochs=6, batch_size=64, patience=3), tta_flip=True),
        },
    )


# -- images ----------------------------------------------------------------------------------------------------------


def png_bytes(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    (array if hasattr(array, "save") else Image.fromarray(array)).save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def garment_photo(width=300, height=150, box=(50, 30, 250, 130), colour=(40, 60, 90)) -> Image.Image:
    """A dark 200×100 'garment' on a white background: after preprocessing it is 28 wide, 14 high, centred."""
    photo = Image.new("RGB", (width, height), (255, 255, 255))
    photo.paste(colour, box)
    return photo


def patched_png(width: int, height: int) -> bytes:
    """A valid 1×1 PNG whose header claims width×height: a decompression bomb's header."""
    data = bytearray(png_bytes(np.zeros((1, 1), dtype=np.uint8)))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


# -- processes stopped at a point the test chooses --------------------------------------------------------------------

STOPPER = Path(__file__).parent / "stopper.py"


def stopping_cli(point: str, *args: str, **popen):
    """`fashion-ensemble ARGS` in a child process that stops itself at `point` (see stopper.py)."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, str(STOPPER), point, "--", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def wait_until_stopped(proc, limit_s: float = 900.0) -> None:
    """Until `proc` has stopped itself (SIGSTOP). The limit only ends a hung test: the outcome never depends on it."""
    import time

    deadline = time.monotonic() + limit_s
    stat = Path(f"/proc/{proc.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before its stop point: "
                                 f"{proc.stderr.read()}")
        assert time.monotonic() < deadline, "the process never reached its stop point"
        time.sleep(0.01)


# -- the service -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(app, **uvicorn_config):
    """`app` served by uvicorn on a free loopback port in a thread: yields its base URL."""
    import threading
    import time

    import uvicorn

    from fashion_ensemble.tools.loadtest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def multipart(files: dict[str, bytes], field: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body with one part per file: (body, its Content-Type header)."""
    boundary = "test-boundary-7f3a"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
                    for name, data in files.items()) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# -- the CLI and the service, as a user meets them ---------------------------------------------------------------------


def run_cli(capsys, *argv) -> tuple[int, str]:
    """The CLI in this process: (exit code, what it wrote to stderr)."""
    from fashion_ensemble.cli import main

    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own exit
        code = e.code
    return code, capsys.readouterr().err.strip()


def one_line(err: str) -> bool:
    """An error as the CLI should give it: one line, no traceback."""
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def post(url: str, body: bytes, content_type: str, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def stopped_run(tmp_path, data, monkeypatch):
    """A run that failed after training: its partial folder holds both members' checkpoints."""
    import pytest

    from fashion_ensemble.model.runs import RunFolder
    from fashion_ensemble.study.pipeline import run_study

    def broken_report(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr("fashion_ensemble.study.pipeline.write_report", broken_report)
    with pytest.raises(RuntimeError):
        run_study(smoke_config(), tmp_path / "run", data_dir=data, device="cpu", progress=False)
    monkeypatch.undo()
    return RunFolder(tmp_path / "run")
