"""Shadow scoring in a child process, off the serving process's interpreter lock.

In-thread, every Python step of the candidate (decoding, answering, comparing) competed with the
event loop for the GIL: on an HTTP-bound model that cost ~14% of throughput and 1.3x p99 at a
100% shadow. Here the server only samples, serialises the batch in bulk (pydantic-core
`dump_json`, Rust) and hands it over with one non-blocking `send` on a Unix SOCK_SEQPACKET
socket; a child process (one per shadowed vertical per worker, at nice 10, one torch thread)
loads the candidate bundle itself, answers, compares, and sends back only per-batch sums, which
a reader thread adds to the `verticals_shadow_*` metrics.

What crosses the socket: the sampled requests and production's answers as JSON (`None` for an
error answer) and, for a stateful predictor (fraud), production's prepared inputs as raw array
bytes (`pack` / `unpack`, no pickle), so the candidate scores the features production recorded
and never records a transaction again. `shadow_answer`'s `primary` in the child is a namespace
of production's plain public attributes (`primary_view`: its vertical, version and, e.g., fraud's
feature names); it is re-sent when production changes.

Bounds: at most `max_pending` requests handed over and not yet compared, and the socket's own
buffer (a full one refuses the `send` at once): work that does not fit is dropped and counted
(`verticals_shadow_skipped_total{reason="behind"}`), never waited for. Until the child has
loaded the candidate, sampled requests count as `starting`.

The child exits when the socket reaches EOF (the server closed it, or died: the kernel closes
its end) and, as a second guard, when its parent pid changes. If the process cannot start
(spawn fails, the child cannot load the bundle, an input the wire cannot carry, no
SOCK_SEQPACKET as on macOS), the shadow falls back to the in-thread `ShadowRunner`, logged
once. A child that dies later is logged, its share counts as `candidate_error`, and the
follower starts a new one at its next poll.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import types
from typing import Any

import numpy as np
from pydantic import BaseModel, TypeAdapter

from common.predictor import Predictor
from common.serving.rollout import admit

__all__ = ["ShadowProcess", "pack", "unpack", "primary_view"]
log = logging.getLogger(__name__)

SOCK_BUF = 1 << 20  # requested socket buffer (the kernel may cap it at net.core.wmem_max)
# The child reports every FLUSH_S or FLUSH_N requests, whichever comes first (or at once when
# asked, `drain`): each report wakes the server's reader thread, which then needs the
# interpreter lock the event loop holds, so one report per batch would bring back the
# contention the process is there to avoid.
FLUSH_S = 0.05
FLUSH_N = 256
NICE = 10


# ---- wire format ------------------------------------------------------------------------------
def _frame(parts: list[bytes | memoryview]) -> bytes:
    head = struct.pack(f"!I{len(parts)}I", len(parts), *(len(p) for p in parts))
    return b"".join([head, *parts])


def _unframe(buf: memoryview) -> list[memoryview]:
    (n,) = struct.unpack_from("!I", buf)
    lens = struct.unpack_from(f"!{n}I", buf, 4)
    out, at = [], 4 + 4 * n
    for k in lens:
        out.append(buf[at : at + k])
        at += k
    return out


def pack(obj: Any) -> list[bytes | memoryview]:
    """A tree of arrays, tensors, lists, tuples, str-keyed dicts and JSON scalars → a JSON
    header and the arrays' raw bytes (no pickle); TypeError for anything else."""
    bufs: list[bytes | memoryview] = []

    def enc(o: Any) -> Any:
        if o is None or isinstance(o, bool | int | float | str):
            return o
        if isinstance(o, np.generic):
            return o.item()
        if type(o).__module__ == "torch" and hasattr(o, "detach"):  # a Tensor, without import
            o = o.detach().cpu().numpy()  # bf16 raises TypeError: no numpy dtype carries it
        if isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                raise TypeError("an object array cannot cross to the shadow process")
            a = np.ascontiguousarray(o)
            bufs.append(memoryview(a).cast("B"))
            return {"a": len(bufs) - 1, "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(o, list):
            return [enc(v) for v in o]
        if isinstance(o, tuple):
            return {"t": [enc(v) for v in o]}
        if isinstance(o, dict) and all(isinstance(k, str) for k in o):
            return {"d": {k: enc(v) for k, v in o.items()}}
        raise TypeError(f"a {type(o).__name__} cannot cross to the shadow process")

    head = json.dumps(enc(obj), separators=(",", ":")).encode()
    return [head, *bufs]


def unpack(parts: list[memoryview]) -> Any:
    bufs = parts[1:]

    def dec(o: Any) -> Any:
        if isinstance(o, list):
            return [dec(v) for v in o]
        if not isinstance(o, dict):
            return o
        if "a" in o:
            return np.frombuffer(bufs[o["a"]], dtype=np.dtype(o["dtype"])).reshape(o["shape"])
        if "t" in o:
            return tuple(dec(v) for v in o["t"])
        return {k: dec(v) for k, v in o["d"].items()}

    return dec(json.loads(bytes(parts[0])))


def primary_view(primary: Predictor) -> dict[str, Any]:
    """Production's plain public attributes (str, numbers, lists of them), for a candidate's
    `shadow_answer` in the child (fraud checks that both use the same features)."""
    out: dict[str, Any] = {"vertical": primary.vertical, "version": primary.bundle.version}
    scalar = (str, int, float, bool)
    for k, v in vars(primary).items():
        if k.startswith("_"):
            continue
        if isinstance(v, scalar) or (isinstance(v, list | tuple) and len(v) <= 10_000
                                     and all(isinstance(x, scalar) for x in v)):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import(path: str) -> Any:
    import importlib

    mod, _, qual = path.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


_ADAPTERS: dict[type, TypeAdapter] = {}


def _adapter(cls: type) -> TypeAdapter:
    a = _ADAPTERS.get(cls)
    if a is None:
        a = _ADAPTERS[cls] = TypeAdapter(list[cls | None])  # type: ignore[valid-type]
    return a


def _by_class(requests: list, where: list[int], results: list, idx: list[int]
              ) -> list[list[int]]:
    """`idx` split by request class and answer class (an error answer: None), one JSON schema
    per message. One group in practice: a predictor takes one request model and answers with
    one response model, and error answers add no agreement sums."""
    groups: dict[tuple[type, type | None], list[int]] = {}
    for j in idx:
        a = results[where[j]]
        key = (type(requests[where[j]]), type(a) if isinstance(a, BaseModel) else None)
        groups.setdefault(key, []).append(j)
    return list(groups.values())


# ---- the parent side --------------------------------------------------------------------------
class ShadowProcess:
    """`ShadowRunner`'s interface (`offer`, `drain`, `close`), with the candidate in a child
    process. `candidate` is the server's own loaded copy: its bundle path, class and options
    tell the child what to load, and it answers in-thread if the child cannot start."""

    def __init__(self, name: str, candidate: Predictor, fraction: float,
                 max_pending: int = 2048, cpu_share: float | None = None):
        from common.serving.prom import SHADOW_COMPARED, SHADOW_SKIPPED

        self.name, self.candidate, self.fraction = name, candidate, fraction
        self.max_pending = max_pending
        # No budget by default: nice 10 lets the kernel give production the CPU first, and the
        # child's work no longer takes the server's interpreter lock.
        env_share = os.environ.get("VERTICALS_SHADOW_CPU_SHARE")
        self.cpu_share = cpu_share if cpu_share is not None else (
            float(env_share) if env_share else None)
        self._version = candidate.bundle.version
        self._stateful = type(candidate).stateful
        self._m_compared = SHADOW_COMPARED.labels(name, self._version)
        self._m_skipped = {r: SHADOW_SKIPPED.labels(name, r) for r in (
            "behind", "budget", "candidate_error", "error_answer", "starting")}
        self._m_metric: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._pending = 0
        self._ready = False
        self._dead = False  # the child is gone after it was ready: nothing more is compared
        self._fallback: Any = None  # the in-thread ShadowRunner when the child cannot start
        self._primary: Predictor | None = None  # whose view the child holds
        self._meta: dict[tuple[type, type], bytes] = {}
        self._errors_logged: set[str] = set()
        self._closing = False
        self._window_start, self._window_cpu = time.monotonic(), 0.0
        self._rng = random.Random()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        try:
            self._spawn()
        except Exception as e:  # no process: the thread keeps the shadow on
            self._fall_back(f"could not start the shadow process: {type(e).__name__}: {e}")

    def _spawn(self) -> None:
        c = self.candidate
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (parent, child):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
        # the largest message the kernel takes (SO_SNDBUF less its overhead): the child's
        # receive buffer must hold it, or SOCK_SEQPACKET would cut it silently
        self._max_msg = parent.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 1024
        cfg = {
            "name": self.name, "cls": _class_path(type(c)), "bundle": str(c.bundle.path),
            "options": c.options, "device": str(c.device) if c.device is not None else None,
            "sys_path": [os.path.abspath(p or ".") for p in sys.path], "nice": NICE,
            "max_msg": self._max_msg,
        }
        try:
            arg = json.dumps(cfg)  # options that are not JSON fail here, before any spawn
        except TypeError:
            parent.close()
            child.close()
            raise
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the child exports nothing itself
        env["PYTHONPATH"] = os.pathsep.join(cfg["sys_path"])
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "common.serving.shadow_proc", str(child.fileno()), arg],
                pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL,
                start_new_session=True)  # a terminal's Ctrl-C is the server's to handle
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._sock = parent
        threading.Thread(target=self._read, name=f"shadow-reader-{self.name}",
                         daemon=True).start()

    def _fall_back(self, why: str) -> None:
        from common.serving.rollout import ShadowRunner

        with self._cond:
            if self._fallback is None:
                log.warning("%s: shadow candidate %s runs in-thread: %s", self.name,
                            self._version, why)
                share = self.cpu_share if self.cpu_share is not None else None
                self._fallback = ShadowRunner(self.name, self.candidate, self.fraction,
                                              cpu_share=share)  # its own, smaller bound
            self._cond.notify_all()

    @property
    def dead(self) -> bool:
        """The child exited after it was ready (the follower starts a new one)."""
        return self._dead

    @property
    def mode(self) -> str:
        return "thread" if self._fallback is not None else "process"

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        """Until the child has loaded the candidate (or the thread took over)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._ready or self._fallback is not None or self._dead, timeout_s)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Until everything handed over has been compared (asks the child to report now)."""
        fb = self._fallback
        if fb is not None:
            return fb.drain(timeout_s)
        if self._sock is not None and self._ready and not self._dead:
            try:
                self._sock.send(_frame([b"F"]), socket.MSG_DONTWAIT)
            except OSError:  # a full socket: the child reports within FLUSH_S anyway
                pass
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0 or self._dead, timeout_s)

    # -- called in the model thread (or inline on the event loop) after a production batch --
    def offer(self, primary: Predictor, requests: list, where: list[int], prepared: Any,
              results: list) -> None:
        fb = self._fallback
        if fb is not None:
            fb.fraction = self.fraction
            return fb.offer(primary, requests, where, prepared, results)
        if self.fraction >= 1.0:
            idx = list(range(len(where)))
        else:
            idx = [j for j in range(len(where)) if self._rng.random() < self.fraction]
        if not idx:
            return
        if not self._ready or self._dead:
            self._m_skipped["candidate_error" if self._dead else "starting"].inc(len(idx))
            return
        if not admit(self, len(idx), self._cond):
            return
        try:
            sent = sum(self._send(primary, requests, where, prepared, results, group)
                       for group in _by_class(requests, where, results, idx))
        except Exception as e:  # an input the wire cannot carry: the thread can take it
            self._release(len(idx))
            self._fall_back(f"{type(e).__name__}: {e}")
            return self._fallback.offer(primary, requests, where, prepared, results)
        if sent < len(idx):
            self._release(len(idx) - sent)
            self._m_skipped["behind"].inc(len(idx) - sent)

    def _over_budget(self) -> bool:
        if self.cpu_share is None:
            return False
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._window_start, self._window_cpu = now, 0.0
            return False
        return self._window_cpu > self.cpu_share * max(elapsed, 0.05)

    def _release(self, n: int) -> None:
        with self._cond:
            self._pending -= n
            self._cond.notify_all()

    def _send(self, primary, requests, where, prepared, results, idx: list[int]) -> int:
        """Hands `idx` over, in halves when a message would not fit the socket; returns how
        many were sent (the rest found the socket full)."""
        assert self._sock is not None
        if primary is not self._primary:  # production changed: the child needs its view
            view = json.dumps(primary_view(primary)).encode()
            try:
                self._sock.send(_frame([b"V", view]), socket.MSG_DONTWAIT)
            except BlockingIOError:
                return 0
            self._primary = primary
        reqs = [requests[where[j]] for j in idx]
        answers = [results[where[j]] if isinstance(results[where[j]], BaseModel) else None
                   for j in idx]
        rcls = type(reqs[0])
        acls = next((type(a) for a in answers if a is not None), rcls)
        meta = self._meta.get((rcls, acls))
        if meta is None:
            meta = self._meta[rcls, acls] = json.dumps(
                [_class_path(rcls), _class_path(acls)]).encode()
        parts: list[bytes | memoryview] = [
            b"B%d" % len(idx), meta, _adapter(rcls).dump_json(reqs, by_alias=True),
            _adapter(acls).dump_json(answers, by_alias=True)]
        if self._stateful:
            parts += pack(primary.select_prepared(prepared, idx))
        msg = _frame(parts)
        if len(msg) > self._max_msg:
            if len(idx) == 1:
                return 0
            h = len(idx) // 2
            return (self._send(primary, requests, where, prepared, results, idx[:h])
                    + self._send(primary, requests, where, prepared, results, idx[h:]))
        try:
            self._sock.send(msg, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError as e:
            if e.errno == errno.EMSGSIZE and len(idx) > 1:  # the kernel's limit is lower
                self._max_msg = min(self._max_msg, len(msg) - 1)
                return self._send(primary, requests, where, prepared, results, idx)
            self._child_gone(f"send failed: {e}")  # the child is gone
            return 0
        return len(idx)

    # -- the reader thread: the child's reports → metrics --------------------------------------
    def _read(self) -> None:
        from common.serving.prom import SHADOW_METRIC_SUM

        sock = self._sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(1 << 22)
            except OSError:
                data = b""
            if not data:
                break
            msg = json.loads(data)
            if "error" in msg and not self._ready:  # the child could not load the candidate
                self._fall_back(msg["error"])
                break
            if msg.get("ready"):
                with self._cond:
                    self._ready = True
                    self._cond.notify_all()
                log.warning("%s: shadow candidate %s in process %d", self.name, self._version,
                            msg["pid"])
                continue
            done = 0
            for n, compared, bad, sums, error, cpu in msg["batches"]:
                if error is not None:
                    self._m_skipped["candidate_error"].inc(n)
                    if error not in self._errors_logged and len(self._errors_logged) < 20:
                        self._errors_logged.add(error)  # once per distinct message
                        log.warning("%s: shadow candidate %s failed: %s", self.name,
                                    self._version, error)
                else:
                    for metric, total in sums.items():  # in the child's order: the same sums
                        child = self._m_metric.get(metric)
                        if child is None:
                            child = self._m_metric[metric] = SHADOW_METRIC_SUM.labels(
                                self.name, self._version, metric)
                        child.inc(total)
                    self._m_compared.inc(compared)
                    if bad:
                        self._m_skipped["error_answer"].inc(bad)
                self._window_cpu += cpu
                done += n
            self._release(done)
        if not self._ready and self._fallback is None:
            self._fall_back("the shadow process exited before it was ready")
        else:
            self._child_gone("the shadow process exited")

    def _child_gone(self, why: str) -> None:
        with self._cond:
            if self._dead or self._fallback is not None:
                return
            self._dead = True
            self._cond.notify_all()
        if not self._closing:
            log.error("%s: shadow candidate %s stopped: %s", self.name, self._version, why)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the child (EOF on its socket, then SIGTERM, then SIGKILL) and wait for it."""
        self._closing = True
        if self._fallback is not None:
            self._fallback.close()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader; the child reads EOF
            except OSError:
                pass
        p = self._proc
        if p is not None:
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(2.0)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self._sock is not None:
            self._sock.close()


# ---- the child ----------------------------------------------------------------------------------
def _watch_parent(ppid: int) -> None:
    """Exit when the parent is gone even if something else still holds the socket open."""
    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:
            os._exit(0)


def _idle_priority() -> None:
    """Once loaded, score only on CPU time nothing else wants (Linux SCHED_IDLE). Nice 10 still
    lets a busy shadow hold a core for a scheduler slice when production wakes up, which showed
    as a longer p99 on the compute-heavy fraud path; an idle-class task is preempted at once."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass  # not permitted here: nice 10 remains


def _child(fd: int, cfg: dict[str, Any]) -> None:
    from common.serving.rollout import compare

    sock = socket.socket(fileno=fd)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        os.nice(cfg.get("nice", NICE))
    except OSError:
        pass
    try:
        import torch

        torch.set_num_threads(1)  # a shadow that spreads over cores takes them from production
        cls = _import(cfg["cls"])
        candidate = cls.load(cfg["bundle"], device=cfg["device"], **cfg["options"])
    except Exception as e:
        sock.send(json.dumps({"error": f"cannot load the candidate: {type(e).__name__}: {e}"})
                  .encode())
        return
    _idle_priority()
    sock.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    buf = bytearray(cfg["max_msg"] + (1 << 16))
    view: Any = None
    classes: dict[bytes, tuple[type, type]] = {}
    out: list[list] = []
    held = 0  # requests in `out`
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal out, held, last_flush
        if out:
            sock.send(json.dumps({"batches": out}).encode())
        out, held, last_flush = [], 0, time.monotonic()

    while True:
        if out:  # a report is due FLUSH_S after the last one, even if nothing more comes
            wait = last_flush + FLUSH_S - time.monotonic()
            if wait <= 0 or not select.select([sock], [], [], wait)[0]:
                flush()
                continue
        n = sock.recv_into(buf)
        if n == 0:
            break  # EOF: the server closed the socket or died
        parts = _unframe(memoryview(buf)[:n])
        if parts[0] == b"V":
            view = types.SimpleNamespace(**json.loads(bytes(parts[1])))
            continue
        if parts[0] == b"F":  # the server waits for everything handed over so far
            flush()
            continue
        t0 = time.thread_time()
        count = int(bytes(parts[0][1:]))
        try:
            meta = bytes(parts[1])
            if meta not in classes:
                rc, ac = json.loads(meta)
                classes[meta] = (_import(rc), _import(ac))
            rcls, acls = classes[meta]
            reqs = _adapter(rcls).validate_json(bytes(parts[2]))
            answers = _adapter(acls).validate_json(bytes(parts[3]))
            prepared = unpack(parts[4:]) if len(parts) > 4 else None
            shadow = candidate.shadow_answer(reqs, prepared, view)
            compared, bad, sums = compare(answers, shadow)
            out.append([count, compared, bad, sums, None, 0.0])
        except Exception as e:  # reported, counted as candidate_error by the server
            out.append([count, 0, 0, {}, f"{type(e).__name__}: {e}", 0.0])
        out[-1][5] = time.thread_time() - t0
        held += count
        if held >= FLUSH_N or time.monotonic() - last_flush >= FLUSH_S:
            flush()


if __name__ == "__main__":
    cfg = json.loads(sys.argv[2])
    sys.path[:0] = [p for p in cfg["sys_path"] if p not in sys.path]
    logging.basicConfig(level=logging.WARNING)
    try:
        _child(int(sys.argv[1]), cfg)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server went away mid-send: nothing left to report to
