"""`verticals models ...`: list, show and compare bundles, and move aliases.

verticals models list
verticals models show fraud/latest | fraud/production | fraud/VERSION | PATH
verticals models alias fraud VERSION candidate --reason "retrained on October"
verticals models promote fraud [--reason ...]       candidate -> production
verticals models promote fraud --gate DATA [--margin 0.01]   ... only if the candidate scores
                                                    no worse than production - margin on DATA
verticals models rollback fraud [--reason ...]      production -> the version it replaced
verticals models history fraud
verticals models diff fraud/production fraud/candidate
verticals models rollout fraud --shadow 0.1 --canary 0.05 [--key customer_id|header:X-User]
verticals models rollout fraud --off
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common.aliases import (
    alias_history,
    get_aliases,
    get_rollout,
    promote,
    rollback,
    set_alias,
    set_rollout,
)
from common.artifacts import Bundle, list_bundles, load_bundle
from common.errors import InvalidInput, NotFound
from common.gate import add_gate_args, run_gate
from common.registry import get_vertical, list_verticals
from common.reports import flatten

__all__ = ["add_models_parser", "cmd_models", "load_ref"]


def add_models_parser(sub, common) -> None:
    mp = sub.add_parser("models", help="list, show and compare bundles; move aliases",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = mp.add_subparsers(dest="action", metavar="ACTION", required=True)
    common(msub.add_parser("list", help="every bundle, with its aliases"))
    p = msub.add_parser("show", help="a bundle's manifest")
    p.add_argument("ref", help="VERTICAL/latest, VERTICAL/ALIAS, VERTICAL/VERSION or a path")
    common(p)
    p = msub.add_parser("alias", help="point an alias at a bundle version")
    p.add_argument("vertical")
    p.add_argument("version")
    p.add_argument("name", help="alias name, e.g. production or candidate")
    p.add_argument("--reason", default="")
    common(p)
    for action, help_ in (("promote", "candidate -> production"),
                          ("rollback", "production -> the version it replaced")):
        p = msub.add_parser(action, help=help_)
        p.add_argument("vertical")
        p.add_argument("--reason", default="")
        if action == "promote":
            add_gate_args(p)
        common(p)
    p = msub.add_parser("history", help="every alias move of a vertical")
    p.add_argument("vertical")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    common(p)
    p = msub.add_parser("rollout", help="shadow and canary shares of the candidate")
    p.add_argument("vertical")
    p.add_argument("--shadow", type=float, default=0.0,
                   help="share of requests also answered by the candidate (never returned)")
    p.add_argument("--canary", type=float, default=0.0,
                   help="share of routing keys answered by the candidate")
    p.add_argument("--key", default=None, help="routing key: a request field or header:NAME "
                   "(default: the vertical's caller field, else header:X-Routing-Key)")
    p.add_argument("--off", action="store_true", help="turn shadow and canary off")
    p.add_argument("--reason", default="")
    common(p)
    p = msub.add_parser("diff", help="config and metrics of two bundles side by side")
    p.add_argument("a")
    p.add_argument("b")
    common(p)


def load_ref(ref: str, root: str | Path | None) -> Bundle:
    """VERTICAL/latest, VERTICAL/ALIAS, VERTICAL/VERSION, or a bundle directory path."""
    head, _, tail = ref.partition("/")
    is_vertical = head in list_verticals() or (Path(root or ".") / head).is_dir()
    if tail and "/" not in tail and is_vertical and not Path(ref).is_dir():
        if tail == "latest":
            return load_bundle("latest", vertical=head, root=root)
        aliases = get_aliases(root, head)
        version = aliases.get(tail, tail)
        path = Path(root) / head / version
        if not path.is_dir():
            raise NotFound(f"{head} has no alias or version {tail!r}", "ref")
        return load_bundle(path, vertical=head)
    if not Path(ref).is_dir():
        raise NotFound(
            f"{ref!r} is not VERTICAL/latest|ALIAS|VERSION under {root} nor a bundle directory",
            "ref",
        )
    return load_bundle(ref)



def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "-" if v is None else json.dumps(v) if isinstance(v, list | dict) else str(v)


def _diff(a: Bundle, b: Bundle) -> str:
    rows = [("", f"A {a.manifest['vertical']}/{a.version}",
             f"B {b.manifest['vertical']}/{b.version}")]
    for key in ("name", "created_at", "data_fingerprint"):
        va, vb = a.manifest.get(key), b.manifest.get(key)
        rows.append((key + ("" if va == vb else " *"), _fmt(va), _fmt(vb)))
    for section in ("model", "metrics"):
        fa, fb = flatten(a.manifest.get(section, {})), flatten(b.manifest.get(section, {}))
        for key in sorted(set(fa) | set(fb)):
            va, vb = fa.get(key), fb.get(key)
            if section == "model" and va == vb:
                continue  # config: only what differs; metrics: all, side by side
            mark = "" if va == vb else " *"
            rows.append((f"{section}.{key}{mark}", _fmt(va), _fmt(vb)))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}" for r in rows)


def cmd_models(args: argparse.Namespace) -> None:
    root = args.root
    if args.action == "list":
        rows = list_bundles(root)
        if not rows:
            print(f"no bundles under {root}")
        by_version: dict[tuple[str, str], list[str]] = {}
        for v in {p.parent.name for p in rows}:
            for name, version in get_aliases(root, v).items():
                by_version.setdefault((v, version), []).append(name)
        for p in rows:
            m = json.loads((p / "manifest.json").read_text())
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(m.get("metrics", {}).items())[:4]
                                if isinstance(v, int | float))
            tags = ",".join(sorted(by_version.get((p.parent.name, p.name), [])))
            print(f"{m['vertical']:<16} {m['version']:<24} {tags or '-':<20} {m['name']:<24} "
                  f"{metrics}  {p}")
    elif args.action == "show":
        print(json.dumps(load_ref(args.ref, root).manifest, indent=2))
    elif args.action == "alias":
        get_vertical(args.vertical)
        rec = set_alias(root, args.vertical, args.version, args.name, reason=args.reason)
        print(f"{args.vertical}: {rec['alias']} {rec['from'] or '-'} -> {rec['to']}")
    elif args.action in ("promote", "rollback"):
        get_vertical(args.vertical)
        if args.action == "rollback":
            rec = rollback(root, args.vertical, reason=args.reason)
        elif args.gate is not None:  # the gate refuses by raising: nothing moves
            reason, scored = run_gate(root, args.vertical, args)
            rec = promote(root, args.vertical, reason=reason, expect=scored)
        else:
            rec = promote(root, args.vertical, reason=args.reason)
        print(f"{args.vertical}: production {rec['from'] or '-'} -> {rec['to']}")
    elif args.action == "history":
        get_vertical(args.vertical)
        if not (Path(root) / args.vertical).is_dir():
            raise NotFound(f"no bundles for vertical {args.vertical!r} under {root}", "vertical")
        hist = alias_history(root, args.vertical)
        if args.json:
            print(json.dumps(hist, indent=2))
            return
        if not hist:
            print(f"{args.vertical}: no alias moves yet")
        for r in hist:
            print(f"{r['time']}  {r['action']:<8} {r['alias']:<11} {r['from'] or '-'} -> "
                  f"{r['to'] or '-'}  by {r['user']}  {r['reason']}")
    elif args.action == "rollout":
        get_vertical(args.vertical)
        if args.off:
            args.shadow = args.canary = 0.0
        set_rollout(root, args.vertical, args.shadow, args.canary, args.key, reason=args.reason)
        state = get_rollout(root, args.vertical)
        print(f"{args.vertical}: " + (f"shadow {state['shadow']:.0%}, canary {state['canary']:.0%}"
                                      if state else "shadow and canary off"))
    elif args.action == "diff":
        print(_diff(load_ref(args.a, root), load_ref(args.b, root)))
    else:  # argparse's choices make this unreachable
        raise InvalidInput("action", f"unknown action {args.action!r}")
