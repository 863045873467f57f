"""Data sources: any IDX data set in Fashion-MNIST's four-file layout, its classes from classes.txt, through the
whole product (study, report, load, predict, export, serve); old run folders still load as Fashion-MNIST."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient

import fashion_ensemble as fe
from fashion_ensemble.data.idx import FILES
from fashion_ensemble.data.sources import load_source
from fashion_ensemble.errors import Notice, UserError
from fashion_ensemble.model.preprocess import preprocess
from fashion_ensemble.serving.export import export_onnx
from fashion_ensemble.serving.predict import predict_files
from fashion_ensemble.serving.serve import ServeConfig, create_app
from fashion_ensemble.study.pipeline import run_study
from helpers import image_folder, png_bytes, smoke_config, synthetic_images, write_config, write_idx

NAMES = ["cat", "dog", "bird"]


def idx_folder(folder, classes: int = 3, names: list[str] | None = NAMES, n_train: int = 300, n_test: int = 90):
    """An IDX data set of `classes` classes (synthetic bars), with classes.txt when `names` is given."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % classes).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(folder / FILES[part][0], synthetic_images(labels))
        write_idx(folder / FILES[part][1], labels)
    if names is not None:
        (folder / "classes.txt").write_text("\n".join(names) + "\n")
    return folder


def config_for(folder):
    cfg = smoke_config()
    return cfg.replace(data=dataclasses.replace(cfg.data, source=str(folder)))


@pytest.fixture(scope="module")
def animals(tmp_path_factory):
    root = tmp_path_factory.mktemp("animals")
    return run_study(config_for(idx_folder(root / "data")), root / "run", device="cpu", progress=False)


def test_the_study_uses_the_data_set_s_classes(animals):
    m = json.loads((animals / "metrics.json").read_text())
    assert m["classes"] == NAMES
    for name in ("ann", "cnn", "ensemble"):
        assert list(m["models"][name]["per_class"]) == NAMES
        assert np.array(m["models"][name]["confusion_matrix"]).shape == (3, 3)
        assert "similar_class_confusions" not in m["models"][name]  # Fashion-MNIST's garment group only
    assert m["split"]["class_counts"]["test"] == [30, 30, 30]
    assert json.loads((animals / "config.json").read_text())["data"]["source"].endswith("data")
    report = (animals / "report.md").read_text()
    assert "| cat |" in report and "paper" not in report  # the paper's rows compare only on Fashion-MNIST


@pytest.mark.slow
def test_load_predict_export_and_serve_speak_the_data_set_s_classes(animals, tmp_path):
    model = fe.load(animals)
    assert model.classes == NAMES
    images = synthetic_images(np.array([0, 1, 2]))
    proba = model.predict_proba(images)
    assert proba.shape == (3, 3) and np.allclose(proba.sum(1), 1)
    path = export_onnx(model, tmp_path / "m.onnx")[0]
    session = ort.InferenceSession(str(path))
    out = session.run(None, {"images": (images / 255).astype(np.float32)})[0]
    assert out.shape == (3, 3) and np.abs(out - proba).max() < 1e-4
    assert json.loads(session.get_modelmeta().custom_metadata_map["classes"]) == NAMES
    with TestClient(create_app(animals, ServeConfig()), base_url="http://localhost") as c:
        assert c.get("/health").json()["classes"] == NAMES
        answer = c.post("/predict", content=png_bytes(images[1])).json()
        assert answer["label"] in NAMES and set(answer["probabilities"]) == set(NAMES)


def test_class_names_default_to_the_labels(tmp_path):
    cfg = config_for(idx_folder(tmp_path / "d", classes=4, names=None))
    assert load_source(cfg.data)[1] == ("0", "1", "2", "3")


@pytest.mark.parametrize("names, classes, message", [
    (["cat", "dog"], 3, r"label 2 has no name in .*classes.txt"),
    (["cat", "cat", "dog"], 3, r"must differ, got \['cat'\]"),
    (None, 1, "two classes or more"),
])
def test_bad_class_names_are_refused(tmp_path, names, classes, message):
    cfg = config_for(idx_folder(tmp_path / "d", classes=classes, names=names))
    with pytest.raises(UserError, match=message):
        load_source(cfg.data)


