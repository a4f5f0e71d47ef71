"""Bundles: atomic publish, latest, checksum refusal, no pickle."""

from __future__ import annotations

import json

import pytest
import torch

from common.artifacts import BundleWriter, fingerprint, list_bundles, load_bundle
from common.errors import BundleError


def publish(root, value: float = 1.0, vertical: str = "v"):
    w = BundleWriter(root, vertical, "m")
    w.save_weights({"w": torch.full((3,), value)})
    w.add_json("extra/stats.json", {"mean": value})
    return w.publish("pkg.Model", {"dim": 3}, {"auc": 0.9}, data_fingerprint=fingerprint(b"d"))


def test_roundtrip_and_manifest(tmp_path):
    b = publish(tmp_path)
    loaded = load_bundle(b.path)
    assert torch.equal(loaded.state_dict()["w"], torch.ones(3))
    m = loaded.manifest
    assert m["model"] == {"class": "pkg.Model", "config": {"dim": 3}}
    assert m["metrics"] == {"auc": 0.9} and m["vertical"] == "v" and m["name"] == "m"
    assert set(m["files"]) == {"model.safetensors", "extra/stats.json"}
    assert "torch" in m["libraries"] and m["data_fingerprint"] and m["created_at"]
    assert loaded.read_json("extra/stats.json") == {"mean": 1.0}
    # no pickle anywhere: the weights file is safetensors (JSON header length + JSON)
    head = (b.path / "model.safetensors").read_bytes()[8:9]
    assert head == b"{"


def test_latest_is_newest_complete_and_skips_broken(tmp_path):
    old = publish(tmp_path, 1.0)
    new = publish(tmp_path, 2.0)
    assert load_bundle("latest", vertical="v", root=tmp_path).path == new.path
    (new.path / "model.safetensors").write_bytes(b"corrupt")
    assert load_bundle("latest", vertical="v", root=tmp_path).path == old.path
    # a half-written temp dir is never a candidate
    (tmp_path / "v" / ".tmp-abc").mkdir()
    assert len(list_bundles(tmp_path, "v")) == 2


def test_checksum_mismatch_and_missing_file_refuse_to_load(tmp_path):
    b = publish(tmp_path)
    (b.path / "extra" / "stats.json").write_text(json.dumps({"mean": 5}))
    with pytest.raises(BundleError, match="checksum mismatch for extra/stats.json"):
        load_bundle(b.path)
    b2 = publish(tmp_path)
    (b2.path / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="model.safetensors listed in the manifest is missing"):
        load_bundle(b2.path)


def test_latest_without_bundles_says_how_to_fix(tmp_path):
    with pytest.raises(BundleError, match="verticals train v"):
        load_bundle("latest", vertical="v", root=tmp_path)


def test_wrong_vertical_is_refused(tmp_path):
    b = publish(tmp_path, vertical="a")
    with pytest.raises(BundleError, match="not 'b'"):
        load_bundle(b.path, vertical="b")


def test_abort_leaves_nothing(tmp_path):
    w = BundleWriter(tmp_path, "v")
    w.save_weights({"w": torch.ones(1)})
    w.abort()
    assert list_bundles(tmp_path) == [] and not any((tmp_path / "v").iterdir())
