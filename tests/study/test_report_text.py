"""Class names are data, never markup: escaped wherever they are shown (report.md, the model card, the OpenAPI
description that /docs and /redoc render, plot labels); a report that fails never loses the trained run."""

import json
import re

import pytest
from fastapi.testclient import TestClient

import fashion_ensemble as fe
from conftest import HOSTILE_CLASSES
from fashion_ensemble.serving.serve import create_app
from fashion_ensemble.study.pipeline import run_study
from fashion_ensemble.text import markdown, one_line


@pytest.mark.parametrize("name, shown", [
    ("T-shirt/top", "T-shirt/top"),  # the data set's own names stay as they are
    ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
    ("a|b", "a\\|b"),
    ("$x^$", "\\$x^\\$"),
    ("[x](javascript:alert(1))", "\\[x\\](javascript:alert(1))"),
    ("two\nlines", "two lines"),
    ("a&b", "a&amp;b"),
])
def test_markdown_escapes_what_could_become_markup(name, shown):
    assert markdown(name) == shown


def test_one_line_turns_control_characters_into_spaces():
    assert one_line("a\r\nb\tc\u2028d") == "a  b c d"


def table_rows(report: str) -> list[list[str]]:
    """Each Markdown table row's cells, split as a renderer splits them (on | not escaped)."""
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            for line in report.splitlines() if line.startswith("|")]


def test_the_report_shows_hostile_class_names_as_text(hostile_run):
    report = (hostile_run / "report.md").read_text()
    assert "<img" not in report and "&lt;img src=x onerror=window.pwned=1&gt;" in report
    per_class = [row for row in table_rows(report) if row and row[0] in map(markdown, HOSTILE_CLASSES)]
    assert per_class and all(len(row) == len(per_class[0]) for row in per_class)  # "a|b" is one cell
    assert {"a\\|b", "\\$x^\\$"} <= {row[0] for row in per_class}
    # The plots were drawn with the names as plain text: "$x^$" is no mathtext formula that fails to parse.
    for plot in ("confusion_matrices.png", "per_class_f1.png", "training_curves.png", "reliability.png"):
        assert (hostile_run / plot).is_file() and f"![{plot}]({plot})" in report
    assert "could not be drawn" not in report
    assert json.loads((hostile_run / "metrics.json").read_text())["classes"] == sorted(HOSTILE_CLASSES)


@pytest.mark.slow
def test_a_failing_plot_is_named_in_the_report_and_the_run_completes(tmp_path, tiny_data, monkeypatch):
    from helpers import smoke_config

    def broken(metrics):
        raise ValueError("mathtext says no")

    monkeypatch.setattr("fashion_ensemble.study.report.plot_per_class_f1", broken)
    out = run_study(smoke_config(), tmp_path / "run", data_dir=tiny_data, device="cpu", progress=False)
    report = (out / "report.md").read_text()
    assert fe.RunFolder(out).is_complete() and fe.load(out)
    assert "per_class_f1.png could not be drawn (ValueError: mathtext says no)" in report
    assert "## Per-class F1" in report and not (out / "per_class_f1.png").exists()


def test_the_openapi_description_escapes_class_names(hostile_run):
    with TestClient(create_app(hostile_run), base_url="http://localhost") as client:
        description = client.get("/openapi.json").json()["info"]["description"]
        assert "<img" not in description and "&lt;img src=x onerror=window.pwned=1&gt;" in description
        assert client.get("/health").json()["classes"] == sorted(HOSTILE_CLASSES)  # the JSON answers: the names


def test_the_model_card_escapes_class_names(hostile_run, tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "ship_model.py"
    spec = importlib.util.spec_from_file_location("ship_model", script)
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    text = ship.card(fe.RunFolder(hostile_run), {"note": "kept in fp32"})
    assert "<img" not in text and "&lt;img src=x onerror=window.pwned=1&gt;" in text and "a\\|b" in text


def test_predict_keeps_one_line_per_file_whatever_its_name(tiny_run, tmp_path, capsys):
    import numpy as np

    from fashion_ensemble.cli import main
    from helpers import png_bytes, synthetic_images

    (tmp_path / "two\nlines.png").write_bytes(png_bytes(synthetic_images(np.array([2]))[0]))
    (tmp_path / "ok.png").write_bytes(png_bytes(synthetic_images(np.array([3]))[0]))
    assert main(["predict", str(tiny_run), str(tmp_path), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and any("two\\nlines.png" in line for line in lines)
