"""`verticals models promote VERTICAL --gate DATA`: the champion/challenger gate, on the toy
vertical (accuracy of a 4-float MLP on a labelled CSV)."""

from __future__ import annotations

import pytest

from common.aliases import alias_history, get_aliases, set_alias
from common.cli import main
from common.registry import get_vertical
from tests.common.toy_vertical import toy_labelled, train_toy


@pytest.fixture()
def store(tmp_path):
    """An untrained toy bundle (weak) and a fitted one (strong), and a labelled gate CSV."""
    root = tmp_path / "store"
    weak, strong = train_toy(root, 0).version, train_toy(root, 60).version
    data = tmp_path / "gate.csv"
    toy_labelled(400, seed=7).to_csv(data, index=False)
    return root, weak, strong, data


def _bytes(root):
    return (root / "toy" / "aliases.json").read_bytes()


def _acc(root, version, data):
    from common.artifacts import load_bundle

    bundle = load_bundle(root / "toy" / version, vertical="toy")
    return get_vertical("toy").gate_score(bundle, data, None)["accuracy"]


def test_bundles_really_differ(store):
    root, weak, strong, data = store
    a_weak, a_strong = _acc(root, weak, data), _acc(root, strong, data)
    assert a_strong > 0.9 and a_strong - a_weak > 0.2


def test_gate_passes_and_records_both_values(store, capsys):
    root, weak, strong, data = store
    set_alias(root, "toy", weak, "production")
    set_alias(root, "toy", strong, "candidate")
    r = ["--root", str(root)]
    assert main(["models", "promote", "toy", "--gate", str(data), "--reason", "weekly", *r]) == 0
    out = capsys.readouterr().out.splitlines()
    a_weak, a_strong = _acc(root, weak, data), _acc(root, strong, data)
    assert out[0].startswith(f"production {weak} accuracy={a_weak:.4f}")
    assert out[1].startswith(f"candidate {strong} accuracy={a_strong:.4f}")
    assert out[-1] == f"toy: production {weak} -> {strong}"
    assert get_aliases(root, "toy") == {"production": strong}
    rec = [h for h in alias_history(root, "toy") if h["alias"] == "production"][-1]
    assert rec["reason"].startswith("weekly [gate accuracy:")
    assert f"candidate {a_strong:.4f} vs production {a_weak:.4f}" in rec["reason"]


def test_gate_refuses_a_worse_candidate_and_keeps_the_store(store, capsys):
    root, weak, strong, data = store
    set_alias(root, "toy", strong, "production")
    set_alias(root, "toy", weak, "candidate")
    before = _bytes(root)
    a_weak, a_strong = _acc(root, weak, data), _acc(root, strong, data)
    argv = ["models", "promote", "toy", "--gate", str(data), "--margin", "0.01",
            "--root", str(root)]
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.err == (f"error: gate: candidate accuracy {a_weak:.4f} is below production "
                       f"{a_strong:.4f} by {a_strong - a_weak:.4f} (margin 0.0100); "
                       "not promoted\n")
    assert len(cap.out.splitlines()) == 2  # both scores were printed
    assert _bytes(root) == before


def test_margin_lets_a_slightly_worse_candidate_through(store, capsys):
    root, weak, strong, data = store
    # a second fitted bundle with fewer steps: a little worse than `strong`, not much
    close = train_toy(root, 25).version
    a_close, a_strong = _acc(root, close, data), _acc(root, strong, data)
    gap = a_strong - a_close
    assert 0 < gap < 0.2
    set_alias(root, "toy", strong, "production")
    set_alias(root, "toy", close, "candidate")
    before = _bytes(root)
    r = ["--root", str(root)]
    assert main(["models", "promote", "toy", "--gate", str(data), *r]) == 2
    assert "not promoted" in capsys.readouterr().err
    assert _bytes(root) == before
    assert main(["models", "promote", "toy", "--gate", str(data), "--margin",
                 f"{gap + 0.001:.4f}", *r]) == 0
    assert get_aliases(root, "toy") == {"production": close}


def test_gate_without_production_promotes_with_a_note(store, capsys):
    root, _, strong, data = store
    set_alias(root, "toy", strong, "candidate")
    assert main(["models", "promote", "toy", "--gate", str(data), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no production alias yet, nothing to compare" in out
    assert get_aliases(root, "toy") == {"production": strong}


@pytest.mark.parametrize("case, message", [
    ("missing_column", "error: gate: gate.csv: no column 'label'"),
    ("not_csv", "error: gate: gate.json: not a CSV file"),
    ("empty", "error: gate: gate.csv: no rows"),
    ("no_file", "error: gate: gate.csv: no such file"),
    ("negative_margin", "error: margin: must be a number >= 0, got -0.1"),
])
def test_bad_gate_input_is_one_line_and_moves_nothing(store, tmp_path, capsys, case, message):
    root, weak, strong, data = store
    set_alias(root, "toy", weak, "production")
    set_alias(root, "toy", strong, "candidate")
    before = _bytes(root)
    bad, extra = tmp_path / "bad" / "gate.csv", []
    bad.parent.mkdir()
    if case == "missing_column":
        toy_labelled(20, 0).drop(columns="label").to_csv(bad, index=False)
    elif case == "not_csv":
        bad = bad.with_suffix(".json")
        bad.write_text("{}")
    elif case == "empty":
        toy_labelled(20, 0).iloc[:0].to_csv(bad, index=False)
    elif case == "negative_margin":
        bad, extra = data, ["--margin", "-0.1"]
    assert main(["models", "promote", "toy", "--gate", str(bad), *extra,
                 "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert _bytes(root) == before


def test_vertical_without_gate_refuses(store, capsys, monkeypatch):
    root, weak, strong, data = store
    set_alias(root, "toy", weak, "production")
    set_alias(root, "toy", strong, "candidate")
    before = _bytes(root)
    monkeypatch.setattr(type(get_vertical("toy")), "gate_metric", None)
    assert main(["models", "promote", "toy", "--gate", str(data), "--root", str(root)]) == 2
    assert capsys.readouterr().err == "error: gate: toy has no gate\n"
    assert _bytes(root) == before
