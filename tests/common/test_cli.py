"""The `verticals` CLI end to end on the toy vertical (in-process `main`)."""

from __future__ import annotations

import json

from common.cli import main


def test_demo_trains_missing_models_and_prints_examples(tmp_path, capsys):
    assert main(["demo", "--verticals", "toy", "--root", str(tmp_path), "--no-serve"]) == 0
    out = capsys.readouterr().out
    assert "toy: training the default model" in out
    assert "http://127.0.0.1:8000/docs" in out
    assert "curl -s -X POST 'http://127.0.0.1:8000/toy/v1/predict'" in out
    # second run reuses the bundle
    assert main(["demo", "--verticals", "toy", "--root", str(tmp_path), "--no-serve"]) == 0
    assert "using the existing bundle" in capsys.readouterr().out


def test_models_list_and_show(tmp_path, capsys):
    assert main(["train", "toy", "--root", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--root", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("toy") and "toy-mlp" in line
    assert main(["models", "show", "toy/latest", "--root", str(tmp_path)]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["vertical"] == "toy" and "model.safetensors" in manifest["files"]


def test_errors_exit_nonzero_with_one_line(tmp_path, capsys):
    assert main(["models", "show", "toy/latest", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no complete bundle for vertical")
    assert main(["serve", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no bundles under") and "\n" not in err
    assert main(["evaluate", "toy", "--out", str(tmp_path / "r.json")]) == 1
    assert "no evaluation protocol" in capsys.readouterr().err
