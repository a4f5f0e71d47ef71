"""The offline monitoring report of `verticals monitor`: the prediction log (joined with its
feedback labels) re-cut into windows per model version and scored against each version's
reference profile with the same statistics as the server (`drift`, `estimate`).

    report = build_report("fraud", "logs/", bundles="artifacts", window=500)
    write_report(report, "report.html")     # one self-contained page (inline SVG), or .json

Windows are consecutive runs of `window` rows of one version in time order (as the server's);
a version with fewer rows than a window gets one window of all its rows, calibrated at that size.
"""

from __future__ import annotations

import html
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.errors import InvalidInput, NotFound

__all__ = ["read_joined", "build_report", "write_report", "render_html", "DEFAULT_WINDOW",
           "DEFAULT_ERT"]

DEFAULT_WINDOW = int(os.environ.get("VERTICALS_MONITOR_WINDOW", "500"))
DEFAULT_ERT = float(os.environ.get("VERTICALS_MONITOR_ERT", "500"))
MIN_WINDOW = 20  # fewer rows say nothing about a distribution


# ---- data ----------------------------------------------------------------------------------

def read_joined(log_dir: str | Path, vertical: str, since: datetime | None = None,
                until: datetime | None = None) -> pd.DataFrame:
    """Log rows in time order with `label` (JSON text of the latest feedback for the row's
    request id or business id; null when none arrived). Raises NotFound for a missing or
    empty log."""
    from common.monitoring.feedback import feedback_glob
    from common.monitoring.predlog import PredictionLog, time_filter

    root = Path(log_dir)
    if not root.is_dir():
        raise NotFound(f"log directory {root} does not exist", "log")
    plog = PredictionLog(root, vertical, start=False)
    if not plog.segments():
        raise NotFound(f"no prediction log for {vertical} under {root} "
                       f"(expected {root / vertical}/date=*/*.parquet)", "log")
    con = plog.connect()
    try:
        if list((plog.base / "feedback").glob("*.parquet")):
            # only the log's own path is spliced in, quoted by feedback_glob
            src = feedback_glob(plog.base)
            con.execute("CREATE VIEW fb AS SELECT id AS k, arg_max(label, ts) "  # nosec B608
                        f"AS label FROM read_parquet({src}) GROUP BY id")
        else:
            con.execute("CREATE VIEW fb AS SELECT NULL::VARCHAR k, NULL::VARCHAR label "
                        "WHERE false")
        cond, params = time_filter("log.ts", since, until)
        # fixed clauses only; the values are bound parameters
        df = con.execute(
            "SELECT log.*, coalesce(a.label, b.label) AS label FROM log "  # nosec B608
            "LEFT JOIN fb a ON a.k = log.request_id LEFT JOIN fb b ON b.k = log.id "
            f"{cond} ORDER BY log.ts, log.request_id", params).df()
    finally:
        con.close()
    return df


def _profile_of(vertical: str, version: str, bundles: Path) -> tuple[dict | None, str | None]:
    from common.artifacts import load_bundle
    from common.errors import VerticalsError
    from common.monitoring.profile import load_profile

    path = bundles / vertical / version
    if not path.is_dir():
        return None, f"bundle {vertical}/{version} is not in {bundles}"
    try:
        return load_profile(load_bundle(path, vertical=vertical))
    except VerticalsError as e:
        return None, f"bundle {vertical}/{version}: {e.message}"


def _column(df: pd.DataFrame, name: str, score_name: str) -> list[Any] | None:
    col = "score" if name == score_name else f"f_{name}"
    if col not in df.columns:
        return None
    return [None if v is None or (isinstance(v, float) and math.isnan(v))
            else (list(v) if isinstance(v, np.ndarray) else v) for v in df[col].tolist()]


def _scores(task: str, df: pd.DataFrame) -> list[Any]:
    if task == "binary":
        return [float(s) for s in df["score"].dropna()]
    if task == "multiclass":
        return [json.loads(p) for p in df["probs"].dropna()]
    return []


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float) and math.isfinite(v)}


