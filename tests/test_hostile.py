"""Hostile inputs: each defect an adversarial pass found, reproduced, and what the program now does instead."""

import contextlib
import gzip
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import load_file, save_file

import fashion_ensemble as fe
from fashion_ensemble.cli import main
from fashion_ensemble.data.idx import read_idx
from fashion_ensemble.errors import UserError
from fashion_ensemble.model import preprocess as pp
from fashion_ensemble.model import runs
from fashion_ensemble.model.runs import RunFolder
from fashion_ensemble.serving.serve import ServeConfig, create_app, timed_headers_protocol
from fashion_ensemble.study.pipeline import resume_study, run_study
from helpers import (
    garment_photo,
    multipart,
    png_bytes,
    resume_config,
    serving,
    smoke_config,
    stopping_cli,
    wait_until_stopped,
    write_config,
    write_dataset,
)


def run_cli(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err


def one_line(err: str) -> bool:
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


# -- 3. resumable work is never deleted; one writer per folder ---------------------------------------------------------


def stopped_run(tmp_path, data, monkeypatch):
    """A run that failed after training: its partial folder holds both members' checkpoints."""
    def broken_report(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr("fashion_ensemble.study.pipeline.write_report", broken_report)
    with pytest.raises(RuntimeError):
        run_study(smoke_config(), tmp_path / "run", data_dir=data, device="cpu", progress=False)
    monkeypatch.undo()
    return RunFolder(tmp_path / "run")


@pytest.mark.slow
def test_a_stopped_run_is_not_deleted_by_a_new_one(tmp_path, tiny_data, monkeypatch):
    folder = stopped_run(tmp_path, tiny_data, monkeypatch)
    checkpoints = sorted(p.name for p in folder.checkpoint("ann").parent.iterdir())
    with pytest.raises(UserError, match=r"--resume .*--restart"):
        run_study(smoke_config(), folder.path, data_dir=tiny_data, device="cpu", progress=False)
    assert sorted(p.name for p in folder.checkpoint("ann").parent.iterdir()) == checkpoints  # kept
    out = run_study(smoke_config(), folder.path, data_dir=tiny_data, device="cpu", progress=False, restart=True)
    assert RunFolder(out).is_complete()


@pytest.mark.slow
def test_a_folder_being_written_is_refused(tmp_path, tiny_data, monkeypatch):
    folder = stopped_run(tmp_path, tiny_data, monkeypatch)
    with folder.lock():  # as another process writing it holds it
        with pytest.raises(UserError, match="being written by another process"):
            resume_study(folder.path, data_dir=tiny_data, device="cpu", progress=False)
        with pytest.raises(UserError, match="being written by another process"):
            run_study(smoke_config(), folder.path, data_dir=tiny_data, device="cpu", progress=False, restart=True)
    assert folder.is_partial()
    assert RunFolder(resume_study(folder.path, data_dir=tiny_data, device="cpu", progress=False)).is_complete()
    assert not list(tmp_path.glob(".*.lock"))  # released and removed


@pytest.mark.slow
def test_two_processes_on_one_folder(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=2000, n_test=100)
    cfg = write_config(tmp_path / "c.json", resume_config())
    args = ["run", "--config", str(cfg), "--data-dir", str(data), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--quiet"]
    first = stopping_cli("checkpoint:ann:1:after", *args)  # holds the folder, stopped mid-training
    try:
        wait_until_stopped(first)
        second = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", *args], capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 2 and "being written by another process" in second.stderr, second.stderr
        assert one_line(second.stderr)
    finally:
        first.kill()
        first.wait()
    # The first was killed: its lock died with it, its checkpoints stay, and a new run points to --resume.
    again = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", *args], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr and (tmp_path / ".run.partial").is_dir()


# -- 4. weights that give NaN, and temperatures out of range -----------------------------------------------------------


def damage(run, tmp_path, name, edit):
    bad = copy_run(run, tmp_path / name)
    state = load_file(str(bad / "ann.safetensors"))
    save_file(edit(state), str(bad / "ann.safetensors"))
    return bad


def test_non_finite_or_integer_weights_are_refused_at_load(tiny_run, tmp_path, capsys):
    def nan(state):
        key = next(k for k, v in state.items() if v.ndim == 2)
        state[key][0, 0] = float("nan")
        return state

    def int8(state):
        return {k: v.to(torch.int8) if v.is_floating_point() else v for k, v in state.items()}

    with pytest.raises(UserError, match="NaN or infinite"):
        fe.load(damage(tiny_run, tmp_path, "nan", nan))
    with pytest.raises(UserError, match="not floating point"):
        fe.load(damage(tiny_run, tmp_path, "int8", int8))
    bad = damage(tiny_run, tmp_path, "nan2", nan)
    image = tmp_path / "shirt.png"
    image.write_bytes(png_bytes(garment_photo()))
    code, err = run_cli(capsys, "predict", str(bad), str(image), "--json")
    assert code == 2 and "NaN" in err and one_line(err)
    with pytest.raises(UserError, match="NaN"):
        create_app(bad)  # the service refuses to start, rather than answer 500 to every request


def test_temperatures_out_of_range_are_refused(tiny_run, tmp_path):
    for t in (1e-300, 1e9, "hot", None):
        bad = copy_run(tiny_run, tmp_path / f"t{t}")
        spec = json.loads((bad / "ensemble.json").read_text())
        spec["members"]["ann"]["temperature"] = t
        (bad / "ensemble.json").write_text(json.dumps(spec))
        with pytest.raises(UserError, match="temperature"):
            fe.load(bad)


def test_non_finite_probabilities_are_never_emitted(tiny_run, monkeypatch):
    ensemble = fe.load(tiny_run)
    monkeypatch.setattr(ensemble.members["cnn"].model, "forward", lambda x: torch.full((len(x), 10), float("nan")))
    with pytest.raises(UserError, match="non-finite probabilities"):
        ensemble.predict_proba(np.zeros((2, 28, 28), np.uint8))
    app = create_app(tiny_run, ServeConfig(engine="torch"))
    monkeypatch.setattr(fe.Member, "_proba", lambda self, x, calibrated=True: np.full((len(x), 10), np.nan))
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        r = c.post("/predict", content=png_bytes(garment_photo()))
        assert r.status_code == 500 and "non-finite" in r.json()["detail"]  # JSON, not a plain-text 500
        assert c.get("/health").status_code == 200


# -- 5. an absurd config.json allocates nothing ------------------------------------------------------------------------


def test_config_shapes_are_checked_against_the_header_before_building(tiny_run, tmp_path, monkeypatch):
    bad = copy_run(tiny_run, tmp_path / "big")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["members"]["ann"]["model"]["hidden"] = [16384]  # within bounds, but not this file's (64,)
    (bad / "config.json").write_text(json.dumps(cfg))
    built = []
    real = runs.build_model

    def recording(*args):
        model = real(*args)
        kind = args[0]
        built.append((kind, next(model.parameters()).device.type))
        return model

    monkeypatch.setattr(runs, "build_model", recording)
    with pytest.raises(UserError, match="has shape"):
        fe.load(bad)
    assert ("ann", "cpu") not in built and ("ann", "meta") in built  # compared on the meta device, never allocated
    for hidden in ([10_000_000], [-1]):
        cfg["members"]["ann"]["model"]["hidden"] = hidden
        (bad / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(UserError, match="model.hidden"):
            fe.load(bad)


# -- 6. IDX gzip bombs -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_idx_gzip_bomb_costs_no_memory(tmp_path):
    header = struct.pack(">IIII", 0x803, 10, 28, 28)
    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:  # declares 10 images, expands to 200 MB
        f.write(header)
        zeros = bytes(2**20)
        for _ in range(200):
            f.write(zeros)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    with pytest.raises(UserError, match="truncated or padded"):
        read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # was: the whole 200 MB (and 4.5 GB RSS for a 2 GB one)

    huge = tmp_path / "huge-idx3-ubyte.gz"
    huge.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 2**31, 1000, 1000)))
    with pytest.raises(UserError, match="more than the"):
        read_idx(huge)
    overflow = tmp_path / "overflow-idx3-ubyte.gz"
    overflow.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 2**32 - 1, 2**32 - 1, 2**32 - 1)))
    with pytest.raises(UserError, match="more than the"):  # was: passed the length check, then a reshape traceback
        read_idx(overflow)


