"""The `verticals` command. Run `verticals --help`, or `verticals <command> --help`.

verticals demo                                  train what is missing, serve everything
verticals list                                  registered verticals
verticals train fraud [--preset demo]           train + publish a bundle
verticals evaluate fraud --protocol handbook --data DIR --out report.json
verticals serve --verticals fraud,recommender --port 8000 --workers 2
verticals score fraud day.parquet scores.parquet [--engine ray]
verticals models list | show fraud/production | alias | promote | rollback | history | diff
verticals monitor fraud --log DIR --out report.html   drift and performance from the log
verticals retrain fraud --log DIR --gate               candidate from logged labels, gated
verticals explain medical scan.dcm --out overlay.png
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common.artifacts import default_root, list_bundles, load_bundle
from common.cli_models import add_models_parser, cmd_models
from common.cli_monitor import add_monitor_parsers, cmd_monitor, cmd_retrain
from common.errors import VerticalsError
from common.registry import get_vertical, list_verticals
from common.tracking import command_run

__all__ = ["main", "build_parser"]
log = logging.getLogger("verticals")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root",
        default=str(default_root()),
        help="bundle store (default: $VERTICALS_HOME or ./artifacts)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best)")


def _work_dir(p: argparse.ArgumentParser, v) -> None:
    if v.resumable_training:
        p.add_argument("--work-dir", default=None,
                       help="keep the Trainer's checkpoints and metrics.jsonl here; rerunning "
                            "the same command with the same --work-dir resumes where it stopped")


def _per_vertical(sub, command: str, help_: str, build) -> None:
    """`verticals <command> <vertical> ...` with each vertical's own options."""
    p = sub.add_parser(command, help=help_, description=help_)
    vsub = p.add_subparsers(dest="vertical", metavar="VERTICAL", required=True)
    for name in list_verticals():
        vp = vsub.add_parser(name, help=get_vertical(name).title or name)
        _common(vp)
        build(vp, get_vertical(name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verticals", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("list", help="list registered verticals")

    def train_args(p, v):
        p.add_argument("--preset", default="demo", help="training preset (test, demo, ...)")
        p.add_argument("--data", default=None, help="train on this data instead of the default")
        _work_dir(p, v)
        v.add_train_args(p)

    _per_vertical(sub, "train", "train a model and publish a bundle", train_args)

    def eval_args(p, v):
        p.add_argument(
            "--protocol",
            default=(v.protocols or ("default",))[0],
            choices=v.protocols or None,
            help="evaluation protocol",
        )
        p.add_argument("--data", default=None, help="dataset file or folder")
        p.add_argument("--out", required=True, help="report JSON path")
        p.add_argument(
            "--bundle", default=None, help="score this bundle (path or 'latest') without retraining"
        )
        p.add_argument("--seeds", type=int, default=None, help="number of seeds")
        p.add_argument("--preset", default="quick", choices=["quick", "full"])
        _work_dir(p, v)
        v.add_evaluate_args(p)

    _per_vertical(
        sub, "evaluate", "run a published evaluation protocol, write a JSON report", eval_args
    )

    def score_args(p, v):
        p.add_argument("input", help="CSV / Parquet / JSONL file or a folder of them")
        p.add_argument("output", help="output .parquet or .csv")
        p.add_argument("--bundle", default="latest", help="bundle path or 'latest'")
        p.add_argument("--chunk-size", type=int, default=10_000, help="rows per chunk")
        p.add_argument("--engine", default="local", choices=["local", "ray"])
        p.add_argument("--ray-actors", type=int, default=2, help="actor pool size for ray")
        p.add_argument("--keep", default="", help="comma-separated input columns to copy")
        v.add_score_args(p)

    _per_vertical(sub, "score", "batch-score a file or folder (resumable)", score_args)

    sp = sub.add_parser("serve", help="serve verticals over HTTP")
    _common(sp)
    sp.add_argument(
        "--verticals", default=None, help="comma-separated (default: all with a bundle)"
    )
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--workers", type=int, default=1)
    sp.add_argument("--log-dir", default=None,
                    help="prediction log and feedback directory (default: $VERTICALS_LOG_DIR, "
                         "else <root>/_monitoring); must be writable")

    add_models_parser(sub, _common)
    add_monitor_parsers(sub, _common)

    dp = sub.add_parser("demo", help="train missing default models, then serve all verticals")
    _common(dp)
    dp.add_argument("--host", default="127.0.0.1")
    dp.add_argument("--port", type=int, default=8000)
    dp.add_argument("--no-serve", action="store_true", help="train and print, do not serve")
    dp.add_argument("--verticals", default=None, help="comma-separated subset (default: all)")

    ep = sub.add_parser("explain", help="explain one prediction (e.g. a Grad-CAM overlay)")
    ep.add_argument("vertical")
    ep.add_argument("image")
    ep.add_argument("--out", required=True)
    ep.add_argument("--bundle", default="latest")
    _common(ep)
    return parser


def _serve(args, names: list[str]) -> None:
    import uvicorn

    from common.monitoring.monitor import MonitorSettings
    from common.monitoring.predlog import check_writable

    cfg = {"verticals": names, "root": args.root, "device": args.device}
    os.environ["VERTICALS_SERVE_CONFIG"] = json.dumps(cfg)
    log_dir = getattr(args, "log_dir", None)
    if log_dir:  # every worker reads it from the environment
        os.environ["VERTICALS_LOG_DIR"] = str(log_dir)
    settings = MonitorSettings.from_env(args.root)  # bad settings fail here, with one line
    check_writable(settings.log_dir)  # before any worker starts: refuse with one line
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="verticals-prom-")
    workers_dir = None
    if args.workers > 1:  # uvicorn replaces a dead worker; /readyz tracks them through this
        from common.serving.workers import COUNT_ENV, DIR_ENV

        workers_dir = tempfile.mkdtemp(prefix="verticals-workers-")
        os.environ.update({DIR_ENV: workers_dir, COUNT_ENV: str(args.workers)})
    try:
        uvicorn.run(
            "common.serving.factory:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=30,
        )
    finally:
        if workers_dir:
            shutil.rmtree(workers_dir, ignore_errors=True)


def _cmd_demo(args) -> None:
    names = args.verticals.split(",") if args.verticals else list_verticals()
    if not names:
        raise VerticalsError("no verticals are installed", "verticals")
    for name in names:
        v = get_vertical(name)
        try:
            load_bundle("latest", vertical=name, root=args.root)
            print(f"[demo] {name}: using the existing bundle")
        except VerticalsError:
            t0 = time.time()
            print(f"[demo] {name}: training the default model on its embedded data ...", flush=True)
            b = v.train_default(Path(args.root), preset="demo")
            print(f"[demo] {name}: bundle {b.version} in {time.time() - t0:.0f}s", flush=True)
    base = f"http://{args.host}:{args.port}"
    print(
        f"\nServing {', '.join(names)} on {base}\n  docs:    {base}/docs\n  ready:   "
        f"{base}/readyz\n  models:  {base}/v1/models\n\nExample requests:"
    )
    for name in names:
        ex = get_vertical(name).example_requests()[0]
        print(f"# {name}\n{_curl(base, ex)}\n")
    sys.stdout.flush()
    if not args.no_serve:
        args.workers = 1
        _serve(args, names)


def _curl(base: str, ex) -> str:
    from urllib.parse import urlencode

    url = base + ex.path + (("?" + urlencode(ex.params)) if ex.params else "")
    if ex.method.upper() == "GET":
        return f"curl -s '{url}'"
    body = json.dumps(ex.body if ex.body is not None else ex.payload)
    return f"curl -s -X {ex.method.upper()} '{url}' -H 'Content-Type: application/json' -d '{body}'"


def _run(args) -> None:
    from common.reports import write_report

    if args.command == "list":
        for n in list_verticals():
            print(f"{n:<18} {get_vertical(n).title}")
    elif args.command == "train":
        with command_run(args) as run:  # MLflow, when MLFLOW_TRACKING_URI is set
            b = get_vertical(args.vertical).train(args)
            if run is not None:
                run.log_bundle(b)
        print(f"published {b.manifest['vertical']} bundle {b.version} at {b.path}")
        if b.manifest.get("metrics"):
            print(json.dumps(b.manifest["metrics"], indent=2))
    elif args.command == "evaluate":
        with command_run(args) as run:  # MLflow, when MLFLOW_TRACKING_URI is set
            report = get_vertical(args.vertical).evaluate(args)
            path = write_report(args.out, report)
            if run is not None:
                run.log_report(report, path, root=args.root)
        print(
            json.dumps(
                {
                    "report": str(path),
                    "metrics": report.get("metrics"),
                    "baselines": report.get("baselines"),
                },
                indent=2,
            )
        )
    elif args.command == "score":
        from common.batch import score_file
        from common.batch_io import check_output_path

        check_output_path(Path(args.input), Path(args.output))
        keep = [c for c in args.keep.split(",") if c]
        summary = score_file(
            args.vertical,
            args.input,
            args.output,
            bundle=args.bundle,
            root=args.root,
            chunk_size=args.chunk_size,
            engine=args.engine,
            args=args,
            keep=keep,
            ray_actors=args.ray_actors,
        )
        print(json.dumps(summary, indent=2))
    elif args.command == "serve":
        names = (
            args.verticals.split(",")
            if args.verticals
            else [n for n in list_verticals() if list_bundles(args.root, n)]
        )
        if not names:
            raise VerticalsError(
                f"no bundles under {args.root}; run `verticals demo` or "
                "`verticals train <vertical>` first",
                "verticals",
            )
        for n in names:
            get_vertical(n)  # unknown names fail here with one line, not in a worker
        _serve(args, names)
    elif args.command == "models":
        cmd_models(args)
    elif args.command == "monitor":
        cmd_monitor(args)
    elif args.command == "retrain":
        cmd_retrain(args)
    elif args.command == "demo":
        _cmd_demo(args)
    elif args.command == "explain":
        v = get_vertical(args.vertical)
        if not hasattr(v, "explain"):
            raise VerticalsError(f"{args.vertical} has no explanations", "vertical")
        print(v.explain(args))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    try:
        _run(args)
    except VerticalsError as e:
        print(f"error: {_one_line(e.message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one readable line; VERTICALS_DEBUG=1 shows the traceback
        if os.environ.get("VERTICALS_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {_one_line(str(e))}", file=sys.stderr)
        return 1
    return 0


def _one_line(message: str) -> str:
    # parser messages (pandas, pyarrow) carry newlines; the error is one greppable line
    return " ".join(message.split())


if __name__ == "__main__":
    sys.exit(main())
