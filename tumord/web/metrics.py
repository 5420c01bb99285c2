"""Prometheus metrics of `tumord watch`, in a registry of their own (names: base units, `_total`).

Observed as the service reports (histograms, swaps, verdicts per label), or read from the service
at scrape time (scans by outcome, queue depth, serving model, readiness, recent label shares).
"""
from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector

# seconds: a scan takes milliseconds when idle and up to tens of seconds at the end of a big burst
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CONTENT_TYPE = CONTENT_TYPE_LATEST
disable_created_metrics()  # no *_created series: the process start time is process_start_time_seconds


class Metrics:
    def __init__(self, monitor):
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("tumord_scan_latency_seconds", "File complete in input/ to verdict durable "
                                 "(JSON, CSV row and move), per scan", buckets=LATENCY_BUCKETS, registry=r)
        self.classify = Histogram("tumord_classify_latency_seconds", "File complete to its class probabilities, "
                                  "per classified scan", buckets=LATENCY_BUCKETS, registry=r)
        self.decode = Histogram("tumord_decode_seconds", "Reading, checking, decoding and resizing one file",
                                buckets=STEP_BUCKETS, registry=r)
        self.predict = Histogram("tumord_predict_seconds", "One batch's prediction", buckets=STEP_BUCKETS,
                                 registry=r)
        self.batch_size = Histogram("tumord_batch_scans", "Scans per classified batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.swaps = Counter("tumord_model_swaps", "Hot swaps of the serving model", registry=r)
        self.labels = Counter("tumord_verdicts", "Verdicts by label", ["label"], registry=r)
        r.register(ServiceCollector(monitor))
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

    def batch(self, scans: int, decode_seconds, predict_seconds: float, waited_seconds) -> None:
        self.batch_size.observe(scans)
        for s in decode_seconds:
            self.decode.observe(s)
        if waited_seconds:
            self.predict.observe(predict_seconds)
        for s in waited_seconds:
            self.classify.observe(s)

    def recorded(self, label: str | None, latency_seconds: float) -> None:
        self.latency.observe(latency_seconds)
        if label is not None:
            self.labels.labels(label).inc()

    def swapped(self) -> None:
        self.swaps.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ServiceCollector:
    """Values the service keeps anyway, read when Prometheus scrapes."""

    def __init__(self, monitor):
        self.monitor = monitor

    def describe(self):
        return []  # values appear only once the service started; nothing to check at registration

    def collect(self):
        snap = self.monitor.snapshot()
        ready = GaugeMetricFamily("tumord_ready", "1 when /readyz answers 200")
        ready.add_metric([], 1.0 if snap["ready"] else 0.0)
        yield ready
        scans = CounterMetricFamily("tumord_scans", "Scans handled since start, by outcome (abstained: a verdict "
                                    "in which the model abstained; classified: the others)", labels=["outcome"])
        for outcome, n in snap["counts"].items():
            scans.add_metric([outcome], n)
        yield scans
        queued = GaugeMetricFamily("tumord_queued_scans", "Complete files waiting for or in classification")
        queued.add_metric([], snap["queued"])
        yield queued
        shares = GaugeMetricFamily("tumord_recent_verdicts_ratio", "Share of each label among the latest "
                                   "verdicts (up to 500); a shift is a sign of drift", labels=["label"])
        for label, share in self.monitor.label_shares().items():
            shares.add_metric([label], share)
        yield shares
        if snap["model"] is not None:
            info = InfoMetricFamily("tumord_model", "The serving model")
            info.add_metric([], {"version": snap["model"]["version"], "sha256": snap["model"]["sha256"]})
            yield info