# -- 7. every file read is checked: one line and exit 2, never a traceback ---------------------------------------------


ENSEMBLE_DAMAGE = {
    "no weights": lambda s: s.pop("weights"),
    "no weights_file": lambda s: s["members"]["ann"].pop("weights_file"),
    "temperature null": lambda s: s["members"]["ann"].update(temperature=None),
    "members a list": lambda s: s.update(members=["ann", "cnn"]),
    "weights_file outside": lambda s: s["members"]["ann"].update(weights_file="../../etc/passwd"),
    "weights_file absolute": lambda s: s["members"]["ann"].update(weights_file="/etc/passwd"),
    "weight negative": lambda s: s["weights"].update(ann=-1),
}


@pytest.mark.parametrize("case", list(ENSEMBLE_DAMAGE))
def test_a_damaged_ensemble_json_gets_one_line(tiny_run, tmp_path, capsys, case):
    bad = copy_run(tiny_run, tmp_path / "bad")
    spec = json.loads((bad / "ensemble.json").read_text())
    ENSEMBLE_DAMAGE[case](spec)
    (bad / "ensemble.json").write_text(json.dumps(spec))
    for command in (["evaluate", str(bad)], ["export", str(bad), "--onnx", str(tmp_path / "m.onnx")]):
        code, err = run_cli(capsys, *command)
        assert code == 2 and "ensemble.json" in err and one_line(err), err