def _windows(df: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    if len(df) < size:
        return [df] if len(df) >= MIN_WINDOW else []
    return [df.iloc[s : s + size] for s in range(0, len(df) - size + 1, size)]


def _version_report(df: pd.DataFrame, profile: dict, window: int, ert: float) -> dict[str, Any]:
    from common.monitoring.drift import calibrate, monitored, window_stats
    from common.monitoring.estimate import estimated, realised

    task, classes = profile["task"], profile.get("classes")
    score_name = profile.get("score_name") or "score"
    chunks = _windows(df, window)
    size = len(chunks[0]) if chunks else window
    thresholds = calibrate(profile, size, ert) if chunks else {}
    names = list(monitored(profile))
    wins = []
    for w in chunks:
        cols = {n: c for n in names if (c := _column(w, n, score_name)) is not None}
        stats = window_stats(profile, cols, thresholds)
        lab = w[w["label"].notna()]
        wins.append({
            "start": w["ts"].iloc[0].isoformat(), "end": w["ts"].iloc[-1].isoformat(),
            "n": len(w),
            "drift": {k: {"statistic": v["statistic"], "threshold": v["threshold"],
                          "method": v["method"], "drift": v["drift"]} for k, v in stats.items()},
            "drift_detected": any(v["drift"] for v in stats.values()),
            "estimated": _finite(estimated(task, _scores(task, w))),
            "realised": _finite(realised(task, lab, classes)) if len(lab) else {"n_labels": 0.0},
        })
    labelled = df[df["label"].notna()]
    out: dict[str, Any] = {
        "rows": len(df), "task": task, "monitored": True, "reason": None,
        "window_size": size, "windows": wins, "thresholds": thresholds,
        "drift_windows": sum(w["drift_detected"] for w in wins),
        "estimated": _finite(estimated(task, _scores(task, df))),
        "realised": (_finite(realised(task, labelled, classes)) if len(labelled)
                     else {"n_labels": 0.0}),
        "reference": _finite(profile.get("metrics") or {}),
        "score": None,
    }
    ref = profile.get("score")
    if ref and ref.get("kind") == "numeric":
        s = df["score"].dropna().to_numpy(np.float64)
        edges = np.asarray(ref["edges"])
        counts = np.bincount(np.searchsorted(edges, s, side="left"), minlength=len(edges) + 1)
        out["score"] = {"name": score_name, "edges": ref["edges"], "reference": ref["probs"],
                        "observed": (counts / max(len(s), 1)).tolist(), "n": len(s)}
    return out


def build_report(vertical: str, log_dir: str | Path, *, since: datetime | None = None,
                 until: datetime | None = None, bundles: str | Path | None = None,
                 window: int | None = None, ert: float | None = None) -> dict[str, Any]:
    """The report as a JSON-able dict (see the module docstring)."""
    from common.artifacts import default_root

    window = int(window or DEFAULT_WINDOW)
    ert = float(ert or DEFAULT_ERT)
    if window < 1:
        raise InvalidInput("window", f"must be >= 1, got {window}")
    if ert <= 1:
        raise InvalidInput("ert", f"must be > 1 (windows between false alarms), got {ert}")
    if since and until and since >= until:
        raise InvalidInput("until", "must be after --since")
    df = read_joined(log_dir, vertical, since, until)
    if df.empty:
        raise NotFound(f"the {vertical} log under {log_dir} has no rows in the period", "log")
    bundles = Path(bundles) if bundles else default_root()
    versions: dict[str, Any] = {}
    for version, part in df.groupby("model_version", sort=False):
        profile, reason = _profile_of(vertical, str(version), bundles)
        if profile is None:
            versions[str(version)] = {"rows": len(part), "monitored": False, "reason": reason}
        else:
            versions[str(version)] = _version_report(part.reset_index(drop=True), profile,
                                                     window, ert)
    return {
        "vertical": vertical, "log_dir": str(log_dir), "bundles": str(bundles),
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "first": df["ts"].iloc[0].isoformat(), "last": df["ts"].iloc[-1].isoformat(),
        "rows": len(df), "labelled": int(df["label"].notna().sum()),
        "window": window, "ert": ert, "versions": versions,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_report(report: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".html", ".htm", ".json"):
        raise InvalidInput("out", f"{out.name}: use .html or .json")
    if not out.parent.is_dir():
        raise InvalidInput("out", f"folder {out.parent} does not exist")
    text = json.dumps(report, indent=2) if suffix == ".json" else render_html(report)
    out.write_text(text, encoding="utf-8")
    return out


# ---- HTML (inline SVG, no scripts, no external resources) ---------------------------------

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")
_W, _H, _PAD = 640, 220, 40
e = html.escape


def _axes(y_max: float, y_label: str) -> list[str]:
    parts = [f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 10}" y2="{_H - _PAD}" '
             'stroke="#444"/>',
             f'<line x1="{_PAD}" y1="10" x2="{_PAD}" y2="{_H - _PAD}" stroke="#444"/>',
             f'<text x="4" y="14" font-size="10">{e(y_label)}</text>']
    for frac in (0, 0.5, 1):
        y = _H - _PAD - frac * (_H - _PAD - 10)
        parts.append(f'<text x="{_PAD - 4}" y="{y + 3:.0f}" font-size="9" '
                     f'text-anchor="end">{frac * y_max:.3g}</text>')
    return parts


def _legend(names: list[str]) -> str:
    items = "".join(f'<span style="color:{_PALETTE[i % len(_PALETTE)]}">&#9632; {e(n)}</span> '
                    for i, n in enumerate(names))
    return f'<div class="legend">{items}</div>'


def svg_lines(series: dict[str, list[float | None]], y_label: str,
              ref_line: float | None = None) -> str:
    """Lines over window index; an optional dashed reference level (e.g. threshold = 1)."""
    n = max((len(v) for v in series.values()), default=0)
    vals = [x for v in series.values() for x in v if x is not None and math.isfinite(x)]
    y_max = max([*vals, ref_line or 0.0, 1e-9]) * 1.1
    sx = (_W - 10 - _PAD) / max(n - 1, 1)
    sy = (_H - _PAD - 10) / y_max

    def pt(i: int, v: float) -> str:
        return f"{_PAD + i * sx:.1f},{_H - _PAD - v * sy:.1f}"

    parts = _axes(y_max, y_label)
    parts.append(f'<text x="{_W / 2:.0f}" y="{_H - 8}" font-size="10" text-anchor="middle">'
                 f'window (1..{n})</text>')
    if ref_line is not None:
        y = _H - _PAD - ref_line * sy
        parts.append(f'<line x1="{_PAD}" y1="{y:.1f}" x2="{_W - 10}" y2="{y:.1f}" '
                     'stroke="#d62728" stroke-dasharray="4 3"/>')
    for k, (name, v) in enumerate(series.items()):
        color = _PALETTE[k % len(_PALETTE)]
        pts = [pt(i, x) for i, x in enumerate(v) if x is not None and math.isfinite(x)]
        if len(pts) > 1:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                         f'points="{" ".join(pts)}"><title>{e(name)}</title></polyline>')
        for p in pts:
            parts.append(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2" '
                         f'fill="{color}"><title>{e(name)}</title></circle>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
            f'role="img">{"".join(parts)}</svg>' + _legend(list(series)))