def test_a_source_that_is_no_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="neither 'fashion-mnist' nor a folder"):
        load_source(config_for(tmp_path / "nowhere").data)


def test_a_run_folder_from_before_loads_as_fashion_mnist(tiny_run, tmp_path):
    old = shutil.copytree(tiny_run, tmp_path / "old")
    spec = json.loads((old / "ensemble.json").read_text())
    spec.pop("classes")  # as every folder written before data sources existed
    (old / "ensemble.json").write_text(json.dumps(spec))
    assert fe.load(old).classes == list(fe.CLASSES)
    spec["classes"] = ["only one"]
    (old / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="two or more different names"):
        fe.load(old)


@pytest.mark.slow
def test_cli_run_with_data(tmp_path):
    data = idx_folder(tmp_path / "data", names=["a", "b", "c"])
    cfg = write_config(tmp_path / "c.json", smoke_config())
    r = subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", "run", "--config", str(cfg), "--data", str(data),
                        "--out", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["source"] == str(data)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["classes"] == ["a", "b", "c"]


# -- image folders ----------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def folder_config(folder, **data):
    cfg = smoke_config()
    return cfg.replace(data=dataclasses.replace(cfg.data, source=str(folder), **data))


@pytest.mark.slow
def test_an_image_folder_trains_end_to_end_and_speaks_its_class_names(tmp_path):
    folder = image_folder(tmp_path / "photos")
    out = run_study(folder_config(folder, pipeline="pad"), tmp_path / "run", device="cpu", progress=False)
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == ["bag", "coat", "shoe"]  # sorted, as torchvision and Keras do
    assert sum(m["split"]["sizes"].values()) == 120 and m["split"]["sizes"]["test"] == 12  # 80/10/10
    assert m["models"]["ensemble"]["accuracy"] > 0.5
    model = fe.load(out)
    assert model.classes == ["bag", "coat", "shoe"] and model.pipeline == "pad"
    file = folder / "coat" / "000.png"  # predicted through the pipeline it was trained with, not `preprocess`'s
    expected = model.predict_proba(preprocess(file, pipeline="pad")[None])[0]
    got = next(predict_files(model, [file]))["probabilities"]
    assert np.allclose([got[c] for c in model.classes], expected, atol=1e-6)


def test_split_folders_are_kept_and_decoding_is_cached(tmp_path):
    from fashion_ensemble.data.imagefolder import load_image_folder

    folder = image_folder(tmp_path / "photos", per_class=12, splits=["train", "val", "test"])
    raw, classes, facts = load_image_folder(folder, pipeline="pad", progress=False)
    assert set(raw) == {"train", "val", "test"} and classes == ("bag", "coat", "shoe") and not facts["cached"]
    assert raw["test"][0].shape == (36, 28, 28)
    again, _, facts = load_image_folder(folder, pipeline="pad", progress=False)
    assert facts["cached"] and all(np.array_equal(again[k][0], raw[k][0]) for k in raw)
    (folder / "test" / "bag" / "000.png").write_bytes(png_bytes(np.zeros((28, 28), np.uint8) + 9))  # changed
    assert not load_image_folder(folder, pipeline="pad", progress=False)[2]["cached"]
    split = fe.make_split(folder_config(folder, pipeline="pad").data, progress=False)
    assert len(split.val[1]) == 36 and len(split.test[1]) == 36  # the given val part, not one held out of train


def test_pad_keeps_a_model_input_as_it_is(tmp_path):
    image = synthetic_images(np.array([3]))[0]
    (tmp_path / "x.png").write_bytes(png_bytes(image))
    assert np.array_equal(preprocess(str(tmp_path / "x.png"), pipeline="pad"), image)


