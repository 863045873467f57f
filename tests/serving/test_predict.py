"""`fashion-ensemble predict`: records for good files, bad files reported and skipped, exit code 1 when any failed."""

import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fashion_ensemble as fe
from fashion_ensemble.data.split import CLASSES
from fashion_ensemble.model.preprocess import as_photo, preprocess
from fashion_ensemble.serving.predict import predict_files, records
from helpers import png_bytes, synthetic_images


def cli(*args):
    return subprocess.run([sys.executable, "-m", "fashion_ensemble.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def folder(tmp_path):
    """Three synthetic garments (classes 0, 3, 7) as files of different kinds, and one broken file."""
    images = synthetic_images(np.array([0, 3, 7]))
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(png_bytes(images[0]))
    (tmp_path / "sub" / "b.jpg").write_bytes(as_photo(images[1]))
    (tmp_path / "c.webp").write_bytes(png_bytes(np.stack([images[2]] * 3, axis=-1), format="WEBP", lossless=True))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    return tmp_path


def test_records_have_the_service_shape(tiny_run):
    ensemble = fe.load(tiny_run)
    recs = records(ensemble, synthetic_images(np.array([1, 2])), top_k=3)
    assert len(recs) == 2
    for rec in recs:
        assert set(rec) == {"label", "ood", "ood_score", "probabilities", "members"}
        assert isinstance(rec["ood"], bool) and 0 <= rec["ood_score"] <= 1
        assert rec["label"] in CLASSES and rec["label"] == next(iter(rec["probabilities"]))
        assert len(rec["probabilities"]) == 3 and list(rec["probabilities"].values()) == sorted(
            rec["probabilities"].values(), reverse=True)
        assert set(rec["members"]) == {"ann", "cnn"}
    full = records(ensemble, synthetic_images(np.array([1])))[0]
    assert sum(full["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_files_keeps_order_and_reports_bad_ones(tiny_run, folder):
    files = [folder / "a.png", folder / "broken.png", folder / "missing.png", folder / "c.webp"]
    out = list(predict_files(fe.load(tiny_run), files, batch_size=2))
    assert [r["file"] for r in out] == [str(f) for f in files]
    assert "error" in out[1] and "not an image" in out[1]["error"]
    assert "error" in out[2] and "cannot read" in out[2]["error"]
    expected = records(fe.load(tiny_run), np.stack([preprocess(folder / "a.png"), preprocess(folder / "c.webp")]))
    assert [out[0]["label"], out[3]["label"]] == [e["label"] for e in expected]


@pytest.mark.slow
def test_cli_json_lines_and_exit_code(tiny_run, folder):
    r = cli("predict", str(tiny_run), str(folder), "--json")
    assert r.returncode == 1  # one file failed
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [line["file"].removeprefix(str(folder) + "/") for line in lines] == ["a.png", "broken.png", "c.webp",
                                                                                "sub/b.jpg"]
    good = {line["file"].rsplit("/", 1)[1]: line for line in lines if "error" not in line}
    ensemble = fe.load(tiny_run)
    # The CLI scores the readable files as one batch, in its order; so does this (on an AVX-512 CPU a batch of one
    # differs from it in the last bits, enough to round one 1e-6 step apart).
    paths = ("a.png", "c.webp", "sub/b.jpg")
    batch = records(ensemble, np.stack([preprocess(folder / path) for path in paths]))
    for path, expected in zip(paths, batch):
        name = path.rsplit("/", 1)[-1]
        assert good[name]["label"] == expected["label"]
        assert good[name]["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert all(len(v["probabilities"]) == 10 and set(v["members"]) == {"ann", "cnn"} for v in good.values())
    assert "skipped" in r.stderr and "broken.png" in r.stderr and "1 of 4 files" in r.stderr


@pytest.mark.slow
def test_cli_text_top_k_and_success(tiny_run, folder):
    r = cli("predict", str(tiny_run), str(folder / "a.png"), str(folder / "sub"), "--top-k", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    label = records(fe.load(tiny_run), preprocess(folder / "a.png")[None])[0]["label"]
    doubt = r"(unlike the training images \(ood score [\d.]+\), a guess: )?"  # these files are unlike the training
    assert len(lines) == 2 and re.match(rf"{re.escape(str(folder / 'a.png'))}: {doubt}{re.escape(label)} ", lines[0])
    assert lines[0].count("%") == 2 + 2  # two classes, then the two members' picks


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["predict", "/nonexistent/run", "x.png"], "does not exist"),
    (["predict", "RUN", "EMPTY"], "no image files"),
    (["predict", "RUN", "x.png", "--top-k", "0"], "expected a whole number"),
])
def test_cli_mistakes(tiny_run, tmp_path, args, message):
    args = [str(tiny_run) if a == "RUN" else str(tmp_path) if a == "EMPTY" else a for a in args]
    r = cli(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_predict_proba_takes_what_preprocess_takes(tiny_run, tmp_path):
    from fashion_ensemble.errors import UserError
    from fashion_ensemble.serving.export import OnnxEnsemble
    from helpers import garment_photo

    model = fe.load(tiny_run)
    photo = garment_photo()
    path = tmp_path / "photo.png"
    photo.save(path)
    expected = model.predict_proba(preprocess(path)[None])
    for given in (path, str(path), path.read_bytes(), photo, np.asarray(photo), [path], [np.asarray(photo)]):
        assert np.array_equal(model.predict_proba(given), expected), type(given)
    assert model.predict_proba([path, path]).shape == (2, 10)
    assert model.predict_labels([path]) == [model.classes[int(expected.argmax())]]
    onnx = OnnxEnsemble(model)
    assert np.allclose(onnx.predict_proba(photo), expected, atol=1e-4)
    assert np.allclose(fe.load(tiny_run, engine="torch").predict_proba(photo), expected, atol=1e-5)
    assert onnx.predict_labels(photo)[0] in model.classes
    with pytest.raises(UserError, match="expected an image: a path, bytes, .* got int"):
        model.predict_proba(3)
    with pytest.raises(UserError, match="non-finite values"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the clear error, not a numpy RuntimeWarning first
            model.predict_proba(np.full((1, 28, 28), np.nan, np.float32))
    text = repr(model)
    assert text.startswith("SoftVotingEnsemble(ann (ann, ") and "10 classes: T-shirt/top" in text and "28×28" in text


def read_table(path):
    import csv
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_csv_rows_are_records_and_user_text_cannot_start_a_formula():
    from fashion_ensemble.serving.predict import csv_header, csv_row

    rec = {"file": "=HYPERLINK(\"x\").png", "label": "@Bag", "ood": True, "ood_score": 0.5,
           "probabilities": {"@Bag": 0.75, "Coat": 0.25}, "members": {}}
    assert csv_header(3) == ["file", "label", "class_1", "probability_1", "class_2", "probability_2", "class_3",
                             "probability_3", "ood", "ood_score", "error"]
    assert csv_row(rec, 3) == ["'=HYPERLINK(\"x\").png", "'@Bag", "'@Bag", "0.750000", "Coat", "0.250000", "", "",
                               "true", "0.500000", ""]
    assert csv_row({"file": "a.png", "error": "a.png: not an image"}, 1) == ["a.png", "", "", "", "", "",
                                                                          "a.png: not an image"]
    assert csv_row({**rec, "ood": None, "ood_score": None}, 1)[-3:] == ["", "", ""]  # a model without the signal


@pytest.mark.slow
def test_cli_csv_has_a_row_per_file_in_order_with_the_reason_for_bad_ones(tiny_run, folder, tmp_path):
    out = tmp_path / "table.csv"
    r = cli("predict", str(tiny_run), str(folder), "--csv", str(out), "--top-k", "2")
    assert r.returncode == 1  # one file failed
    assert r.stdout.splitlines() == [f"wrote 3 predictions to {out} (1 file could not be read: their rows say why)"]
    header, *rows = read_table(out)
    assert header[:6] == ["file", "label", "class_1", "probability_1", "class_2", "probability_2"]
    assert [row[0].removeprefix(str(folder) + "/") for row in rows] == ["a.png", "broken.png", "c.webp", "sub/b.jpg"]
    assert rows[1][1] == "" and "not an image" in rows[1][-1]
    paths = ("a.png", "c.webp", "sub/b.jpg")
    expected = records(fe.load(tiny_run), np.stack([preprocess(folder / path) for path in paths]), top_k=2)
    for row, rec in zip([rows[0], rows[2], rows[3]], expected):
        assert row[1] == rec["label"] and row[2] == next(iter(rec["probabilities"])) and row[-1] == ""
        assert float(row[3]) == pytest.approx(next(iter(rec["probabilities"].values())), abs=1e-6)
        assert row[-3] in ("true", "false") and 0 <= float(row[-2]) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--csv", "/nonexistent/folder/t.csv"], "cannot write the table /nonexistent/folder/t.csv"),
    (["--csv", "t.csv", "--json"], "choose one"),
])
def test_cli_csv_mistakes(tiny_run, folder, args, message):
    r = cli("predict", str(tiny_run), str(folder / "a.png"), *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_ctrl_c_in_predict_csv_leaves_the_rows_written(tiny_run, folder, tmp_path, monkeypatch, capsys):
    from fashion_ensemble import cli as cli_module
    from fashion_ensemble.serving import predict

    real = predict.predict_files

    def interrupted(*args, **kwargs):
        for i, rec in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield rec

    monkeypatch.setattr(predict, "predict_files", interrupted)
    out = tmp_path / "table.csv"
    assert cli_module.main(["predict", str(tiny_run), str(folder), "--csv", str(out), "--quiet"]) == 130
    header, *rows = read_table(out)
    assert len(rows) == 2 and all(len(row) == len(header) for row in rows)
    assert f"interrupted; the first 2 of 4 files are in {out}" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_answers_on_either_engine_alike(tiny_run, folder, tmp_path):
    """`predict` runs on ONNX Runtime by default; `--engine torch` gives the same table from PyTorch."""
    tables = {}
    for engine in ("auto", "torch"):
        out = tmp_path / f"{engine}.csv"
        r = cli("predict", str(tiny_run), str(folder), "--csv", str(out), "--engine", engine, "--quiet")
        assert r.returncode == 1 and "could not be read" in r.stderr  # the broken file; the others are written
        tables[engine] = read_table(out)
    fast, slow = tables["auto"], tables["torch"]
    assert [row[:3] for row in fast] == [row[:3] for row in slow]  # file, label, top class
    for a, b in zip(fast[1:], slow[1:]):
        if a[2]:
            assert float(a[3]) == pytest.approx(float(b[3]), abs=1e-5)
    r = cli("predict", str(tiny_run), str(folder / "a.png"), "--engine", "fast")
    assert r.returncode == 2 and "invalid choice: 'fast'" in r.stderr
