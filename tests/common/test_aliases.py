"""Aliases in the bundle store and the `verticals models` commands that move them."""

from __future__ import annotations

import json
import threading

import pytest

from common.aliases import (
    alias_history,
    get_aliases,
    promote,
    resolve_alias,
    rollback,
    serving_ref,
    set_alias,
)
from common.artifacts import WEIGHTS
from common.cli import main
from common.errors import BundleError, InvalidInput, NotFound
from common.registry import get_vertical


@pytest.fixture()
def store(tmp_path):
    """Three toy bundles (v1 < v2 < v3) in a fresh store."""
    toy = get_vertical("toy")
    versions = [toy.train_default(tmp_path).version for _ in range(3)]
    return tmp_path, versions


def _state_bytes(root):
    p = root / "toy" / "aliases.json"
    return p.read_bytes() if p.exists() else None


def test_alias_promote_rollback_history(store):
    root, (v1, v2, v3) = store
    assert serving_ref(root, "toy") == "latest"
    set_alias(root, "toy", v1, "production", reason="first")
    set_alias(root, "toy", v2, "candidate", reason="retrained", user="alice")
    assert get_aliases(root, "toy") == {"production": v1, "candidate": v2}
    assert serving_ref(root, "toy") == root / "toy" / v1
    rec = promote(root, "toy", reason="gate passed")
    assert (rec["from"], rec["to"], rec["action"]) == (v1, v2, "promote")
    assert get_aliases(root, "toy") == {"production": v2}
    set_alias(root, "toy", v3, "candidate")
    promote(root, "toy")
    assert resolve_alias(root, "toy", "production") == root / "toy" / v3
    # each rollback steps one production move back, then there is nothing left
    assert rollback(root, "toy", reason="bad p99")["to"] == v2
    assert rollback(root, "toy")["to"] == v1
    with pytest.raises(NotFound, match="no earlier production version"):
        rollback(root, "toy")
    hist = alias_history(root, "toy")
    assert [h["action"] for h in hist] == ["alias", "alias", "promote", "promote", "alias",
                                           "promote", "promote", "rollback", "rollback"]
    cand = hist[1]
    assert cand["user"] == "alice" and cand["reason"] == "retrained"
    assert cand["metrics_to"] == json.loads(
        (root / "toy" / v2 / "manifest.json").read_text())["metrics"]
    assert all({"time", "from", "to", "reason", "user", "metrics_from"} <= h.keys() for h in hist)


def test_bad_moves_leave_the_store_unchanged(store, tmp_path_factory):
    root, (v1, v2, _) = store
    set_alias(root, "toy", v1, "production")
    before = _state_bytes(root)
    with pytest.raises(NotFound, match="no bundle version"):
        set_alias(root, "toy", "20000101T000000000000Z", "candidate")
    with pytest.raises(InvalidInput, match="not a valid alias"):
        set_alias(root, "toy", v2, "latest")
    with pytest.raises(InvalidInput, match="not a bundle version"):
        set_alias(root, "toy", "../toy", "candidate")
    with pytest.raises(NotFound, match="no 'candidate' alias"):
        promote(root, "toy")
    with pytest.raises(NotFound, match="no earlier production version"):
        rollback(root, "toy")
    # a bundle of another vertical copied under toy/ is refused by its manifest
    other = root / "toy" / "20990101T000000000000Z"
    (root / "toy" / v2).rename(other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["vertical"] = "fraud"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="is a 'fraud' bundle, not 'toy'"):
        set_alias(root, "toy", other.name, "candidate")
    # a corrupted bundle can never be aliased
    (root / "toy" / v1 / WEIGHTS).write_bytes(b"corrupt")
    with pytest.raises(BundleError, match="checksum mismatch"):
        set_alias(root, "toy", v1, "candidate")
    assert _state_bytes(root) == before
    with pytest.raises(NotFound, match="no bundles for vertical"):
        set_alias(tmp_path_factory.mktemp("empty"), "toy", v1, "candidate")


def test_concurrent_moves_are_all_recorded(store):
    root, versions = store
    errors = []

    def move(i):
        try:
            set_alias(root, "toy", versions[i % 3], "candidate", reason=str(i))
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=move, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    hist = alias_history(root, "toy")
    assert sorted(int(h["reason"]) for h in hist) == list(range(12))
    # the history is a chain: each move starts where the previous one ended
    assert all(a["to"] == b["from"] for a, b in zip(hist, hist[1:], strict=False))


def test_cli_models_alias_commands(store, capsys):
    root, (v1, v2, _) = store
    r = ["--root", str(root)]
    assert main(["models", "alias", "toy", v1, "production", "--reason", "first", *r]) == 0
    assert main(["models", "alias", "toy", v2, "candidate", *r]) == 0
    capsys.readouterr()
    assert main(["models", "list", *r]) == 0
    listing = capsys.readouterr().out
    assert f"{v1:<24} production" in listing and f"{v2:<24} candidate" in listing
    assert main(["models", "show", "toy/candidate", *r]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == v2
    assert main(["models", "diff", "toy/production", "toy/candidate", *r]) == 0
    diff = capsys.readouterr().out
    assert diff.splitlines()[0].split() == ["A", f"toy/{v1}", "B", f"toy/{v2}"]
    assert diff.splitlines()[2].startswith("created_at *")
    assert main(["models", "promote", "toy", *r]) == 0
    assert capsys.readouterr().out.strip() == f"toy: production {v1} -> {v2}"
    assert main(["models", "rollback", "toy", *r]) == 0
    assert capsys.readouterr().out.strip() == f"toy: production {v2} -> {v1}"
    assert main(["models", "history", "toy", "--json", *r]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models", "alias", "toy", "nope", "candidate"], "error: toy has no bundle version"),
        (["models", "alias", "nosuch", "v", "candidate"], "error: unknown vertical"),
        (["models", "promote", "toy"], "error: toy has no 'candidate' alias to promote"),
        (["models", "rollback", "toy"], "error: toy: no earlier production version"),
        (["models", "show", "toy/nope"], "error: toy has no alias or version 'nope'"),
        (["models", "diff", "toy/latest", "/no/such/bundle"], "error: '/no/such/bundle' is not"),
    ],
)
def test_cli_models_errors_are_one_line(store, capsys, argv, message):
    root, _ = store
    before = _state_bytes(root)
    assert main([*argv, "--root", str(root)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err
    assert _state_bytes(root) == before


def test_promote_expect_holds_under_the_lock(store):
    """What a gate scored must still be the candidate and production when promote moves."""
    root, (v1, v2, v3) = store
    set_alias(root, "toy", v1, "production")
    set_alias(root, "toy", v2, "candidate")
    scored = get_aliases(root, "toy")
    set_alias(root, "toy", v3, "candidate")  # moved while the gate was scoring
    before = _state_bytes(root)
    with pytest.raises(InvalidInput, match=f"candidate moved to {v3} \\(expected {v2}\\)"):
        promote(root, "toy", expect=scored)
    assert _state_bytes(root) == before
    assert promote(root, "toy", expect=get_aliases(root, "toy"))["to"] == v3
