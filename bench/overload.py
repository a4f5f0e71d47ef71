"""Overload: the fraud server at 2× its measured capacity, then at 0.5×, open loop.

    .venv/bin/python bench/overload.py --quick                 # < 1 min, indicative only
    .venv/bin/python bench/overload.py --out bench/results/overload.json   # ~2.5 min

1. Trains the fraud `test` bundle into a temp store (or uses --bundle-root), starts its own
   `redis-server` on a free loopback port (the feature store, so this process can read it
   afterwards) and `verticals serve --verticals fraud` (uvicorn, 1 worker) on it.
2. Capacity: the closed-loop client (`bench/_loadgen.py`, concurrency 32) on POST
   /fraud/v1/score; capacity = answered req/s.
3. Open loop in a separate client process (`--client`, raw asyncio sockets like
   `_loadgen.py`): transaction i is sent at its scheduled time whatever came back before,
   each with a unique id and `X-Request-Timeout-Ms: deadline`; latency counts from the
   scheduled time, so a server that stalls cannot hide its queue. 2× capacity for 60 s
   (quick: 12 s), then 0.5× for 30 s (quick: 8 s).
4. Reports per phase: status counts (only 200 / 503 / 504 are allowed), p50/p99 of the
   accepted (200) requests against the deadline, the server's resident memory sampled every
   0.5 s (growth), the time after the load drops until the last answer that was not a 200
   within the deadline (goal ≤ 5 s), and "nothing accepted is lost": every transaction
   answered 200 is in the feature store exactly once (its id in the transaction hash and once
   in its card's and terminal's sets), and how many answered 503 / 504 / not answered are in
   it. Semantics: a 503 `overloaded` (refused at admission, before the body is read, when the
   queue ahead would not clear within its share of the deadline) and a 504 (deadline passed
   while queued) never reached the model, so neither is in the store; a request already in a
   batch is answered even if late; a retry of either is safe (a transaction id is recorded
   once and answers the same).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._loadgen import _read_response, percentile  # noqa: E402
from bench._proc import PY, Server, env, free_port, load, machine  # noqa: E402

PATH = "/fraud/v1/score"
ID_BASE = 70_000_000  # after the training data's ids; the capacity probe uses ID_BASE - 1
T0 = 1_538_352_000  # 2018-10-01T00:00:00Z, just after the test bundle's training data
ALLOWED = {"200", "503", "504"}


def body(i: int) -> bytes:
    """Transaction i: 300 cards, 600 terminals, one new second each (cheap to format)."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + i))
    return (f'{{"transaction_id":{ID_BASE + i},"timestamp":"{ts}","customer_id":{i % 300},'
            f'"terminal_id":{(i * 7) % 600},"amount":{10 + (i * 37) % 400}.5}}').encode()


# ---- the open-loop client (its own process) -------------------------------------------------
async def _open_loop(port: int, phases: list[tuple[float, float]], deadline_ms: int,
                     max_conns: int) -> dict:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    conn_free = asyncio.Semaphore(max_conns)
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json"
            f"\r\nX-Request-Timeout-Ms: {deadline_ms}\r\nConnection: keep-alive\r\n"
            "Content-Length: ").encode()
    # i, phase, scheduled (s from start), latency (s from scheduled), status
    rows: list[tuple[int, int, float, float, str]] = []

    stale = [0]

    async def send(request: bytes, reused: bool) -> str:
        reader, writer = idle.pop() if reused else await asyncio.open_connection(
            "127.0.0.1", port)
        try:
            writer.write(request)
            status = str(await _read_response(reader))
        except BaseException:
            writer.close()
            raise
        idle.append((reader, writer))
        return status

    async def one(i: int, phase: int, scheduled: float) -> None:
        async with conn_free:
            b = body(i)
            request = head + str(len(b)).encode() + b"\r\n\r\n" + b
            try:
                try:
                    status = await send(request, reused=bool(idle))
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        raise
                    # the server closed this idle keep-alive connection (its keep-alive timeout)
                    # as we reused it; nothing was read, so resend once on a new connection,
                    # as HTTP clients do
                    stale[0] += 1
                    status = await send(request, reused=False)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError) as e:
                status = f"error:{type(e).__name__}"
            rows.append((i, phase, scheduled - start, time.perf_counter() - scheduled, status))

    start = time.perf_counter() + 0.05
    tasks, i, t_phase = [], 0, start
    for phase, (rate, seconds) in enumerate(phases):
        n = int(rate * seconds)
        for k in range(n):
            when = t_phase + k / rate
            delay = when - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, phase, when)))
            i += 1
        t_phase += seconds
    await asyncio.gather(*tasks)
    for _, w in idle:
        w.close()
    return {"rows": rows, "sent": i, "stale_keepalive_resends": stale[0], "phase_starts": [0.0, *(
        sum(s for _, s in phases[:k + 1]) for k in range(len(phases) - 1))]}


