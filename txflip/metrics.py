"""
C{--metrics ENDPOINT}: C{/metrics} in the Prometheus text format, from
whichever generation serves, with counters that never reset at a restart.

The endpoint is a listener like any other (opened through the registry, so it
is handed over; marked txflip's own, so a leader of workers serves it itself).
What a generation counts (restarts and their outcome, the handoff and drain
times, connections moved and closed) is carried to its successor over the
channel (L{txflip.core.carry}): the successor shows its predecessor's latest
totals plus what it counted itself. The generation gauge and the process's
own metrics (CPU, memory, descriptors, start time: C{prometheus_client}'s
process, platform and GC collectors) are this process's.
"""

from __future__ import annotations

import bisect
import copy

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from twisted.web.resource import Resource
from twisted.web.server import Site

from txflip.core.generation import Generation

CARRIED = "metrics"
OUTCOMES = ("served", "failed", "rolled_back")
CLOSE_REASONS = ("drained", "drain_timeout")
HANDOFF_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
DRAIN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _emptyHistogram(buckets: tuple[float, ...]) -> dict:
    return {"counts": [0] * (len(buckets) + 1), "sum": 0.0}


def emptyCounts() -> dict:
    """What one generation counts, before it counts anything (JSON-able)."""
    return {
        "restarts": dict.fromkeys(OUTCOMES, 0),
        "handoff": _emptyHistogram(HANDOFF_BUCKETS),
        "drain": _emptyHistogram(DRAIN_BUCKETS),
        "moved": 0,
        "closed": dict.fromkeys(CLOSE_REASONS, 0),
    }


def addCounts(a: dict, b: dict) -> dict:
    """C{a} plus C{b}; a part missing or malformed in C{b} (an older release) adds nothing."""
    total = copy.deepcopy(a)
    for key in ("restarts", "closed"):
        for name, value in (b.get(key) or {}).items():
            if name in total[key] and isinstance(value, int | float):
                total[key][name] += value
    if isinstance(b.get("moved"), int):
        total["moved"] += b["moved"]
    for key in ("handoff", "drain"):
        theirs = b.get(key) or {}
        counts = theirs.get("counts")
        if isinstance(counts, list) and len(counts) == len(total[key]["counts"]):
            ours = total[key]["counts"]
            total[key]["counts"] = [x + y for x, y in zip(ours, counts, strict=True)]
            total[key]["sum"] += float(theirs.get("sum", 0.0))
    return total


def _observe(histogram: dict, buckets: tuple[float, ...], value: float) -> None:
    histogram["counts"][bisect.bisect_left(buckets, value)] += 1
    histogram["sum"] += value


def _histogram(name: str, doc: str, histogram: dict, buckets: tuple[float, ...]):
    cumulative, running = [], 0
    for bound, count in zip((*buckets, float("inf")), histogram["counts"], strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=histogram["sum"])


class GenerationMetrics:
    """
    The metrics of the generations of one service, as this process shows them.

    @ivar inherited: the latest totals the predecessor carried here.
    @ivar counted: what this process counted itself.
    """

    def __init__(self, generation: Generation) -> None:
        self._generation = generation
        self.inherited = emptyCounts()
        self.counted = emptyCounts()
        self._connectionsAtDrain = 0
        self._moved = 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        # The process's own standard metrics, as prometheus_client's default registry has them.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        generation.events.subscribe(self._observe)
        generation.carried.provide(CARRIED, self.totals)
        generation.carried.follow(CARRIED, self._inherit)

    def totals(self) -> dict:
        """Every generation's counts so far: what is carried on, and shown."""
        return addCounts(self.inherited, self.counted)

    def _inherit(self, value: object) -> None:
        if isinstance(value, dict):
            self.inherited = addCounts(emptyCounts(), value)

    def _observe(self, name: str, fields: dict) -> None:
        counted = self.counted
        if name == "upgrade-succeeded":
            counted["restarts"]["served"] += 1
            _observe(counted["handoff"], HANDOFF_BUCKETS, fields["ms"] / 1000)
        elif name == "upgrade-failed":
            counted["restarts"]["failed"] += 1
        elif name in ("successor-died", "rolled-back"):
            # The release that took over died, or gave the traffic back: it serves here again.
            counted["restarts"]["rolled_back"] += 1
        elif name == "draining" and fields["handedOver"]:
            self._connectionsAtDrain = fields["connections"]
            self._moved = 0
        elif name == "connections-moved" and fields["final"]:
            counted["moved"] += fields["moved"]
            self._moved = fields["moved"]
        elif name == "drained":
            _observe(counted["drain"], DRAIN_BUCKETS, fields["ms"] / 1000)
            aborted = fields["aborted"]
            counted["closed"]["drain_timeout"] += aborted
            counted["closed"]["drained"] += max(self._connectionsAtDrain - self._moved - aborted, 0)

    def collect(self):
        """The txflip_* families (C{prometheus_client}'s collector interface)."""
        totals = self.totals()
        restarts = CounterMetricFamily(
            "txflip_restarts",
            "Restarts, by outcome: served (the new generation took over), failed (it never "
            "served; the old one serves on), rolled_back (the traffic went back to the old one).",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            restarts.add_metric([outcome], totals["restarts"][outcome])
        yield restarts
        yield GaugeMetricFamily(
            "txflip_generation",
            "The generation that serves (1 at the first start, one more per restart).",
            value=self._generation.number,
        )
        yield _histogram(
            "txflip_handoff_seconds",
            "From the restart signal to the new generation serving.",
            totals["handoff"],
            HANDOFF_BUCKETS,
        )
        yield _histogram(
            "txflip_drain_seconds",
            "How long an old generation drained after handing over.",
            totals["drain"],
            DRAIN_BUCKETS,
        )
        yield CounterMetricFamily(
            "txflip_connections_moved",
            "Idle keep-alive connections moved to the next generation at a handover.",
            value=totals["moved"],
        )
        closed = CounterMetricFamily(
            "txflip_connections_closed",
            "Connections an old generation closed while draining: drained (after their "
            "last response), drain_timeout (cut at --drain-timeout).",
            labels=["reason"],
        )
        for reason in CLOSE_REASONS:
            closed.add_metric([reason], totals["closed"][reason])
        yield closed

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """C{/metrics}; anything else is 404."""

    def __init__(self, metrics: GenerationMetrics) -> None:
        super().__init__()
        self.putChild(b"metrics", _Page(metrics))


class _Page(Resource):
    isLeaf = True

    def __init__(self, metrics: GenerationMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self._metrics.exposition()


def metricsSite(metrics: GenerationMetrics) -> Site:
    """The endpoint's Site: its scrapes are not access-logged (nor through the log)."""
    site = Site(MetricsResource(metrics))
    site.log = lambda request: None
    site.txflipOwn = True  # neither access-logged nor counted for --rollback-on-5xx
    return site


def serveMetrics(generation: Generation, endpoint) -> GenerationMetrics:
    """
    Count this generation's restarts and serve them on C{endpoint} (an
    endpoint built on the reactor), marked as txflip's own listener.

    @return: the metrics; the listen's failure is raised (an error line for the operator).
    """
    metrics = GenerationMetrics(generation)
    failures = []
    endpoint.listen(metricsSite(metrics)).addCallbacks(
        lambda port: generation.registry.markInternal(generation.registry.keyOf(port)),
        failures.append,
    )
    if failures:
        failures[0].raiseException()
    return metrics
