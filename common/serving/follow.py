"""The server follows the store's `production` alias, in every worker and every replica.

Each server process polls the store itself (a per-process admin call would reach one worker or
one replica only). When a vertical's `production` alias points at a bundle other than the one
being served, the new bundle is loaded, checksum-verified and warmed up in a thread, off the
request path, then swapped in inside the model thread: a batch already running finishes on the
model it started on, and every later batch runs on the new one. A bundle that fails to load or
verify is refused with a log line and a metric, and the old model keeps serving; the same broken
target is not retried until the alias or the bundle changes.

Verticals served from an explicit bundle path (`bundles=` / tests' ready-made predictors) are
pinned and never followed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from common.aliases import get_aliases, get_rollout, serving_ref
from common.artifacts import MANIFEST
from common.predictor import Predictor
from common.serving.prom import MODEL_SWAPS, MODEL_VERSION
from common.serving.rollout import Rollout, RolloutSettings, make_shadow
from common.serving.served import ServedPredictor

__all__ = ["AliasFollower", "DEFAULT_POLL_S"]
log = logging.getLogger(__name__)
DEFAULT_POLL_S = float(os.environ.get("VERTICALS_ALIAS_POLL_S", "2.0"))
SHADOW_START_S = 120.0  # a shadow process not ready by then counts requests as `starting`


def _stamp(path: Path) -> tuple[str, float]:
    """Identity of a target for the refused-target memo: its path and manifest mtime."""
    try:
        return str(path), (path / MANIFEST).stat().st_mtime
    except OSError:
        return str(path), -1.0


class AliasFollower:
    """Polls `root` every `poll_s` seconds and swaps in each vertical's production bundle."""

    def __init__(
        self,
        served: dict[str, ServedPredictor],
        build: Callable[[str, Path], Predictor],
        root: str | Path | None,
        pinned: set[str] | frozenset[str] = frozenset(),
        poll_s: float = DEFAULT_POLL_S,
        examples: dict[str, list] | None = None,
    ):
        self.served, self.build, self.root = served, build, root
        self.examples = examples or {}  # vertical -> example payloads for the warm-up
        self.pinned = set(pinned)
        self.poll_s = poll_s
        self._refused: dict[str, tuple[str, float]] = {}
        self.rollouts: dict[str, Rollout] = {}  # vertical -> its candidate (shadow / canary)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        for name, s in self.served.items():
            MODEL_VERSION.labels(name, s.predictor.bundle.version).set(1)
        if self.poll_s > 0:
            self._task = asyncio.create_task(self._run(), name="alias-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for name in list(self.rollouts):
            await self._drop_rollout(name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.check_once()
            except Exception:  # the follower must never die: log and poll again
                log.exception("alias follower: check failed")

    def _target(self, name: str) -> Path | None:
        ref = serving_ref(self.root, name)
        return None if ref == "latest" else Path(ref)

    async def check_once(self) -> list[str]:
        """One poll over every followed vertical; returns the names swapped."""
        swapped = []
        for name, s in list(self.served.items()):
            if name in self.pinned:
                continue
            target = self._target(name)
            if target is None or target.resolve() == s.predictor.bundle.path.resolve():
                continue
            stamp = _stamp(target)
            if self._refused.get(name) == stamp:
                continue
            if await self._swap(name, s, target, stamp):
                swapped.append(name)
        for name, s in list(self.served.items()):
            if name not in self.pinned:
                await self._follow_candidate(name, s)
        return swapped

    async def _follow_candidate(self, name: str, s: ServedPredictor) -> None:
        """Load, update or drop the vertical's shadow/canary candidate to match the store."""
        settings = RolloutSettings.from_store(get_rollout(self.root, name))
        version = get_aliases(self.root, name).get("candidate")
        cur = self.rollouts.get(name)
        if not settings.active or not version or version == s.predictor.bundle.version:
            if cur is not None:
                await self._drop_rollout(name)
            return
        target = Path(self.root or ".") / name / version
        if cur is not None and cur.version == version:
            dead = getattr(cur.shadow, "dead", False)  # its process exited: start another
            if cur.settings != settings or dead:  # new shares: same candidate and shadow
                keep = cur.shadow if settings.shadow > 0 and not dead else None
                await self._drop_rollout(name, keep_candidate=True, keep_shadow=keep)
                await self._install(name, s, cur.candidate, settings, keep)
            return
        stamp = _stamp(target)
        if self._refused.get(f"candidate:{name}") == stamp:
            return
        try:
            new = await asyncio.to_thread(self.build, name, target)
            await asyncio.to_thread(new.warmup, self.examples.get(name))
        except Exception as e:
            self._refused[f"candidate:{name}"] = stamp
            MODEL_SWAPS.labels(name, "candidate_refused").inc()
            reason = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            log.error("%s: refused candidate %s: %s", name, version, reason)
            return
        await s.call(new.adopt_state, s.predictor)  # a canary shares production's live state
        if cur is not None:
            await self._drop_rollout(name)
        cs = ServedPredictor(new, max_batch_size=s.max_batch_size,
                             max_wait_ms=s.max_wait_s * 1e3, max_queue=s.max_queue,
                             timeout_s=s.timeout_s, executor=s._executor, candidate=True)
        cs.monitor = s.monitor  # canary answers are logged and monitored under their version
        await cs.start()
        await self._install(name, s, cs, settings)
        log.warning("%s: candidate %s on (shadow %.0f%%, canary %.0f%%)",
                    name, version, 100 * settings.shadow, 100 * settings.canary)

    async def _install(self, name: str, s: ServedPredictor, cs: ServedPredictor,
                       settings: RolloutSettings, shadow=None) -> None:
        if shadow is not None:
            shadow.fraction = settings.shadow
        elif settings.shadow > 0:  # its process loads the candidate: off the event loop
            shadow = await asyncio.to_thread(make_shadow, name, cs.predictor, settings.shadow)
            await asyncio.to_thread(shadow.wait_ready, SHADOW_START_S)
        self.rollouts[name] = Rollout(name, settings, cs, shadow,
                                      type(s.predictor).routing_field)
        s.shadow = shadow

    async def _drop_rollout(self, name: str, keep_candidate: bool = False,
                            keep_shadow=None) -> None:
        r = self.rollouts.pop(name, None)
        if r is None:
            return
        s = self.served.get(name)
        if s is not None and s.shadow is r.shadow:
            s.shadow = None
        if r.shadow is not None and r.shadow is not keep_shadow:
            await asyncio.to_thread(r.shadow.close)  # waits for its process to exit
        if not keep_candidate:
            await r.candidate.stop(drain=True)
            log.warning("%s: candidate %s off", name, r.version)

    async def _swap(self, name: str, s: ServedPredictor, target: Path, stamp) -> bool:
        old = s.predictor
        try:
            new = await asyncio.to_thread(self.build, name, target)
            await asyncio.to_thread(new.warmup, self.examples.get(name))
        except Exception as e:  # BundleError and anything a broken bundle raises in setup
            self._refused[name] = stamp
            MODEL_SWAPS.labels(name, "refused").inc()
            reason = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            log.error("%s: refused bundle %s (keeps serving %s): %s",
                      name, target.name, old.bundle.version, reason)
            return False

        def handover() -> None:  # in the model thread: no batch runs while the model changes
            new.adopt_state(old)
            s.predictor = new

        await s.call(handover)
        self._refused.pop(name, None)
        MODEL_SWAPS.labels(name, "swapped").inc()
        MODEL_VERSION.labels(name, old.bundle.version).set(0)
        MODEL_VERSION.labels(name, new.bundle.version).set(1)
        log.warning("%s: now serving %s (was %s)", name, new.bundle.version, old.bundle.version)
        old.close()
        return True

