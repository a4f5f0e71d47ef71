"""Rollout benchmark (issue #15, model lifecycle): what shadowing a candidate at 100% costs the
production path, and how long a `production` swap pauses answers, on the bench MLP (HTTP-bound)
and on the fraud path (feature store + XGBoost/net blend + TreeSHAP reasons).

Per case, one store gets two bundles (`production` and a `candidate` with other weights) and is
copied, so two stores hold identical bundles and aliases; only one has `shadow=1.0` (the
rollout setting is per store, read by every server on it). Two servers (our server started
from its store, so it follows aliases: bench/_rollout_servers.py) run side by side; a separate
client process (bench/_rollout_load.py, closed loop) drives one at a time, in interleaved
rounds whose order alternates; medians over rounds. The shadow server's /metrics then tell how
many requests the shadow compared and how many it skipped (it sheds load when behind). The
candidate answers in its own process (common/serving/shadow_proc.py; `--shadow-in thread` for
the in-thread runner); per round the bench also reads the CPU seconds of each server process,
and of the shadow's process, per answered request (`server_cpu_us_per_req`): unlike req/s and
p99, that ratio barely moves when other work shares the machine.
Swap pause: under the same load against the shadow-off server, `production` moves to the
candidate (`set_alias`); from every response's completion time and answering model, the
longest gap between responses from the move until 1 s after the new model's first answer, next
to the longest gap in an equally long window just before the move.

    python bench/rollout.py --quick --out /tmp/rollout.json     # about a minute
    python bench/rollout.py --out bench/results/rollout.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# before torch / XGBoost load: spin-waiting OpenMP threads slow training 20-100x on shared CPUs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench import _proc  # noqa: E402
from bench._rollout_load import FRAUD_PATH, fraud_body  # noqa: E402
from bench.serving import median_result  # noqa: E402
from common.aliases import set_alias, set_rollout  # noqa: E402

CASES = ("mlp", "fraud")
GOALS = {"shadow_vs_off_min": 0.9, "p99_shadow_vs_off_max": 1.1}
SWAP_MARGIN_S = 1.0  # the swap window ends this long after the new model's first answer
SERVER_ENV = {"BENCH_TORCH_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Case:
    name: str
    vertical: str
    path: str
    production: str
    candidate: str
    describe: dict
    is_candidate: Callable[[str], bool]  # answer tag (bench/_rollout_load.answer_tag) → model
    body_file: Path | None = None  # fixed body (MLP); None: a fresh fraud transaction each
    next_index: dict[str, int] = field(default_factory=dict)  # per server: fraud stream position

    def body(self, server: str) -> bytes:
        if self.body_file is not None:
            return self.body_file.read_bytes()
        i = self.next_index.get(server, 0)
        self.next_index[server] = i + 1
        return fraud_body(i)


# ---- the two cases: stores with a production and a candidate bundle ---------------------------
def mlp_case(store: Path, work: Path) -> Case:
    import torch

    from bench._models import PATHS, build_model, forward, request_body, to_batch, write_bundle
    from common.artifacts import BundleWriter, fingerprint, load_bundle

    prod = write_bundle("mlp", store)
    net = build_model("mlp")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # other weights: the production init plus noise
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    w = BundleWriter(store, "bench-mlp", "bench-mlp-candidate")
    w.save_weights(net.state_dict())
    cand = w.publish("bench._models.build_model:mlp", {"model": "mlp"},
                     data_fingerprint=fingerprint("bench: random init + noise seed 1")).path
    body = work / "mlp_body.json"
    body.write_bytes(request_body("mlp"))
    x = np.asarray(json.loads(body.read_bytes())["x"], dtype=np.float32)
    probs = []
    for path in (prod, cand):  # each model's answer to the fixed body tells who answered
        m = build_model("mlp")
        m.load_state_dict(load_bundle(path).state_dict())
        probs.append(forward(m, to_batch([x]))[0]["probability"])
    if abs(probs[0] - probs[1]) < 1e-3:
        raise RuntimeError(f"the two MLP bundles answer alike ({probs}): cannot tell them apart")
    mid = (probs[0] + probs[1]) / 2

    def is_candidate(tag: str) -> bool:
        return (float(tag) > mid) == (probs[1] > mid)

    return Case("mlp", "bench-mlp", PATHS["mlp"], prod.name, cand.name, {
        "model": "MLP 32-256-256-2 (float32), bench/_models.py",
        "body": "JSON {\"x\": [32 floats]}, the same bytes every request",
        "bundles": "production: bench/_models.write_bundle (seed-0 init); candidate: the same "
                   "weights + N(0, 0.1) noise (seed 1)",
        "answers": {"production_probability": round(probs[0], 5),
                    "candidate_probability": round(probs[1], 5)},
    }, is_candidate, body_file=body)


def fraud_case(store: Path, work: Path) -> Case:
    from common.registry import get_vertical
    from fraud_detection.bundle import train_and_publish
    from fraud_detection.vertical import _PRESET_XGB, simulated

    print("[fraud] training the test preset twice ...", file=sys.stderr)
    prod = get_vertical("fraud").train_default(store, preset="test")
    cand = train_and_publish(simulated("test"), store, name="fraud-xgb-test",
                             xgb_params=_PRESET_XGB.get("test"), seed=1,
                             data_note="simulator preset=test seed=0; model seed 1")
    return Case("fraud", "fraud", FRAUD_PATH, prod.version, cand.version, {
        "model": "fraud `test` preset: XGBoost + feed-forward blend, in-memory feature store, "
                 "TreeSHAP reasons",
        "body": "a fresh transaction per request (bench/_rollout_load.fraud_body): unique id, "
                "increasing timestamps, 300 customers x 600 terminals",
        "bundles": "production: train_default(preset='test'); candidate: the same simulated "
                   "data and recipe, model seed 1 (XGBoost random_state, the net's init)",
        "tree_weight_in_blend": {"production": prod.manifest["metrics"].get("blend_w"),
                                 "candidate": cand.manifest["metrics"].get("blend_w")},
        "train_seconds": {"production": prod.manifest["metrics"].get("train_seconds"),
                          "candidate": cand.manifest["metrics"].get("train_seconds")},
    }, lambda tag: tag == cand.version)


def make_stores(case_fn: Callable[[Path, Path], Case], work: Path) -> tuple[Case, dict[str, Path]]:
    stores = {"shadow": work / "store_shadow", "off": work / "store_off"}
    case = case_fn(stores["shadow"], work)
    shutil.copytree(stores["shadow"], stores["off"])  # identical bundles in both stores
    for store in stores.values():
        set_alias(store, case.vertical, case.production, "production", reason="bench")
        set_alias(store, case.vertical, case.candidate, "candidate", reason="bench")
    set_rollout(stores["shadow"], case.vertical, shadow=1.0, reason="bench")
    return case, stores


# ---- CPU seconds of the server and of its shadow process (noise-proof next to req/s) -------------
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / _TICK


def shadow_pids(parent: int) -> list[int]:
    """The server's shadow processes (common.serving.shadow_proc)."""
    out = []
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            if (d.isdigit() and b"shadow_proc" in Path(f"/proc/{d}/cmdline").read_bytes()
                    and int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    == parent):
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    return out