def client_main(a: argparse.Namespace) -> None:
    gc.disable()  # no collector pauses in the client's schedule
    phases = json.loads(a.phases)
    try:
        from uvloop import run as arun
    except ImportError:
        arun = asyncio.run
    out = arun(_open_loop(a.port, phases, a.deadline_ms, a.max_conns))
    Path(a.client_out).write_text(json.dumps(out))


# ---- the orchestration -------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """Resident memory of one process every `every_s` (from /proc, no psutil)."""

    def __init__(self, pid: int, every_s: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.samples = pid, every_s, []
        self.t0, self.halt = time.perf_counter(), threading.Event()

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def run(self) -> None:
        while not self.halt.wait(self.every_s):
            mb = self.rss_mb()
            if mb is not None:
                self.samples.append((round(time.perf_counter() - self.t0, 2), round(mb, 1)))


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("error: redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("error: redis-server did not start")


def phase_summary(rows: list, deadline_s: float) -> dict:
    codes = Counter(r[4] for r in rows)
    lat = sorted(r[3] for r in rows if r[4] == "200")
    return {
        "sent": len(rows),
        "status": dict(codes),
        "only_200_503_504": set(codes) <= ALLOWED,
        "accepted_p50_ms": round(percentile(lat, 0.50) * 1e3, 1),
        "accepted_p99_ms": round(percentile(lat, 0.99) * 1e3, 1),
        "accepted_max_ms": round(lat[-1] * 1e3, 1) if lat else None,
        "accepted_over_deadline": sum(1 for x in lat if x > deadline_s),
        "deadline_ms": round(deadline_s * 1e3),
    }


def lost_check(url: str, namespace: str, rows: list) -> dict:
    """Each transaction answered 200 must be in the store exactly once; count the others."""
    import redis

    r, ns = redis.Redis.from_url(url), f"fraud:{namespace}"
    by_status: dict[str, list[int]] = {}
    for i, *_, status in rows:
        by_status.setdefault(status, []).append(i)
    members: dict[str, Counter] = {}

    def count(key: str, tid: int) -> int:
        if key not in members:
            members[key] = Counter(m.split(b":")[0] for m in r.zrange(key, 0, -1))
        return members[key][str(tid).encode()]

    out = {}
    for status, ids in sorted(by_status.items()):
        p = r.pipeline(transaction=False)
        for i in ids:
            p.hexists(f"{ns}:tx", ID_BASE + i)
        present = p.execute()
        once = sum(1 for i, there in zip(ids, present, strict=True) if there
                   and count(f"{ns}:c:{i % 300}", ID_BASE + i) == 1
                   and count(f"{ns}:t:{(i * 7) % 600}", ID_BASE + i) == 1)
        out[status] = {"answered": len(ids), "in_store": sum(present),
                       "in_store_exactly_once": once}
    ok = out.get("200", {"answered": 0, "in_store_exactly_once": 0})
    out["nothing_accepted_lost"] = ok["answered"] == ok["in_store_exactly_once"]
    return out


def recovery_s(rows: list, drop_at: float, deadline_s: float) -> float:
    """Seconds after the load drops until the last answer that was not a 200 in time."""
    bad = [r[2] + r[3] - drop_at for r in rows
           if r[2] >= drop_at and (r[4] != "200" or r[3] > deadline_s)]
    return round(max(bad, default=0.0), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (< 1 minute)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/overload.json"))
    ap.add_argument("--bundle-root", default=None, help="store with a fraud bundle (else train)")
    ap.add_argument("--deadline-ms", type=int, default=1000, help="X-Request-Timeout-Ms")
    ap.add_argument("--max-conns", type=int, default=512, help="client connections at most")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--phases", default="[]", help=argparse.SUPPRESS)
    ap.add_argument("--client-out", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        return client_main(a)

    t_start = time.time()
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="overload-"))
    root = Path(a.bundle_root) if a.bundle_root else work / "bundles"
    if not a.bundle_root:
        from common.registry import get_vertical

        get_vertical("fraud").train_default(root, preset="test")
    from common.artifacts import load_bundle

    namespace = load_bundle("latest", vertical="fraud", root=root).version  # the server's
    redis_proc, url = start_redis(work)
    ok = False
    port = free_port()
    server = Server("overload-fraud", [PY, "-m", "common.cli", "serve", "--verticals", "fraud",
                                       "--root", str(root), "--port", str(port)],
                    port, "/readyz", {"VERTICALS_FRAUD_STORE": "redis",
                                      "VERTICALS_FRAUD_REDIS_URL": url}, work)
    try:
        server.wait_ready()
        probe = work / "probe.json"
        probe.write_bytes(body(-1))
        capacity = load(port, PATH, probe, 32, 1.0 if a.quick else 3.0, 3.0 if a.quick else 10.0)
        cap = max(capacity["rps"], 1.0)
        over_s, under_s = (12.0, 8.0) if a.quick else (60.0, 30.0)
        phases = [(2 * cap, over_s), (0.5 * cap, under_s)]
        sampler = RssSampler(server.proc.pid)
        sampler.start()
        client_out = work / "client.json"
        subprocess.run([PY, str(Path(__file__)), "--client", "--port", str(port), "--phases",
                        json.dumps(phases), "--deadline-ms", str(a.deadline_ms),
                        "--max-conns", str(a.max_conns), "--client-out", str(client_out)],
                       cwd=ROOT, env=env(), check=True, timeout=over_s + under_s + 120)
        sampler.halt.set()
        sampler.join()
        data = json.loads(client_out.read_text())
        rows = data["rows"]
        deadline_s = a.deadline_ms / 1e3
        drop_at = data["phase_starts"][1]
        rss = sampler.samples
        result = {
            "bench": "overload",
            "capacity_closed_loop": capacity,
            "phases": {
                name: {"rate_rps": round(rate, 1), "seconds": s,
                       **phase_summary([r for r in rows if r[1] == k], deadline_s)}
                for k, (name, (rate, s)) in enumerate(zip(("overload_2x", "recovery_0_5x"),
                                                          phases, strict=True))
            },
            "recovery_s_after_drop": recovery_s(rows, drop_at, deadline_s),
            "client_stale_keepalive_resends": data["stale_keepalive_resends"],
            "rss_mb": {"start": rss[0][1] if rss else None, "end": rss[-1][1] if rss else None,
                       "max": max((m for _, m in rss), default=None),
                       "growth": round(rss[-1][1] - rss[0][1], 1) if rss else None,
                       "samples": rss},
            "store": lost_check(url, namespace, rows),
            "goals": {"statuses": sorted(ALLOWED), "accepted_p99_ms_max": a.deadline_ms,
                      "recovery_s_max": 5.0, "nothing_accepted_lost": True},
            "config": {"quick": a.quick, "deadline_ms": a.deadline_ms,
                       "max_conns": a.max_conns, "server": "verticals serve --verticals fraud "
                       "(uvicorn, 1 worker), Redis feature store",
                       "client": "open loop, asyncio raw sockets, separate process"},
            "machine": info,
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        ok = True
    finally:
        server.stop()
        redis_proc.send_signal(signal.SIGTERM)
        redis_proc.wait(10)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"failed; the server log is kept in {work}", file=sys.stderr)
    result["duration_s"] = round(time.time() - t_start, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    brief = {k: v for k, v in result.items() if k not in ("machine",)}
    brief["rss_mb"] = {k: v for k, v in result["rss_mb"].items() if k != "samples"}
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
    main()
