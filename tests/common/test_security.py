"""Security checks on the core: API keys (several at once, rotation from a file, 401 vs 403,
constant-time comparison, never logged), structural body limits (JSON depth, multipart parts,
streamed size) on a pydantic route, and paths (bundle refs, manifests, batch outputs) that
cannot escape where they belong."""

from __future__ import annotations

import hmac
import json
import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from common.artifacts import BundleWriter, list_bundles, load_bundle
from common.cli import main
from common.errors import BundleError
from common.serving import create_app
from common.serving.api_keys import KeyRing
from common.serving.body_limits import json_depth

OLD, NEW = "k-old-7f3a9c1e5b", "k-new-0d8e2b6a4f"
BODY = {"x": [0.1, 0.2, 0.3, 0.4]}


def assert_error(resp, status: int, code: str, field: str | None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "request_id"}
    assert (body["error"]["code"], body["error"]["field"]) == (code, field)


@pytest.fixture()
def app_with_keys(toy_root, monkeypatch):
    def build(keys: str | None = None, keys_file=None, **kw):
        monkeypatch.delenv("VERTICALS_API_KEY", raising=False)
        if keys_file is not None:
            monkeypatch.setenv("VERTICALS_API_KEYS_FILE", str(keys_file))
        else:
            monkeypatch.delenv("VERTICALS_API_KEYS_FILE", raising=False)
        return TestClient(create_app(["toy"], root=toy_root, api_key=keys, **kw))

    return build


# ---- API keys ----------------------------------------------------------------------------

def test_several_keys_are_accepted_at_once(app_with_keys):
    with app_with_keys(f"{OLD}, {NEW}") as c:
        for key in (OLD, NEW):
            assert c.post("/toy/v1/predict", json=BODY, headers={"X-API-Key": key}).status_code \
                == 200
            assert c.post("/toy/v1/predict", json=BODY,
                          headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_key_file_rotation_without_restart(app_with_keys, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"# production keys\n{OLD}\n")
    with app_with_keys(keys_file=keys) as c:
        def status(key: str) -> int:
            return c.get("/v1/models", headers={"X-API-Key": key}).status_code

        assert (status(OLD), status(NEW)) == (200, 403)
        # step 1 of a rotation: both keys valid while clients move (an atomic file replace)
        tmp = tmp_path / "keys.tmp"
        tmp.write_text(f"{OLD}\n{NEW}\n")
        os.replace(tmp, keys)
        assert (status(OLD), status(NEW)) == (200, 200)
        # step 2: the old key is withdrawn
        tmp.write_text(f"{NEW}\n")
        os.replace(tmp, keys)
        assert (status(OLD), status(NEW)) == (403, 200)
        # a key file that goes missing or empty fails closed, it never turns auth off
        keys.unlink()
        assert (status(OLD), status(NEW)) == (403, 403)
        keys.write_text("\n# nothing yet\n")
        assert status(NEW) == 403
        assert c.get("/livez").status_code == 200  # probes stay open


def test_401_for_missing_or_malformed_403_for_a_wrong_key(app_with_keys):
    with app_with_keys(OLD) as c:
        for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "has space"},
                        {"X-API-Key": "k" * 5000}, {"Authorization": f"Basic {OLD}"},
                        {"Authorization": "Bearer "}, {"X-API-Key": "caf\xe9".encode("latin-1")}):
            r = c.get("/v1/models", headers=headers)
            assert_error(r, 401, "unauthorized", "X-API-Key")
            assert r.headers["www-authenticate"].startswith("Bearer")
        for headers in ({"X-API-Key": "wrong-but-well-formed"},
                        {"Authorization": "Bearer wrong-but-well-formed"},
                        {"X-API-Key": OLD + "x"}, {"X-API-Key": OLD[:-1]}):
            r = c.get("/v1/models", headers=headers)
            assert_error(r, 403, "forbidden", "X-API-Key")
            assert "www-authenticate" not in r.headers
        assert c.get("/readyz").status_code == 200


