"""Request metrics in the Prometheus text format, served on `/metrics`.

Names follow kube-apiserver's: `apiserver_request_total{verb,resource,code}` and the latency histogram
`apiserver_request_duration_seconds{verb,resource}`, plus gauges for in-flight requests and watchers.
Recording is a few dict operations per request, cheap enough for the hot path.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.histograms: dict[tuple[str, str], list[float]] = {}  # bucket counts..., sum, count
        self.inflight = 0
        self.watchers = 0

    def observe(self, verb: str, resource: str, code: int, seconds: float) -> None:
        self.requests[(verb, resource, code)] += 1
        key = (verb, resource)
        histogram = self.histograms.get(key)
        if histogram is None:
            histogram = self.histograms[key] = [0.0] * (len(BUCKETS) + 2)
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            histogram[index] += 1
        histogram[-2] += seconds
        histogram[-1] += 1

    def render(self) -> str:
        lines = [
            "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, resource and HTTP response code.",
            "# TYPE apiserver_request_total counter",
        ]
        for (verb, resource, code), count in sorted(self.requests.items()):
            lines.append(f'apiserver_request_total{{code="{code}",resource="{resource}",verb="{verb}"}} {count}')
        lines += [
            "# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb and resource.",
            "# TYPE apiserver_request_duration_seconds histogram",
        ]
        for (verb, resource), histogram in sorted(self.histograms.items()):
            cumulative = 0.0
            labels = f'resource="{resource}",verb="{verb}"'
            for bound, count in zip(BUCKETS, histogram, strict=False):
                cumulative += count
                lines.append(f'apiserver_request_duration_seconds_bucket{{{labels},le="{bound}"}} {int(cumulative)}')
            lines.append(f'apiserver_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(histogram[-1])}')
            lines.append(f"apiserver_request_duration_seconds_sum{{{labels}}} {histogram[-2]:.6f}")
            lines.append(f"apiserver_request_duration_seconds_count{{{labels}}} {int(histogram[-1])}")
        lines += [
            "# HELP apiserver_current_inflight_requests Requests being served now.",
            "# TYPE apiserver_current_inflight_requests gauge",
            f"apiserver_current_inflight_requests {self.inflight}",
            "# HELP apiserver_registered_watchers Open watch streams.",
            "# TYPE apiserver_registered_watchers gauge",
            f"apiserver_registered_watchers {self.watchers}",
        ]
        return "\n".join(lines) + "\n"
