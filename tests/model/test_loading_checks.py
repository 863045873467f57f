"""Loading checks what it reads: weights that give NaN, temperatures out of range, an absurd config.json."""


import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

import fashion_ensemble as fe
from fashion_ensemble.errors import UserError
from fashion_ensemble.model import runs
from fashion_ensemble.serving.serve import ServeConfig, create_app
from helpers import (
    copy_run,
    garment_photo,
    one_line,
    png_bytes,
    run_cli,
)

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
    ensemble = fe.load(tiny_run, engine="torch")
    monkeypatch.setattr(ensemble.members["cnn"].model, "forward", lambda x: torch.full((len(x), 10), float("nan")))
    with pytest.raises(UserError, match="non-finite probabilities"):
        ensemble.predict_proba(np.zeros((2, 28, 28), np.uint8))
    fast = fe.load(tiny_run)  # ONNX Runtime: weights turned NaN after loading
    with torch.no_grad():
        next(fast.members["ann"].model.parameters()).fill_(float("nan"))
    with pytest.raises(UserError, match="non-finite probabilities"):
        fast.predict_proba(np.zeros((2, 28, 28), np.uint8))
    app = create_app(tiny_run, ServeConfig(engine="torch"))
    monkeypatch.setattr(fe.Member, "_proba", lambda self, x, calibrated=True, keep_features=None:
                        np.full((len(x), 10), np.nan))
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
