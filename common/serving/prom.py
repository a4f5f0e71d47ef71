"""Prometheus metrics. Multiprocess-safe: when PROMETHEUS_MULTIPROC_DIR is set (the CLI sets it
for --workers > 1) every worker writes to that directory and /metrics aggregates them."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = [
    "REQUESTS",
    "LATENCY",
    "QUEUE_DEPTH",
    "BATCH_SIZE",
    "STAGE_TIME",
    "MODEL_SWAPS",
    "MODEL_VERSION",
    "MODEL_REQUESTS",
    "MODEL_LATENCY",
    "SHADOW_COMPARED",
    "SHADOW_METRIC_SUM",
    "SHADOW_SKIPPED",
    "MON_ENABLED",
    "DRIFT_STATISTIC",
    "DRIFT_THRESHOLD",
    "DRIFT_DETECTED",
    "MON_WINDOWS",
    "ESTIMATED_PERF",
    "REALISED_PERF",
    "REFERENCE_PERF",
    "LOG_ROWS",
    "FEEDBACK",
    "render",
]

REQUESTS = Counter("verticals_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram(
    "verticals_request_latency_seconds",
    "HTTP request latency",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_DEPTH = Gauge(
    "verticals_queue_depth",
    "Requests waiting for the model",
    ["model"],
    multiprocess_mode="livesum",
)
BATCH_SIZE = Histogram(
    "verticals_batch_size",
    "Items per model call",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
STAGE_TIME = Histogram(
    "verticals_stage_seconds",
    "Time per serving stage",
    ["model", "stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)

MODEL_SWAPS = Counter(
    "verticals_model_swaps_total",
    "Bundle swaps by the alias follower (outcome: swapped or refused)",
    ["model", "outcome"],
)
# 1 for the version a process serves, 0 for the one it replaced; per process under several
# workers, so a scrape shows whether every worker converged on the same version
MODEL_VERSION = Gauge(
    "verticals_model_version_info",
    "Bundle version served (1) by this process",
    ["model", "version"],
    multiprocess_mode="liveall",
)

# Per model version, so a canary's errors and latency can be told from production's.
MODEL_REQUESTS = Counter(
    "verticals_model_requests_total",
    "Requests answered per model version (outcome: ok or the error code)",
    ["model", "version", "outcome"],
)
MODEL_LATENCY = Histogram(
    "verticals_model_latency_seconds",
    "Time from submit to answer per model version (queue + model)",
    ["model", "version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Shadow agreement as running sums: mean = sum / compared, which adds up across workers.
SHADOW_COMPARED = Counter(
    "verticals_shadow_compared_total",
    "Requests answered by the shadow candidate and compared",
    ["model", "candidate"],
)
SHADOW_METRIC_SUM = Counter(
    "verticals_shadow_agreement",
    "Sum of per-request agreement values (label_agreement, abs_delta_p, overlap_at_k, chrf)",
    ["model", "candidate", "metric"],
)
SHADOW_SKIPPED = Counter(
    "verticals_shadow_skipped_total",
    "Sampled requests the shadow did not compare (behind, budget, starting, candidate_error, "
    "error_answer)",
    ["model", "reason"],
)


# Monitoring (common/monitoring). Each worker keeps its own windows: drift gauges take the max
# over live workers (an alert fires if any worker's window drifted); realised performance is
# computed from the shared log, so every worker reports the same value (most recent wins).
MON_ENABLED = Gauge("verticals_monitoring_enabled",
                    "1 when this version is monitored (has a reference profile), else 0",
                    ["vertical", "version"], multiprocess_mode="livemax")
DRIFT_STATISTIC = Gauge("verticals_drift_statistic",
                        "Drift statistic of the last complete window (PSI, JS distance, chi2)",
                        ["vertical", "version", "feature"], multiprocess_mode="livemax")
DRIFT_THRESHOLD = Gauge("verticals_drift_threshold",
                        "Calibrated threshold of the drift statistic",
                        ["vertical", "version", "feature"], multiprocess_mode="livemax")
DRIFT_DETECTED = Gauge("verticals_drift_detected",
                       "1 if the last complete window drifted on any feature",
                       ["vertical", "version"], multiprocess_mode="livemax")
MON_WINDOWS = Counter("verticals_monitor_windows_total", "Complete monitoring windows",
                      ["vertical", "version"])
ESTIMATED_PERF = Gauge("verticals_estimated_performance",
                       "Performance estimated from calibrated scores (last window)",
                       ["vertical", "version", "metric"], multiprocess_mode="livemostrecent")
REALISED_PERF = Gauge("verticals_realised_performance",
                      "Performance on delayed labels joined to the prediction log",
                      ["vertical", "version", "metric"], multiprocess_mode="livemostrecent")
REFERENCE_PERF = Gauge("verticals_reference_performance",
                       "Validation metrics stored in the bundle's reference profile",
                       ["vertical", "version", "metric"], multiprocess_mode="livemax")
LOG_ROWS = Counter("verticals_prediction_log_rows", "Rows written to the prediction log",
                   ["vertical"])
FEEDBACK = Counter("verticals_feedback", "Feedback labels by outcome (accepted or unknown)",
                   ["vertical", "outcome"])


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
