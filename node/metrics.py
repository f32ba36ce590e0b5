"""The node's Prometheus metrics, in a registry of its own (many nodes may share a process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 12, 15, 20, 30, 45, 60)


class _Live(Collector):
    """Metrics read from other components' own counters when scraped."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        yield from self._read()


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.slots = Counter(
            "icn_slots", "Slots by this node's role and their outcome", ["role", "outcome"], registry=r
        )
        self.phase_seconds = Histogram(
            "icn_phase_seconds", "Time each slot phase took", ["phase"], buckets=PHASE_BUCKETS, registry=r
        )
        self.deadline_missed = Counter(
            "icn_phase_deadline_missed", "Phases cut off at their deadline", ["phase"], registry=r
        )
        self.certificates = Counter(
            "icn_certificates", "Certificates applied to the ledger", ["source"], registry=r
        )
        self.last_certified_slot = Gauge(
            "icn_last_certified_slot", "Newest slot with a certificate", registry=r
        )
        self.current_slot = Gauge("icn_current_slot", "The slot the clock is in", registry=r)
        self.vram_bytes = Gauge("icn_vram_bytes", "Device memory of the engine", ["kind"], registry=r)
        self.media_fetched_bytes = Counter("icn_media_fetched_bytes", "Media bytes downloaded", registry=r)
        self.evidence = Counter("icn_evidence", "Equivocation evidence seen", registry=r)
        self.media_bytes = Gauge("icn_media_bytes", "Media bytes on disk, as of the last pruning", registry=r)
        self.media_pruned_bytes = Counter(
            "icn_media_pruned_bytes", "Media bytes deleted by retention", registry=r
        )
        self.media_pruned_files = Counter(
            "icn_media_pruned_files", "Media files deleted by retention", registry=r
        )
        self.db_bytes = Gauge("icn_db_bytes", "The database's size on disk, with its log", registry=r)
        self.db_rows_pruned = Counter(
            "icn_db_rows_pruned", "Journal, outcome and score rows pruned", registry=r
        )

    def watch(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Add metrics computed at scrape time (peers, message counters, bytes served)."""
        self.registry.register(_Live(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def counter(
    name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in samples:
        family.add_metric(label_values, value)
    return family
