"""Prometheus text exposition of the service's counters (no client library: plain counters)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping

__all__ = ["BUCKETS", "Metrics"]

BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Counters and a latency histogram, updated from the event loop (no locks needed there)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.rows_scored: dict[str, int] = defaultdict(int)
        self.feedback_rows = 0
        self.unknown_category: dict[tuple[str, str], int] = defaultdict(int)
        # staged rollouts (updated from the shadow thread too: += on an int is atomic enough under the GIL
        # for counters read by a scrape)
        self.shadow_rows: dict[str, int] = defaultdict(int)
        self.shadow_errors: dict[str, int] = defaultdict(int)
        self.shadow_dropped: dict[str, int] = defaultdict(int)
        self._hist: dict[str, list[int]] = {}
        self._sum: dict[str, float] = defaultdict(float)

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one request of ``route`` answered with ``status`` after ``seconds``."""
        self.requests[(route, status)] += 1
        counts = self._hist.get(route)
        if counts is None:
            counts = self._hist[route] = [0] * (len(BUCKETS) + 1)
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum[route] += seconds

    def error(self, route: str, kind: str) -> None:
        """Count one refused or failed request by problem kind."""
        self.errors[(route, kind)] += 1

    def render(self, gauges: Mapping[str, tuple[str, Mapping[tuple[tuple[str, str], ...], float]]]) -> str:
        """Return the Prometheus text format, with extra ``gauges`` (name -> (help, labels -> value))."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        family("lakeops_requests_total", "counter", "HTTP requests answered, by route and status.")
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'lakeops_requests_total{{route="{route}",status="{status}"}} {n}')
        family("lakeops_errors_total", "counter", "Requests answered with a problem, by route and problem type.")
        for (route, kind), n in sorted(self.errors.items()):
            out.append(f'lakeops_errors_total{{route="{route}",type="{kind}"}} {n}')
        family("lakeops_request_duration_seconds", "histogram", "Time to answer a request, by route.")
        for route, counts in sorted(self._hist.items()):
            cum = 0
            for bound, c in zip(BUCKETS, counts, strict=False):
                cum += c
                out.append(f'lakeops_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {cum}')
            cum += counts[-1]
            out.append(f'lakeops_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {cum}')
            out.append(f'lakeops_request_duration_seconds_sum{{route="{route}"}} {self._sum[route]:.6f}')
            out.append(f'lakeops_request_duration_seconds_count{{route="{route}"}} {cum}')
        family("lakeops_rows_scored_total", "counter", "Rows scored, by model.")
        for model, n in sorted(self.rows_scored.items()):
            out.append(f'lakeops_rows_scored_total{{model="{model}"}} {n}')
        family(
            "lakeops_unknown_category_total",
            "counter",
            "Categorical values of a level the model never saw, scored as missing, by model and feature.",
        )
        for (model, feature), n in sorted(self.unknown_category.items()):
            out.append(f'lakeops_unknown_category_total{{model="{model}",feature="{feature}"}} {n}')
        for metric, values, help_ in (
            ("lakeops_shadow_rows_total", self.shadow_rows, "Rows scored by a shadow challenger, by model."),
            ("lakeops_shadow_errors_total", self.shadow_errors, "Rows a shadow challenger failed to score, by model."),
            ("lakeops_shadow_dropped_total", self.shadow_dropped, "Rows not shadowed (the shadow queue was full), by model."),
        ):
            family(metric, "counter", help_)
            for model, n in sorted(values.items()):
                out.append(f'{metric}{{model="{model}"}} {n}')
        family("lakeops_feedback_rows_total", "counter", "Feedback labels accepted.")
        out.append(f"lakeops_feedback_rows_total {self.feedback_rows}")
        for name, (help_, series) in gauges.items():
            family(name, "gauge", help_)
            for labels, value in series.items():
                lab = ",".join(f'{k}="{v}"' for k, v in labels)
                out.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")
        return "\n".join(out) + "\n"