@pytest.mark.parametrize("damage, message", [
    (lambda root: shutil.rmtree(root / "bag") or (root / "bag").mkdir(), "the class has no image files"),
    (lambda root: [shutil.rmtree(root / c) for c in ("bag", "coat")], "two classes .* or more"),
    (lambda root: [p.unlink() for p in sorted((root / "bag").iterdir())[3:]], r"fewer than 30 of: bag \(3\)"),
    (lambda root: (root / "bag" / "broken.png").write_bytes(b"not a png"), r"1 file\(s\) are not images.*broken.png"),
    (lambda root: (root / "bag").rename(root / "Coat"), "'Coat' and 'coat' differ only by case"),
    (lambda root: ((root / "bag").rename(root / "cafe\u0301"), (root / "shoe").rename(root / "caf\u00e9")),
     "differ only by case or Unicode normalisation"),
    (lambda root: (root / "bag").rename(root / "two\nlines"), "line break or surrounding space"),
    (lambda root: (root / "bag").rename(root / "train"), r"holds train/ beside other folders \(coat, shoe\).*rename "
                                                        "any class called train, val or test"),
])
def test_folder_mistakes_are_refused_with_a_reason(tmp_path, damage, message):
    folder = image_folder(tmp_path / "photos")
    damage(folder)
    with pytest.raises(UserError, match=message):
        fe.make_split(folder_config(folder).data, progress=False)


def test_split_folder_mistakes(tmp_path):
    folder = image_folder(tmp_path / "a", per_class=5, splits=["train", "val"])
    with pytest.raises(UserError, match="need at least train/ and test/"):
        fe.make_split(folder_config(folder).data, progress=False)
    folder = image_folder(tmp_path / "b", per_class=5, splits=["train", "test"])
    shutil.rmtree(folder / "test" / "bag")
    with pytest.raises(UserError, match=r"differ from train's \(missing \['bag'\]"):
        fe.make_split(folder_config(folder).data, progress=False)


def test_bad_images_can_be_skipped_and_link_loops_do_not_hang(tmp_path):
    folder = image_folder(tmp_path / "photos")
    (folder / "bag" / "broken.png").write_bytes(b"not a png")
    (folder / "coat" / "loop").symlink_to(folder / "coat", target_is_directory=True)
    split = fe.make_split(folder_config(folder, skip_bad_images=True).data, progress=False)
    assert sum(len(p[1]) for p in (split.train, split.val, split.test)) == 120


def test_hidden_files_and_folders_are_skipped_and_counted(tmp_path):
    folder = image_folder(tmp_path / "photos")
    (folder / "bag" / "._000.png").write_bytes(b"\0\5\26\7 macOS resource fork")  # refused the folder before
    checkpoints = folder / "coat" / ".ipynb_checkpoints"
    checkpoints.mkdir()
    shutil.copy(folder / "shoe" / "000.png", checkpoints / "000-checkpoint.png")  # was a train/test duplicate
    (folder / ".trash").mkdir()  # a hidden class folder
    (folder / ".trash" / "x.png").write_bytes(png_bytes(synthetic_images(np.array([1]))[0]))
    with pytest.warns(Notice, match="skipped 3 hidden files or folders"):
        split = fe.make_split(folder_config(folder).data, progress=False)
    assert sum(len(p[1]) for p in (split.train, split.val, split.test)) == 120 and len(split.classes) == 3
    assert split.facts()["source"] == {"skipped_hidden": 3}


def test_skipped_bad_images_are_counted_and_said(tmp_path, capsys):
    from fashion_ensemble.cli import main

    folder = image_folder(tmp_path / "photos")
    for i in range(5):
        (folder / "bag" / f"broken{i}.png").write_bytes(b"not a png")
    assert main(["data", "check", "--data", str(folder), "--skip-bad-images"]) == 0
    captured = capsys.readouterr()
    assert "OK (left out: 5 undecodable files)" in captured.out
    assert "note: " in captured.err and "left out 5 of 125 files that cannot be decoded" in captured.err
    split = fe.make_split(folder_config(folder, skip_bad_images=True).data, progress=False)
    assert split.facts()["source"] == {"skipped_bad_images": 5}


