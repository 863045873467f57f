"""The HTTP service: answers, the 4xx errors that say why, limits, batching, and that it keeps serving."""

import asyncio
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

import fashion_ensemble as fe
from fashion_ensemble.data.idx import load_raw
from fashion_ensemble.data.split import CLASSES
from fashion_ensemble.errors import UserError
from fashion_ensemble.model.preprocess import preprocess
from fashion_ensemble.serving.predict import records
from fashion_ensemble.serving.serve import Batcher, ServeConfig, create_app
from helpers import garment_photo, patched_png, png_bytes, synthetic_images

LOCAL = "http://localhost"  # the service answers only its own host names (TestClient's default is "testserver")


@pytest.fixture(scope="module")
def client(tiny_run, tmp_path_factory):
    config = ServeConfig(max_body_bytes=200_000, max_pixels=1_000_000, max_files=4)
    with TestClient(create_app(tiny_run, config), base_url=LOCAL) as c:  # no examples: no /random test set
        yield c


@pytest.fixture(scope="module")
def image():
    return png_bytes(synthetic_images(np.array([4]))[0])


def check_record(rec: dict):
    assert rec["label"] in CLASSES and len(rec["probabilities"]) == 10
    assert set(rec["members"]) == {"ann", "cnn"}
    assert sum(rec["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_health(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["members"] == ["ann", "cnn"] and h["classes"] == list(CLASSES)
    assert sum(h["weights"].values()) == pytest.approx(1.0)


def test_predict_multipart_and_raw_body_agree_with_the_python_api(client, image, tiny_run):
    a = client.post("/predict", files={"file": ("x.png", image, "image/png")})
    b = client.post("/predict", content=image, headers={"content-type": "image/png"})
    assert a.status_code == b.status_code == 200
    check_record(a.json())
    assert a.json() == b.json()
    expected = records(fe.load(tiny_run, engine="torch"), preprocess(image)[None])[0]  # the service: ONNX Runtime
    assert a.json()["label"] == expected["label"]
    assert a.json()["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)
    assert a.json()["ood"] == expected["ood"] and a.json()["ood_score"] == pytest.approx(expected["ood_score"],
                                                                                         abs=0.03)


def test_noise_is_answered_with_i_do_not_know(client):
    noise = png_bytes(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))
    rec = client.post("/predict", content=noise).json()
    assert rec["ood"] is True and rec["ood_score"] > 0.95 and rec["label"] in CLASSES  # a label still, as a guess
    assert client.get("/health").json()["ood_flag_rate"] == 0.05


def test_predict_can_return_the_input_it_saw(client, image):
    rec = client.post("/predict?input=true", files={"file": ("x.png", image)}).json()
    assert np.array_equal(np.array(rec["input"], dtype=np.uint8), preprocess(image))


def test_batch_reports_bad_files_and_answers_the_rest(client, image):
    files = [("files", ("a.png", image)), ("files", ("bad.png", b"nope")), ("files", ("c.png", image))]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["file"] for x in results] == ["a.png", "bad.png", "c.png"]
    check_record(results[0])
    assert "not an image" in results[1]["error"]
    assert results[0]["probabilities"] == results[2]["probabilities"]


big_photo = png_bytes(garment_photo(1200, 1000, (100, 100, 1100, 900)))  # 1.2 MP: over the test's 1 MP limit


@pytest.mark.parametrize(
    "kwargs, status, message",
    [
        ({"content": b""}, 400, "empty"),
        ({"content": b"GIF89a but not really"}, 415, "not an image"),
        ({"files": {"file": ("a.txt", b"hello")}}, 415, "not an image"),
        ({"files": {"other": ("a.png", b"x")}}, 400, "multipart field 'file'"),
        ({"content": b"\0" * 300_000}, 413, "larger than the limit of 200,000 bytes"),
        ({"content": patched_png(40_000, 40_000)}, 413, "too many pixels"),
        ({"content": big_photo}, 413, "more than the limit of 1,000,000"),
        ({"content": png_bytes(np.full((30, 30), 255, np.uint8))}, 422, "blank"),
        ({"content": png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:2000]}, 422,
         "truncated"),
        ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, ""),
    ],
    ids=["empty", "not-image", "text-file", "wrong-field", "body-too-large", "bomb", "too-many-pixels", "blank",
         "truncated", "bad-multipart"],
)
def test_bad_requests_get_a_4xx_that_says_why_and_the_service_keeps_serving(client, image, kwargs, status, message):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert client.post("/predict", content=image).status_code == 200