def svg_bars(labels: list[str], groups: dict[str, list[float]], y_label: str) -> str:
    """Grouped bars (e.g. reference vs observed share per score bin)."""
    n, g = len(labels), max(len(groups), 1)
    y_max = max([x for v in groups.values() for x in v] + [1e-9]) * 1.1
    slot = (_W - 10 - _PAD) / max(n, 1)
    bw = slot * 0.8 / g
    sy = (_H - _PAD - 10) / y_max
    parts = _axes(y_max, y_label)
    for k, (name, v) in enumerate(groups.items()):
        color = _PALETTE[k % len(_PALETTE)]
        for i, x in enumerate(v):
            h = x * sy
            parts.append(f'<rect x="{_PAD + i * slot + slot * 0.1 + k * bw:.1f}" '
                         f'y="{_H - _PAD - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                         f'fill="{color}"><title>{e(name)} {e(labels[i])}: {x:.3f}</title></rect>')
    for i, lab in enumerate(labels):
        parts.append(f'<text x="{_PAD + (i + 0.5) * slot:.1f}" y="{_H - _PAD + 12}" '
                     f'font-size="8" text-anchor="middle">{e(lab)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
            f'role="img">{"".join(parts)}</svg>' + _legend(list(groups)))


def _bin_labels(edges: list[float]) -> list[str]:
    f = [f"{x:.3g}" for x in edges]
    return ([f"≤{f[0]}"] if f else ["all"]) + [f"≤{b}" for b in f[1:]] + ([f">{f[-1]}"]
                                                                          if f else [])


def _table(rows: list[list[Any]], head: list[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else e(str(v))

    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + f"</tr>{body}</table>")


def _version_html(version: str, v: dict[str, Any]) -> str:
    out = [f"<h2>Version {e(version)}</h2>"]
    if not v.get("monitored"):
        return out[0] + f"<p>{v['rows']} rows; not monitored: {e(v.get('reason') or '')}</p>"
    wins = v["windows"]
    out.append(f"<p>{v['rows']} rows, {len(wins)} windows of {v['window_size']}, "
               f"{v['drift_windows']} with drift.</p>")
    if wins:
        names = list(wins[0]["drift"])
        ratio = {n: [w["drift"][n]["statistic"] / w["drift"][n]["threshold"]
                     if n in w["drift"] and w["drift"][n]["threshold"] > 0 else None
                     for w in wins] for n in names}
        out.append("<h3>Drift per input over time</h3><p>statistic / calibrated threshold "
                   "per window; above the dashed line (1) the window drifted.</p>")
        out.append(svg_lines(ratio, "stat / threshold", ref_line=1.0))
        drifted = sorted({n for w in wins for n, d in w["drift"].items() if d["drift"]})
        out.append(f"<p>Inputs that drifted in any window: {e(', '.join(drifted) or 'none')}</p>")
    if v.get("score"):
        s = v["score"]
        out.append(f"<h3>Output distribution: {e(s['name'])} against the reference</h3>")
        out.append(svg_bars(_bin_labels(s["edges"]),
                            {"reference": s["reference"], f"observed (n={s['n']})":
                             s["observed"]}, "share of rows"))
    metrics = sorted(set(v["estimated"]) | set(v["realised"]) | set(v["reference"])
                     - {"n_labels"})
    out.append("<h3>Estimated against realised performance</h3>")
    if wins:
        common = [m for m in metrics if any(m in w["estimated"] for w in wins)]
        series: dict[str, list[float | None]] = {}
        for m in common:
            series[f"estimated {m}"] = [w["estimated"].get(m) for w in wins]
            if any(m in w["realised"] for w in wins):
                series[f"realised {m}"] = [w["realised"].get(m) for w in wins]
        if series:
            out.append(svg_lines(series, "metric"))
    rows = [[m, v["reference"].get(m, "-"), v["estimated"].get(m, "-"),
             v["realised"].get(m, "-")] for m in metrics]
    out.append(_table(rows, ["metric", "reference (validation)", "estimated (all rows)",
                             f"realised ({int(v['realised'].get('n_labels', 0))} labels)"]))
    return "".join(out)


def render_html(report: dict[str, Any]) -> str:
    """One self-contained page: inline SVG and CSS, no scripts, nothing fetched."""
    head = (f"<p>{report['rows']} logged predictions ({report['labelled']} with labels) from "
            f"{e(report['first'])} to {e(report['last'])}; windows of {report['window']}, "
            f"thresholds calibrated to one false alarm per {report['ert']:g} windows; "
            f"log {e(report['log_dir'])}, bundles {e(report['bundles'])}.</p>")
    body = "".join(_version_html(k, v) for k, v in report["versions"].items())
    style = ("body{font-family:sans-serif;max-width:900px;margin:auto;padding:1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
             ".legend{font-size:11px;margin-bottom:1em}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{e(report['vertical'])}"
            f" monitoring report</title><style>{style}</style></head><body>"
            f"<h1>{e(report['vertical'])}: monitoring report</h1>{head}{body}"
            f"<p><small>created {e(report['created_at'])} by verticals monitor</small></p>"
            "</body></html>")