def test_every_key_is_compared_without_early_exit(monkeypatch):
    ring = KeyRing(",".join(f"key-{i}" for i in range(5)))
    calls = []
    real = hmac.compare_digest

    def counting(a, b):  # the real comparison, counted
        calls.append(len(a) == len(b) == 32)  # digests: equal lengths, no length leak
        return real(a, b)

    monkeypatch.setattr("common.serving.api_keys.hmac.compare_digest", counting)
    for given, ok in ((b"key-0", True), (b"key-4", True), (b"nope", False)):
        calls.clear()
        assert ring.accepts(given) is ok
        assert calls == [True] * 5


def test_keys_are_never_logged_or_echoed(app_with_keys, tmp_path, caplog):
    keys = tmp_path / "keys"
    keys.write_text(f"{NEW}\n")
    caplog.set_level(logging.DEBUG)
    texts = []
    with app_with_keys(OLD, keys_file=keys) as c:
        for headers in ({"X-API-Key": OLD}, {"Authorization": f"Bearer {NEW}"},
                        {"X-API-Key": OLD + "-revoked"}, {"Authorization": f"Basic {NEW}"}):
            for method, path, kw in (("GET", "/v1/models", {}),
                                     ("POST", "/toy/v1/predict", {"json": BODY}),
                                     ("POST", "/toy/v1/predict", {"json": {"x": "bad"}})):
                r = c.request(method, path, headers=headers, **kw)
                texts += [r.text, json.dumps(dict(r.headers))]
        texts.append(c.get("/metrics", headers={"X-API-Key": OLD}).text)
    texts.append(caplog.text)
    texts += [str(rec.args) for rec in caplog.records]
    assert any("API key file" in rec.getMessage() for rec in caplog.records)  # logging was on
    for text in texts:
        assert OLD not in text and NEW not in text


# ---- structural body limits on a pydantic route -------------------------------------------

def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth(b'{"a": [1, [2, {"b": 3}]]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{", "b": "\\"[[[\\\\"}') == 1
    assert json_depth(b"[" * 100_000) == 100_000
    assert json_depth(b'"just a string"') == 0


def test_deep_json_is_a_clean_422_before_parsing(app_with_keys):
    with app_with_keys() as c:
        # today's answer without the limit would be FastAPI's 400 "error parsing the body"
        assert_error(c.post("/toy/v1/predict", content=b"[" * 100_000,
                            headers={"content-type": "application/json"}),
                     422, "invalid_input", "body")
        at_limit = b'{"x": ' + b"[" * 63 + b"]" * 63 + b"}"  # depth 64 with the object
        assert_error(c.post("/toy/v1/predict", content=at_limit,
                            headers={"content-type": "application/json"}),
                     422, "invalid_input", "x.0")  # parsed: judged by the schema, not the limit
        over = b'{"x": ' + b"[" * 64 + b"]" * 64 + b"}"
        assert_error(c.post("/toy/v1/predict", content=over,
                            headers={"content-type": "application/json"}),
                     422, "invalid_input", "body")
        # a large flat batch has many brackets but little depth: not refused
        many = json.dumps({"x": [0.1, 0.2, 0.3, 0.4], "pad": [[1]] * 500}).encode()
        assert_error(c.post("/toy/v1/predict", content=many,
                            headers={"content-type": "application/json"}),
                     422, "invalid_input", "pad")


def test_multipart_part_count_and_streamed_size_are_limited(app_with_keys):
    def multipart(n: int) -> bytes:
        return b"".join(b'--BND\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i
                        for i in range(n)) + b"--BND--\r\n"

    with app_with_keys(max_body_bytes=64 * 1024) as c:
        ctype = {"content-type": "multipart/form-data; boundary=BND"}
        r = c.post("/toy/v1/predict", content=multipart(500), headers=ctype)
        assert_error(r, 413, "payload_too_large", "body")
        assert "64 parts" in r.json()["error"]["message"]
        # under the limit the request reaches the route (which wants JSON, so: not a 413)
        assert c.post("/toy/v1/predict", content=multipart(10), headers=ctype).status_code != 413

        def stream():  # no content-length: the limit is enforced while reading
            for _ in range(100):
                yield b" " * 1024

        assert_error(c.post("/toy/v1/predict", content=stream(),
                            headers={"content-type": "application/json"}),
                     413, "payload_too_large", "body")


# ---- paths ---------------------------------------------------------------------------------