def test_streamed_body_over_the_limit_is_refused(client):
    def chunks():  # no Content-Length: the middleware counts as it reads
        for _ in range(30):
            yield b"\0" * 10_000
    r = client.post("/predict", content=chunks())
    assert r.status_code == 413 and "larger than the limit" in r.json()["detail"]


def test_batch_limits(client, image):
    r = client.post("/predict/batch", files=[("files", (f"{i}.png", image)) for i in range(5)])
    assert r.status_code == 413 and "Too many files. Maximum number of files is 4" in r.json()["detail"]
    fields = {f"field{i}": "x" for i in range(30)}  # over the field limit too: a size limit, so 413
    r = client.post("/predict/batch", files=[("files", ("0.png", image))], data=fields)
    assert r.status_code == 413 and "Too many fields" in r.json()["detail"]
    assert client.post("/predict/batch", content=image).status_code == 415


@pytest.mark.parametrize("name", ["shop.example:8000", "127.0.0.1:80", "[::1]:8000"])
def test_an_allowed_host_with_a_port_is_refused_with_the_fix(name):
    with pytest.raises(UserError, match=f"without its port: got '{re.escape(name)}', give"):
        ServeConfig(allowed_hosts=(name,))
    assert ServeConfig(allowed_hosts=("[::1]", "shop.example")).hosts()  # names alone are fine


def test_random_without_test_images_is_a_404_that_says_why(client):
    r = client.get("/random")
    assert r.status_code == 404 and "no test images" in r.json()["detail"]


def test_random_test_image(tiny_run, real_data):
    examples = lambda: load_raw(real_data, verify_checksums=False)["test"]  # noqa: E731 (as the CLI passes it)
    with TestClient(create_app(tiny_run, ServeConfig(), examples=examples), base_url=LOCAL) as c:
        r = c.get("/random", params={"index": 0}).json()
        assert r["index"] == 0 and r["label"] == "Ankle boot" and r["png"].startswith("data:image/png;base64,")
        assert c.get("/random", params={"index": 10_000}).status_code == 422
        assert c.get("/random").status_code == 200


def test_docs_and_page(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health", "/random"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    page = client.get("/")
    assert page.status_code == 200 and "fashion-ensemble" in page.text and 'id="random"' in page.text


def test_torch_engine_gives_the_same_answers(tiny_run, image, client):
    with TestClient(create_app(tiny_run, ServeConfig(engine="torch")), base_url=LOCAL) as c:
        a = c.post("/predict", content=image).json()
        assert c.get("/health").json()["engine"] == "torch"
    b = client.post("/predict", content=image).json()
    assert client.get("/health").json()["engine"] == "onnx"  # the default where ONNX Runtime is installed
    assert a["label"] == b["label"] and a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)


def test_concurrent_requests_are_batched(tiny_run):
    ensemble = fe.load(tiny_run)
    images = synthetic_images(np.arange(8) % 10)

    async def main():
        batcher = Batcher(ensemble, max_batch=256)
        await batcher.start()
        results = await asyncio.gather(*(batcher.predict([im]) for im in images))
        await batcher.stop()
        return batcher, results

    batcher, results = asyncio.run(main())
    assert batcher.batches == 1 and batcher.images == 8  # eight requests, one model call
    assert [r[0]["label"] for r in results] == [r["label"] for r in records(ensemble, images)]


def test_answers_are_json_serialisable_records(client, image):
    rec = client.post("/predict", content=image).json()
    assert json.loads(json.dumps(rec)) == rec


def test_docs_work_offline(tiny_run):
    import re

    with TestClient(create_app(tiny_run, ServeConfig()), base_url="http://localhost") as c:
        page = c.get("/docs").text
        assets = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert assets and not any(a.startswith("http") for a in assets), assets  # nothing from a CDN
        assert all(c.get(a).status_code == 200 for a in assets if a.startswith("/"))
        assert "cdn" not in c.get("/redoc").text.lower()


def test_health_states_the_test_accuracy_the_page_shows(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    with TestClient(create_app(tiny_run, ServeConfig()), base_url="http://localhost") as c:
        h = c.get("/health").json()
        assert h["test_accuracy"] == metrics["models"]["ensemble"]["accuracy"]
        assert h["test_images"] == metrics["split"]["sizes"]["test"]
        page = c.get("/").text
        assert 'id="classes"' in page and "test images it was right" in page