# ---- servers, client, metrics ------------------------------------------------------------
def start(name: str, case: Case, store: Path, work: Path, a: argparse.Namespace
          ) -> _proc.Server:
    port = _proc.free_port()
    cmd = _proc.uvicorn_cmd("", port)  # the same uvicorn settings as bench/serving.py
    cmd[cmd.index("bench._servers:")] = "bench._rollout_servers:rollout_app"
    env = {**SERVER_ENV, "BENCH_VERTICAL": case.vertical, "BENCH_BUNDLE_ROOT": str(store),
           "VERTICALS_ALIAS_POLL_S": str(a.poll_s),
           "VERTICALS_SHADOW_PROCESS": "1" if a.shadow_in == "process" else "0"}
    return _proc.Server(f"{case.name}-{name}", cmd, port, "/readyz", env, work)


def run_client(case: Case, server: str, port: int, a: argparse.Namespace, duration: float,
               timeline: bool = False, on_start: Callable[[float], None] | None = None) -> dict:
    """One load run from its own process; `on_start(t_measure)` runs while the load is on."""
    cmd = [_proc.PY, "-m", "bench._rollout_load", "--port", str(port), "--path", case.path,
           "--concurrency", str(a.concurrency), "--warmup", str(a.warmup),
           "--duration", str(duration)]
    if case.body_file is not None:
        cmd += ["--body-file", str(case.body_file)]
    else:
        cmd += ["--fraud-start", str(case.next_index.get(server, 0))]
    if timeline:
        cmd.append("--timeline")
    proc = subprocess.Popen(cmd, cwd=_proc.ROOT, env=_proc.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        if first.startswith("start ") and on_start is not None:
            on_start(float(first.split()[1]))
        out, err = proc.communicate(timeout=a.warmup + duration + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed: {err[-2000:]}")
    r = json.loads(out.strip().splitlines()[-1])
    if case.body_file is None:
        case.next_index[server] = r["next_index"]
    return r


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out.append((m[1], dict(_LABEL.findall(m[2] or "")), float(m[3])))
    return out


def shadow_stats(port: int, vertical: str) -> dict:
    """The shadow's work as the server counts it: compared vs skipped (by reason), against
    the requests production answered, and the mean agreement of the two models."""
    compared, answered, skipped, sums = 0.0, 0.0, {}, {}
    for name, labels, v in scrape(port):
        if labels.get("model") != vertical:
            continue
        if name == "verticals_shadow_compared_total":
            compared += v
        elif name == "verticals_shadow_skipped_total":
            skipped[labels["reason"]] = skipped.get(labels["reason"], 0) + int(v)
        elif name == "verticals_shadow_agreement_total":
            sums[labels["metric"]] = sums.get(labels["metric"], 0.0) + v
        elif name == "verticals_model_requests_total" and labels.get("outcome") == "ok":
            answered += v
    return {
        "answered": int(answered), "compared": int(compared), "skipped": skipped,
        "compared_share": round(compared / answered, 4) if answered else None,
        "agreement_mean": {k: round(s / compared, 4) for k, s in sums.items()} if compared
        else {},
    }


def post(port: int, path: str, body: bytes) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def wait_shadow(case: Case, port: int, timeout_s: float) -> float:
    """Until the shadow server has loaded the candidate and compared an answer (seconds)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        post(port, case.path, case.body("shadow"))
        time.sleep(0.2)
        if shadow_stats(port, case.vertical)["compared"] > 0:
            return round(time.monotonic() - t0, 2)
    raise TimeoutError(f"{case.name}: the shadow server compared nothing after {timeout_s}s")


# ---- the shadow's cost to the server process, without HTTP -----------------------------------
def shadow_cost(case: Case, store: Path, batch: int, seconds: float) -> dict:
    """CPU seconds of this process per request for production batches alone, and with each
    shadow runner at 100%: the share of the shadow's work that lands in the server process
    (where it competes with the event loop for the interpreter lock). The in-thread runner
    runs without its CPU budget here, to show its whole cost."""
    import torch

    from common.registry import get_vertical
    from common.serving.rollout import ShadowRunner
    from common.serving.shadow_proc import ShadowProcess

    torch.set_num_threads(1)  # as the servers (BENCH_TORCH_THREADS=1) and the shadow process
    cls = get_vertical(case.vertical).predictor_cls
    primary = cls.load(store / case.vertical / case.production)
    candidate = cls.load(store / case.vertical / case.candidate)
    stream = iter(range(10**9))

    def body() -> dict:
        if case.body_file is not None:
            return json.loads(case.body_file.read_bytes())
        return json.loads(fraud_body(5_000_000 + next(stream), seed=7))

    out: dict = {"batch_size": batch}
    runners = {"none": None, "thread": ShadowRunner(f"{case.name}-cost-thread", candidate, 1.0,
                                                    max_pending=10**9, cpu_share=1e9),
               "process": ShadowProcess(f"{case.name}-cost-process", candidate, 1.0,
                                        max_pending=10**9)}
    try:
        runners["process"].wait_ready(120)
        out["process_mode"] = runners["process"].mode
        for name in ("none", "thread", "process", "none"):  # `none` twice: drift check
            r, n, t_end = runners[name], 0, time.monotonic() + seconds
            c0, k0 = time.process_time(), _child_cpu(r)
            while time.monotonic() < t_end:
                primary.run_each([primary.parse(body()) for _ in range(batch)], shadow=r)
                n += batch
                if r is not None and n % (batch * 32) == 0:
                    r.drain(60)  # all compared: the cost of every request, none skipped
            if r is not None:
                r.drain(60)
            key = name if name not in out else f"{name}_again"
            out[key] = {"server_cpu_us_per_req": round((time.process_time() - c0) / n * 1e6, 1),
                        "shadow_proc_cpu_us_per_req": round((_child_cpu(r) - k0) / n * 1e6, 1),
                        "requests": n}
    finally:
        for r in runners.values():
            if r is not None:
                r.close()
    base = (out["none"]["server_cpu_us_per_req"] + out["none_again"]["server_cpu_us_per_req"]) / 2
    out["added_server_cpu_us_per_req"] = {
        m: round(out[m]["server_cpu_us_per_req"] - base, 1) for m in ("thread", "process")}
    return out


def _child_cpu(runner) -> float:
    p = getattr(runner, "_proc", None)
    return cpu_s(p.pid) if p is not None else 0.0


# ---- the swap pause ----------------------------------------------------------------------
def max_gap_ms(t: np.ndarray, lo: float, hi: float) -> float | None:
    sel = t[(t >= lo) & (t <= hi)]
    return round(float(np.diff(sel).max()) * 1e3, 2) if len(sel) > 1 else None


def window_stats(t: np.ndarray, lat: np.ndarray, lo: float, hi: float) -> dict:
    sel = lat[(t >= lo) & (t <= hi)]
    return {
        "from_swap_s": round(lo, 3), "length_s": round(hi - lo, 3), "answers": int(len(sel)),
        "max_gap_ms": max_gap_ms(t, lo, hi),
        "p99_latency_ms": round(float(np.percentile(sel, 99)) * 1e3, 2) if len(sel) else None,
        "max_latency_ms": round(float(sel.max()) * 1e3, 2) if len(sel) else None,
    }


def swap_pause(case: Case, store: Path, port: int, a: argparse.Namespace) -> dict:
    pre = post_s = a.poll_s + (2.0 if a.quick else 4.0)
    mark: dict[str, float] = {}

    def swap(t_measure: float) -> None:
        time.sleep(max(0.0, t_measure + pre - time.monotonic()))
        t0 = time.monotonic()
        set_alias(store, case.vertical, case.candidate, "production", reason="bench swap")
        mark["t"], mark["set_alias_s"] = time.monotonic(), time.monotonic() - t0

    r = run_client(case, "off", port, a, pre + post_s, timeline=True, on_start=swap)
    if "t" not in mark:
        raise RuntimeError(f"{case.name}: the load client never opened its window")
    tl = r.pop("timeline")
    ts = mark["t"]
    t = np.array([e[0] for e in tl]) - ts  # seconds from the alias move
    lat = np.array([e[1] for e in tl])
    new = np.array([case.is_candidate(e[2]) for e in tl], dtype=bool)
    first_new = float(t[new].min()) if new.any() else None
    end = (first_new if first_new is not None else float(t.max())) + SWAP_MARGIN_S
    start = r["t_measure"] - ts
    base_lo = max(start, -SWAP_MARGIN_S / 4 - end)
    swap_w = window_stats(t, lat, 0.0, end)
    base_w = window_stats(t, lat, base_lo, -SWAP_MARGIN_S / 4)
    g_s, g_b = swap_w["max_gap_ms"], base_w["max_gap_ms"]
    return {
        "to": case.candidate, "set_alias_s": round(mark["set_alias_s"], 3),
        "first_new_answer_after_s": round(first_new, 3) if first_new is not None else None,
        "last_old_answer_after_s": round(float(t[~new].max()), 3) if (~new).any() else None,
        "new_answers_before_swap": int((new & (t < 0)).sum()),
        "old_answers_after_first_new": int((~new & (t > (first_new or np.inf))).sum()),
        "swap_window": swap_w, "no_swap_window": base_w,
        "max_gap_ratio": round(g_s / g_b, 2) if g_s and g_b else None,
        "load": {k: r[k] for k in ("rps", "p50_ms", "p99_ms", "ok", "other", "window_s")},
        "swap_at_s_into_window": round(pre, 2),
    }


# ---- one case ------------------------------------------------------------------------------
def bench_case(name: str, a: argparse.Namespace) -> dict:
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"bench-rollout-{name}-") as tmp:
        work = Path(tmp)
        case, stores = make_stores(mlp_case if name == "mlp" else fraud_case, work)
        print(f"[{name}] stores ready after {time.time() - t0:.0f}s", file=sys.stderr)
        cost = shadow_cost(case, stores["off"], batch=8, seconds=1.0 if a.quick else 3.0)
        print(f"[{name}] server CPU added per request by a 100% shadow (no HTTP): "
              f"{cost['added_server_cpu_us_per_req']} µs", file=sys.stderr)
        servers = {n: start(n, case, stores[n], work, a) for n in ("off", "shadow")}
        try:
            for s in servers.values():
                s.wait_ready()
            shadow_on_s = wait_shadow(case, servers["shadow"].port, 3 * a.poll_s + 60)
            print(f"[{name}] servers up, shadow on after {time.time() - t0:.0f}s", file=sys.stderr)
            rounds: dict[str, list[dict]] = {"off": [], "shadow": []}
            for i in range(a.repeats):
                for n in ("off", "shadow") if i % 2 == 0 else ("shadow", "off"):
                    pid = servers[n].proc.pid
                    kids = shadow_pids(pid)
                    c0, k0 = cpu_s(pid), sum(cpu_s(k) for k in kids)
                    r = run_client(case, n, servers[n].port, a, a.duration)
                    c1, k1 = cpu_s(pid), sum(cpu_s(k) for k in kids)
                    # over warm-up and window, per request answered in the window (a ratio
                    # between the two servers; both see the same load shape)
                    r["server_cpu_us_per_req"] = round((c1 - c0) / max(r["ok"], 1) * 1e6, 1)
                    r["shadow_proc_cpu_us_per_req"] = round((k1 - k0) / max(r["ok"], 1) * 1e6, 1)
                    rounds[n].append({k: r[k] for k in (
                        "rps", "p50_ms", "p99_ms", "ok", "other", "window_s",
                        "client_cpu_us_per_req", "server_cpu_us_per_req",
                        "shadow_proc_cpu_us_per_req")})
                    print(f"[{name}] round {i + 1} {n}: {r['rps']} req/s, p99 {r['p99_ms']} ms"
                          f"{' other: ' + str(r['other']) if r['other'] else ''}",
                          file=sys.stderr)
            time.sleep(0.5)  # let the shadow finish what it was handed
            shadow = shadow_stats(servers["shadow"].port, case.vertical)
            off_check = shadow_stats(servers["off"].port, case.vertical)["compared"]
            print(f"[{name}] swap under load ...", file=sys.stderr)
            swap = swap_pause(case, stores["off"], servers["off"].port, a)
        except Exception:
            for s in servers.values():
                log = work / f"{s.name}.log"
                if log.exists():
                    print(f"--- {log.name} (tail)\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            for s in servers.values():
                s.stop()
    res = {n: median_result(rounds[n]) for n in ("off", "shadow")}
    for n in res:
        for k in ("server_cpu_us_per_req", "shadow_proc_cpu_us_per_req"):
            res[n][k] = round(float(np.median([r[k] for r in rounds[n]])), 1)
    ratios = {"shadow_vs_off": round(res["shadow"]["rps"] / res["off"]["rps"], 3),
              "p99_shadow_vs_off": round(res["shadow"]["p99_ms"] / res["off"]["p99_ms"], 3),
              "server_cpu_shadow_vs_off": round(res["shadow"]["server_cpu_us_per_req"]
                                                / max(res["off"]["server_cpu_us_per_req"], 1e-9),
                                                3)}
    return {
        **case.describe,
        "versions": {"production": case.production, "candidate": case.candidate},
        "results": res,
        "ratios": ratios,
        "goals_met": {"throughput": ratios["shadow_vs_off"] >= GOALS["shadow_vs_off_min"],
                      "p99": ratios["p99_shadow_vs_off"] <= GOALS["p99_shadow_vs_off_max"]},
        "shadow": {**shadow, "candidate_on_after_s": shadow_on_s,
                   "compared_by_shadow_off_server": off_check},
        "shadow_cost_in_process": cost,
        "swap": swap,
        "duration_s": round(time.time() - t0, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round each (about a minute)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/rollout.json"))
    ap.add_argument("--case", choices=CASES, action="append", help="mlp and/or fraud (default: "
                    "both)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds discarded per run")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per round")
    ap.add_argument("--shadow-in", choices=("process", "thread"), default="process",
                    help="where the candidate answers: its own process (the default) or a "
                         "thread of the server (VERTICALS_SHADOW_PROCESS=0)")
    ap.add_argument("--poll-s", type=float, default=1.0,
                    help="VERTICALS_ALIAS_POLL_S of the servers (how often they read the store)")
    a = ap.parse_args(argv)
    a.repeats = a.repeats or (1 if a.quick else 3)
    a.warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 3.0)
    a.duration = a.duration if a.duration is not None else (2.0 if a.quick else 10.0)
    t0 = time.time()
    machine = _proc.machine()
    cases = {c: bench_case(c, a) for c in (a.case or list(CASES))}
    out = {
        "bench": "rollout",
        "cases": cases,
        "goals": {**GOALS, "met": {c: r["goals_met"] for c, r in cases.items()},
                  "swap_pause": "reported, no target"},
        "settings": {
            "concurrency": a.concurrency, "warmup_s": a.warmup, "duration_s": a.duration,
            "repeats": a.repeats, "alias_poll_s": a.poll_s, "quick": a.quick,
            "shadow_in": a.shadow_in,
            "swap_window": f"from the alias move to {SWAP_MARGIN_S}s after the first answer of "
                           "the new model; the no-swap window is as long, ending "
                           f"{SWAP_MARGIN_S / 4}s before the move (clipped to the measured run)",
            "server": "create_app([vertical], root=store) under uvicorn: 1 worker, httptools, "
                      "uvloop, no access log; torch threads 1, OMP_WAIT_POLICY=PASSIVE",
            "client": "bench/_rollout_load.py: asyncio + uvloop, raw HTTP/1.1 keep-alive, closed "
                      "loop, own process; rounds interleaved, order alternating",
        },
        "machine": machine,
        "duration_s": round(time.time() - t0, 1),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    for c, r in cases.items():
        o, s, sw = r["results"]["off"], r["results"]["shadow"], r["swap"]
        print(f"{c}: off {o['rps']:.0f} req/s (p99 {o['p99_ms']:.1f} ms)  shadow {s['rps']:.0f} "
              f"(p99 {s['p99_ms']:.1f} ms)  ratios {r['ratios']}  shadow compared "
              f"{r['shadow']['compared']} skipped {r['shadow']['skipped']}\n  swap: new model "
              f"after {sw['first_new_answer_after_s']} s, max gap {sw['swap_window']['max_gap_ms']}"
              f" ms vs {sw['no_swap_window']['max_gap_ms']} ms without a swap")


if __name__ == "__main__":
    main()