def _bundle(root, vertical: str = "v"):
    w = BundleWriter(root, vertical)
    w.add_json("extra.json", {"a": 1})
    return w.publish(model_class="x")


@pytest.mark.parametrize("rel", ["../../etc/passwd", "/etc/passwd", "sub/../../x.json",
                                 "..\\x.json", "C:/x.json"])
def test_manifest_naming_files_outside_the_bundle_is_refused(tmp_path, rel):
    b = _bundle(tmp_path)
    manifest = json.loads((b.path / "manifest.json").read_text())
    manifest["files"][rel] = {"sha256": "0" * 64, "bytes": 1}
    (b.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as e:
        load_bundle(b.path)
    assert repr(rel) in e.value.message and e.value.field == "bundle"


def test_bundle_files_cannot_be_links_out_of_the_bundle(tmp_path):
    b = _bundle(tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (b.path / "extra.json").unlink()
    (b.path / "extra.json").symlink_to(secret)
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        load_bundle(b.path)
    with pytest.raises(BundleError, match="not a plain relative path"):
        _bundle(tmp_path / "other").file("../manifest.json")
    with pytest.raises(BundleError, match="not a plain relative path"):
        BundleWriter(tmp_path, "v").add_json("../../escape.json", {})


def test_bundle_refs_resolve_only_inside_the_store(tmp_path):
    store = tmp_path / "store"
    b = _bundle(store)
    assert load_bundle("latest", vertical="v", root=store).path == b.path
    assert load_bundle(b.version, vertical="v", root=store).path == b.path  # a version name
    elsewhere = tmp_path / "exported"
    shutil.copytree(b.path, elsewhere)
    assert load_bundle(elsewhere, vertical="v").path == elsewhere  # an explicit bundle dir
    for ref in ("../../etc", "..", "../store/v", f"../v/{b.version}", "/etc", "nope"):
        with pytest.raises(BundleError):
            load_bundle(ref, vertical="v", root=store)
    for vertical in ("../store", "..", "v/../.."):
        with pytest.raises(BundleError, match="not a vertical name"):
            load_bundle("latest", vertical=vertical, root=store)
    # a bundle dir that is a link out of the store is not a candidate for `latest`
    outside = _bundle(tmp_path / "outside")
    (store / "v" / "99999999T999999999999Z").symlink_to(outside.path)
    assert list_bundles(store, "v") == [b.path]
    assert load_bundle("latest", vertical="v", root=store).path == b.path


def test_score_output_cannot_clobber_or_sit_inside_the_input(tmp_path, toy_root, capsys):
    data = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 4)), columns=list("abcd"))
    src = tmp_path / "in.csv"
    data.to_csv(src, index=False)
    folder = tmp_path / "folder"
    folder.mkdir()
    data.to_parquet(folder / "a.parquet")
    (tmp_path / "out.parquet").mkdir()
    link = tmp_path / "link.csv"
    link.symlink_to(src)
    cases = [
        (src, tmp_path / "in.csv", "overwrite the input"),
        (link, src, "overwrite the input"),
        (folder, folder / "scores.parquet", "inside the input folder"),
        (folder, folder / "sub" / "scores.csv", "inside the input folder"),
        (src, tmp_path / "out.parquet", "is a directory"),
        (tmp_path / "x.parquet.rejects.jsonl", tmp_path / "x.parquet", "overwrite the input"),
    ]
    (tmp_path / "x.parquet.rejects.jsonl").write_text('{"a": 1}\n')
    before = src.read_bytes()
    for inp, out, reason in cases:
        code = main(["score", "toy", str(inp), str(out), "--root", str(toy_root)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and reason in err, (inp, out, err)
    assert src.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["a.parquet"]
    code = main(["score", "toy", str(src), str(tmp_path / "ok.parquet"), "--root", str(toy_root),
                 "--bundle", "../../etc"])
    assert code == 2 and "bundle" in capsys.readouterr().err
    # a legitimate run: the parts, rejects and summary are written beside the output
    assert main(["score", "toy", str(src), str(tmp_path / "res" / "ok.csv"),
                 "--root", str(toy_root)]) == 0
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == [
        "ok.csv", "ok.csv.rejects.jsonl", "ok.csv.summary.json"]
