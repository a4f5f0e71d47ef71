"""`verticals monitor` and `verticals retrain`: the prediction log, offline.

verticals monitor fraud --log DIR [--since 2026-11-01 --until 2026-12-01] [--bundles ROOT]
                  --out report.html|report.json [--window 500] [--ert 500]
verticals retrain fraud --log DIR [--since ...] [--root ROOT] [--gate [--margin 0.01]]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from common.errors import InvalidInput
from common.registry import get_vertical

__all__ = ["add_monitor_parsers", "cmd_monitor", "cmd_retrain", "parse_time"]


def parse_time(value: str | None, field: str) -> datetime | None:
    """ISO 8601 date or date-time; naive values are UTC (the log's clock)."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not an ISO 8601 date or date-time") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def add_monitor_parsers(sub, common) -> None:
    p = sub.add_parser(
        "monitor", help="drift and performance report from the prediction log (HTML or JSON)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vertical")
    p.add_argument("--log", required=True, metavar="DIR",
                   help="prediction log directory (the server's --log-dir)")
    p.add_argument("--since", default=None, help="first time included (ISO 8601, UTC)")
    p.add_argument("--until", default=None, help="first time excluded (ISO 8601, UTC)")
    p.add_argument("--bundles", default=None, metavar="ROOT",
                   help="bundle store holding the reference profiles (default: --root)")
    p.add_argument("--out", required=True, help="report.html (one self-contained page) or "
                                                ".json (the same data)")
    p.add_argument("--window", type=int, default=None,
                   help="rows per window (default: $VERTICALS_MONITOR_WINDOW or 500)")
    p.add_argument("--ert", type=float, default=None,
                   help="windows between false alarms (default: $VERTICALS_MONITOR_ERT or 500)")
    common(p)

    p = sub.add_parser(
        "retrain", help="train a candidate on logged inputs with their labels; --gate promotes "
                        "it if it beats production on the most recent labelled rows",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vertical")
    p.add_argument("--log", required=True, metavar="DIR", help="prediction log directory")
    p.add_argument("--since", default=None, help="use log rows from this time (ISO 8601, UTC)")
    p.add_argument("--holdout", type=float, default=0.25,
                   help="share of the most recent labelled rows kept out of training and used "
                        "by the gate (default 0.25)")
    p.add_argument("--gate", action="store_true",
                   help="run the champion/challenger gate on the held-out rows and promote the "
                        "candidate only if it passes")
    p.add_argument("--margin", type=float, default=0.0,
                   help="how far below production the candidate may score (>= 0)")
    p.add_argument("--reason", default="", help="recorded in the alias history")
    common(p)


def cmd_monitor(args: argparse.Namespace) -> None:
    from common.monitoring.report import build_report, write_report

    get_vertical(args.vertical)  # unknown names fail here with one line
    report = build_report(
        args.vertical, args.log, since=parse_time(args.since, "since"),
        until=parse_time(args.until, "until"), bundles=args.bundles or args.root,
        window=args.window, ert=args.ert)
    path = write_report(report, args.out)
    print(json.dumps({"report": str(path), "rows": report["rows"],
                      "labelled": report["labelled"],
                      "versions": {k: {"windows": len(v.get("windows", [])),
                                       "drift_windows": v.get("drift_windows", 0),
                                       **({} if v.get("monitored") else
                                          {"reason": v.get("reason")})}
                                   for k, v in report["versions"].items()}}, indent=2))


def cmd_retrain(args: argparse.Namespace) -> None:
    from common.monitoring.retrain import retrain

    get_vertical(args.vertical)
    result = retrain(args.vertical, args.log, args.root, since=parse_time(args.since, "since"),
                     holdout=args.holdout, gate=args.gate, margin=args.margin,
                     reason=args.reason)
    print(json.dumps(result, indent=2))
