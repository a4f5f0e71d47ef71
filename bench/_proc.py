"""Process plumbing for the benches: start a server in its own session on 127.0.0.1, wait for
its health route, run the load generator, stop the server's whole process group; machine info."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    e.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return e


class Server:
    """One server process (and its children) on 127.0.0.1:port."""

    def __init__(self, name: str, cmd: list[str], port: int, health: str, extra_env: dict,
                 log_dir: Path):
        self.name, self.port, self.health = name, port, health
        self.log = open(log_dir / f"{name}.log", "wb")
        # own session: stop() signals the group, which includes LitServe's worker processes
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env(**extra_env), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        t_end = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.port}{self.health}"
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log.name}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready on {url} after {timeout_s}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # children (LitServe workers) may outlive the leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def uvicorn_cmd(factory: str, port: int) -> list[str]:
    """The same uvicorn settings for every server (LitServe passes them too)."""
    return [PY, "-m", "uvicorn", f"bench._servers:{factory}", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--http", "httptools", "--loop", "uvloop", "--no-access-log",
            "--log-level", "warning", "--workers", "1"]


def load(port: int, path: str, body_file: Path, concurrency: int, warmup: float,
         duration: float) -> dict:
    """Run the load generator as a separate process against one server."""
    cmd = [PY, "-m", "bench._loadgen", "--port", str(port), "--path", path, "--body-file",
           str(body_file), "--concurrency", str(concurrency), "--warmup", str(warmup),
           "--duration", str(duration)]
    out = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True,
                         timeout=warmup + duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