def test_another_runs_weights_are_not_followed(tiny_run, tmp_path):
    bad = copy_run(tiny_run, tmp_path / "runs" / "bad")
    copy_run(tiny_run, tmp_path / "runs" / "other")
    spec = json.loads((bad / "ensemble.json").read_text())
    spec["members"]["ann"]["weights_file"] = "../other/ann.safetensors"
    (bad / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="a file name inside the run folder"):
        fe.load(bad)


@pytest.mark.parametrize("key", ["model", "profile", "train"])
def test_a_config_json_without_a_field_gets_one_line(tiny_run, tmp_path, capsys, key):
    bad = copy_run(tiny_run, tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    (cfg if key == "profile" else cfg["members"]["ann"]).pop(key)
    (bad / "config.json").write_text(json.dumps(cfg))
    code, err = run_cli(capsys, "evaluate", str(bad))
    assert code == 2 and f"missing field(s) ['{key}']" in err and one_line(err)


@pytest.mark.parametrize("assignment", ["members.ann.model.dropout=5", "members.ann.model.hidden=[-1]",
                                        "members.cnn.model.stem=0"])
def test_bad_set_values_are_refused_before_any_folder(tmp_path, capsys, assignment):
    code, err = run_cli(capsys, "run", "--profile", "quick", "--set", assignment, "--out", str(tmp_path / "run"))
    assert code == 2 and "config:" in err and one_line(err)
    assert list(tmp_path.iterdir()) == []


TAMPERED = {
    "next_epoch -100": lambda m: m.update(next_epoch=-100),
    "stopped 'no'": lambda m: m.update(stopped="no"),
    "no optimizer groups": lambda m: m.pop("optimizer_groups"),
    "no scheduler": lambda m: m.pop("scheduler"),
    "history not a list": lambda m: m.update(history="long"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_checkpoint_is_refused(tmp_path, tiny_data, monkeypatch, case):
    from safetensors import safe_open

    folder = stopped_run(tmp_path, tiny_data, monkeypatch)
    path = folder.checkpoint("cnn")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    TAMPERED[case](meta)
    save_file(load_file(str(path)), str(path), metadata={"state": json.dumps(meta)})
    with pytest.raises(UserError, match="unreadable training checkpoint.*delete it"):
        resume_study(folder.path, data_dir=tiny_data, device="cpu", progress=False)


def test_output_paths_that_cannot_be_written_get_one_line(tiny_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (str(blocker / "model.onnx"), "/proc/no/model.onnx"):
        code, err = run_cli(capsys, "export", str(tiny_run), "--onnx", out)
        assert code == 2 and one_line(err), err
    code, err = run_cli(capsys, "export", str(tiny_run), "--onnx", "")
    assert code == 2 and "needs a file name" in err and one_line(err)


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


@pytest.mark.slow
def test_a_full_disk_gets_one_line_and_the_run_stays_resumable(tmp_path, tiny_data, capsys, monkeypatch):
    from safetensors import SafetensorError

    from fashion_ensemble.training import checkpoint

    def full(*args, **kwargs):
        raise SafetensorError("No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)
    cfg = write_config(tmp_path / "c.json", smoke_config())
    code, err = run_cli(capsys, "run", "--config", str(cfg), "--data-dir", str(tiny_data), "--out",
                        str(tmp_path / "run"), "--device", "cpu", "--quiet")
    assert code == 2 and "No space left on device" in err and one_line(err), err
    assert RunFolder(tmp_path / "run").is_partial()  # nothing looks complete; --resume can go on once there is space
    monkeypatch.undo()
    assert RunFolder(resume_study(tmp_path / "run", data_dir=tiny_data, device="cpu", progress=False)).is_complete()


def test_refused_resumes_and_runs_create_no_folders(tmp_path, tiny_data):
    with pytest.raises(UserError, match="nothing to resume"):
        resume_study(tmp_path / "no" / "such" / "run", data_dir=tiny_data, device="cpu")
    with pytest.raises(UserError, match="does not exist"):
        run_study(smoke_config(), tmp_path / "runs" / "x", data_dir=tmp_path / "no-data", device="cpu")
    assert not (tmp_path / "no").exists()  # a refused resume creates nothing
    assert list((tmp_path / "runs").iterdir()) == []  # a refused run: the run's parent only, no lock, no partial