@pytest.mark.slow
def test_leaks_count_images_and_are_said_when_the_run_starts(tmp_path, capsys):
    folder = image_folder(tmp_path / "photos", per_class=30, splits=["train", "test"])
    for i in range(20):  # 20 copies of one training image in test
        shutil.copy(folder / "train" / "bag" / "000.png", folder / "test" / "bag" / f"copy{i}.png")
    split = fe.make_split(folder_config(folder).data, progress=False)
    leaks = split.facts()["cross_split_duplicates"]
    assert leaks["train/test"] == 20 or leaks["val/test"] == 20  # images, not distinct contents (was 1)
    from fashion_ensemble.cli import main

    cfg = write_config(tmp_path / "c.json", smoke_config())
    assert main(["run", "--config", str(cfg), "--data", str(folder), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "note: 20 of the 110 test images are copies of" in err and "score it fairly" in err


def test_a_train_subset_of_a_folder_with_val_is_a_sample_of_every_class(tmp_path):
    folder = image_folder(tmp_path / "photos", per_class=10, splits=["train", "val", "test"])
    split = fe.make_split(folder_config(folder, train_subset=12).data, progress=False)
    assert len(split.train[1]) == 12 and set(split.train[1].tolist()) == {0, 1, 2}  # not the first class alone


@pytest.mark.slow
def test_cli_image_folder_and_skip_bad_images(tmp_path):
    folder = image_folder(tmp_path / "photos")
    (folder / "bag" / "broken.png").write_bytes(b"not a png")
    cfg = write_config(tmp_path / "c.json", smoke_config())
    base = [sys.executable, "-m", "fashion_ensemble.cli", "run", "--config", str(cfg), "--data", str(folder), "--quiet"]
    r = subprocess.run([*base, "--out", str(tmp_path / "refused")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "--skip-bad-images" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*base, "--out", str(tmp_path / "run"), "--skip-bad-images"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["skip_bad_images"] is True


def test_balanced_accuracy_and_data_check_on_a_folder(tmp_path, capsys, animals):
    from sklearn.metrics import balanced_accuracy_score

    from fashion_ensemble.cli import main
    from fashion_ensemble.study.metrics import classification_metrics

    y = np.array([0, 0, 0, 0, 1, 2])
    proba = np.eye(3)[[0, 0, 0, 1, 1, 1]]  # class 0: 3 of 4 right, class 1 right, class 2 wrong
    assert classification_metrics(y, proba, NAMES)["balanced_accuracy"] == pytest.approx((0.75 + 1 + 0) / 3)
    assert balanced_accuracy_score(y, proba.argmax(1)) == pytest.approx(0.5833333)
    assert "Balanced accuracy" in (animals / "report.md").read_text()
    folder = image_folder(tmp_path / "photos")
    assert main(["data", "check", "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "3 classes: bag, coat, shoe" in out and "train 96, val 12, test 12" in out


# -- geometry: image size and channels ---------------------------------------------------------------------------------

COLOURS = {"red": (200, 40, 40), "green": (40, 160, 40), "blue": (40, 40, 200)}  # similar luma: colour decides


def colour_folder(root, per_class=40, side=48):
    """Class folders of RGB PNGs: a rectangle of the class's colour, random size and place, on white."""
    rng = np.random.default_rng(2)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = np.full((side, side, 3), 255, np.uint8)
            h, w = rng.integers(12, side - 4, size=2)
            top, left = rng.integers(0, side - h), rng.integers(0, side - w)
            image[top : top + h, left : left + w] = colour
            (root / name / f"{i:03d}.png").write_bytes(png_bytes(image))
    return root


@pytest.mark.slow
def test_an_rgb_folder_at_32_pixels_trains_both_members_and_predicts(tmp_path):
    folder = colour_folder(tmp_path / "colours")
    out = run_study(folder_config(folder, image_size=32, channels=3), tmp_path / "run", device="cpu",
                       progress=False)
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == ["blue", "green", "red"] and set(m["models"]) == {"ann", "cnn", "ensemble"}
    model = fe.load(out)
    assert model.input_shape == (3, 32, 32)
    assert model.members["ann"].model.body[1].in_features == 3 * 32 * 32  # the ANN's input width follows
    assert model.members["cnn"].model.body[0].in_channels == 3  # so does the CNN's first convolution
    photo = tmp_path / "photo.png"
    pixels = np.full((60, 90, 3), 255, np.uint8)
    pixels[10:50, 20:70] = COLOURS["red"]
    photo.write_bytes(png_bytes(pixels))
    x = preprocess(photo, size=32, channels=3)
    assert x.shape == (32, 32, 3) and tuple(x[16, 16]) == COLOURS["red"]  # trimmed, fitted, colours kept
    assert np.array_equal(preprocess(pixels, size=32, channels=3), x)  # a numpy image goes the same way
    proba = model.predict_proba(x[None])
    assert proba.shape == (1, 3) and np.isclose(proba.sum(), 1)
    with pytest.raises(UserError, match=r"expected 32×32 RGB images as \(N, 32, 32, 3\), got shape \(1, 28, 28\)"):
        model.predict_proba(np.zeros((1, 28, 28), np.uint8))
    records = list(predict_files(model, [photo]))
    assert set(records[0]["probabilities"]) == set(COLOURS)
    path = export_onnx(model, tmp_path / "m.onnx")[0]
    session = ort.InferenceSession(str(path))
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["input_shape"]) == [3, 32, 32] and "32×32 RGB" in meta["input"]
    onnx_proba = session.run(None, {"images": (x[None] / 255).astype(np.float32)})[0]
    assert np.abs(onnx_proba - proba).max() < 1e-4
    assert np.allclose(fe.OnnxEnsemble(path).predict_proba(x[None]), proba, atol=1e-4)
    with TestClient(create_app(out, ServeConfig()), base_url="http://localhost") as c:
        assert c.get("/health").json()["input_shape"] == [3, 32, 32]
        answer = c.post("/predict?input=true", content=photo.read_bytes()).json()
        assert np.array(answer["input"]).shape == (32, 32, 3) and set(answer["probabilities"]) == set(COLOURS)


def test_a_greyscale_folder_at_another_size(tmp_path):
    folder = image_folder(tmp_path / "photos", per_class=12, splits=["train", "val", "test"], size=56)
    split = fe.make_split(folder_config(folder, image_size=14, pipeline="pad").data, progress=False)
    assert split.train[0].shape == (36, 14, 14)
    rgb = fe.make_split(folder_config(folder, image_size=14, channels=3, pipeline="pad").data, progress=False)
    assert rgb.test[0].shape == (36, 14, 14, 3)  # the cache keeps the geometries apart


@pytest.mark.parametrize("data, message", [
    ({"image_size": 4}, r"data.image_size must be 8..256"),
    ({"channels": 2}, r"data.channels must be 1 \(greyscale\) or 3"),
])
def test_geometry_bounds(data, message):
    with pytest.raises(UserError, match=message):
        fe.DataConfig(**data)


def test_a_cnn_too_deep_for_small_images_is_refused():
    cfg = smoke_config()
    deep = fe.CNNConfig(stem=8, stages=((8,), (8,), (8,), (8,), (8,)))
    with pytest.raises(UserError, match="at most 4 stages for 8-pixel images"):
        cfg.replace(data=dataclasses.replace(cfg.data, image_size=8),
                    members={"cnn": dataclasses.replace(cfg.members["cnn"], model=deep)})


def test_idx_sources_keep_their_own_geometry(tmp_path):
    folder = idx_folder(tmp_path / "idx")
    with pytest.raises(UserError, match=r"expected 32×32 greyscale images .* got shape \(300, 28, 28\): train with "
                                        "--image-size 28"):
        load_source(fe.DataConfig(source=str(folder), image_size=32))
    with pytest.raises(UserError, match="IDX files hold greyscale images"):
        load_source(fe.DataConfig(source=str(folder), channels=3))
    with pytest.raises(UserError, match="Fashion-MNIST's images are 28×28"):
        load_source(fe.DataConfig(image_size=32))


def test_cli_geometry_options_reach_the_config(tmp_path, capsys):
    from fashion_ensemble.cli import build_parser, main, run_config

    cfg_file = write_config(tmp_path / "c.json", smoke_config())
    args = build_parser().parse_args(["run", "--config", str(cfg_file), "--data", "x", "--image-size", "32",
                                      "--channels", "3"])
    data = run_config(args).data
    assert (data.source, data.image_size, data.channels, data.input_shape) == ("x", 32, 3, (3, 32, 32))
    folder = colour_folder(tmp_path / "colours", per_class=30)
    assert main(["data", "check", "--data", str(folder), "--image-size", "16", "--channels", "3"]) == 0
    assert "3 classes: blue, green, red" in capsys.readouterr().out


def test_no_flips_turns_every_mirror_off(tmp_path):
    from fashion_ensemble.cli import build_parser, run_config

    cfg = run_config(build_parser().parse_args(["run", "--profile", "default", "--no-flips"]))
    assert not any(m.tta_flip or m.train.augment.flip for m in cfg.members.values())
    assert any(m.tta_flip for m in fe.profile("default").members.values())  # the profile itself flips


# -- precision ---------------------------------------------------------------------------------------------------------


def test_auto_precision_picks_bf16_only_where_it_is_native(monkeypatch):
    from fashion_ensemble.model import inference

    cpu = torch.device("cpu")
    assert inference.choose_precision("fp32", cpu)[0] == "fp32" and inference.choose_precision("bf16", cpu)[0] == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert inference.choose_precision("auto", cpu) == ("fp32", "auto: no native bf16 on this CPU")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert inference.choose_precision("auto", cpu)[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference.choose_precision("auto", torch.device("cuda"))[0] == "bf16"


@pytest.mark.slow
def test_forced_bf16_trains_on_any_cpu_and_is_recorded(tmp_path):
    from fashion_ensemble.cli import build_parser, run_config

    cfg_file = write_config(tmp_path / "c.json", smoke_config())
    cfg = run_config(build_parser().parse_args(["run", "--config", str(cfg_file), "--precision", "bf16"]))
    assert all(m.train.precision == "bf16" for m in cfg.members.values())
    folder = image_folder(tmp_path / "photos", per_class=30)
    out = run_study(cfg.replace(data=dataclasses.replace(cfg.data, source=str(folder), pipeline="pad")),
                       tmp_path / "run", device="cpu", progress=False)
    history = json.loads((out / "history.json").read_text())["members"]
    assert all(e["precision"] == "bf16" and np.isfinite(e["val_loss"]) for h in history.values() for e in h["epochs"])
    assert "| bf16 |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_bench_times_bf16_beside_fp32_where_it_is_native(monkeypatch, tiny_run):
    from fashion_ensemble.tools import bench

    labels = np.arange(256) % 10
    monkeypatch.setattr(bench, "native_bf16", lambda device: True)
    result = bench.run_bench(tiny_run, bench.TINY, synthetic_images(labels), labels)  # its small members: fast
    assert result["precisions"] == ["fp32", "bf16"]
    assert result["cnn_train_img_s_bf16"] > 0 and result["ann_bf16_speedup"] > 0
    assert "bf16 (native here)" in bench.format_result(result)


@pytest.mark.parametrize("protocol", ["standard", "paper"])
@pytest.mark.parametrize("layout", [None, ["train", "test"], ["train", "val", "test"]])
def test_every_image_of_a_folder_knows_its_file(tmp_path, protocol, layout):
    folder = image_folder(tmp_path / "photos", per_class=30, splits=layout)
    (folder / (layout[0] if layout else "") / "bag" / "broken.png").write_bytes(b"not a png")  # left out
    split = fe.make_split(folder_config(folder, protocol=protocol, skip_bad_images=True).data, progress=False)
    seen = []
    for part in ("train", "val", "test"):
        (images, labels), origins = getattr(split, part), split.origins[part]
        assert len(origins) == len(labels)
        for image, label, origin in zip(images, labels, origins):
            assert origin.split("/")[-2] == split.classes[label]
            assert np.array_equal(preprocess(folder / origin), image)
        seen += list(origins)
    assert len(set(seen)) == len(seen) == 3 * 30 * len(layout or [None]) and not any("broken" in o for o in seen)


@pytest.mark.parametrize("protocol", ["standard", "paper"])
def test_every_idx_image_knows_its_file_and_place(tmp_path, protocol):
    folder = idx_folder(tmp_path / "idx")
    raw, *_ = load_source(config_for(folder).data)
    split = fe.make_split(dataclasses.replace(config_for(folder).data, protocol=protocol), progress=False)
    for part in ("train", "val", "test"):
        (images, labels), origins = getattr(split, part), split.origins[part]
        for image, label, origin in zip(images, labels, origins):
            file, place = origin[:-1].split("[")
            source = {FILES[p][0]: p for p in FILES}[file]
            assert np.array_equal(raw[source][0][int(place)], image) and raw[source][1][int(place)] == label
    if protocol == "standard":  # the official test file, in its order
        assert list(split.origins["test"]) == [f"{FILES['test'][0]}[{i}]" for i in range(90)]
