"""Exports metrics to Sextant with OpenTelemetry's Python SDK and its
OTLP/HTTP (protobuf) exporter, as an instrumented service would; prints
what it recorded as JSON for the test to compare.

Usage: export.py ENDPOINT TOKEN [gzip]
"""

import json
import os
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

endpoint, token = sys.argv[1], sys.argv[2]
gzip = len(sys.argv) > 3 and sys.argv[3] == "gzip"

exporter = OTLPMetricExporter(
    endpoint=endpoint,
    headers={"authorization": f"Bearer {token}"},
    compression=Compression.Gzip if gzip else Compression.NoCompression,
    # Cumulative, as Prometheus-compatible backends ask.
    preferred_temporality={Counter: AggregationTemporality.CUMULATIVE, Histogram: AggregationTemporality.CUMULATIVE},
)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
provider = MeterProvider(
    resource=Resource.create(
        {"service.name": "checkout", "service.namespace": "shop", "service.instance.id": "pod-1"}
    ),
    metric_readers=[reader],
    views=[View(instrument_name="otlp.latency", aggregation=ExplicitBucketHistogramAggregation([0.1, 1.0]))],
)
meter = provider.get_meter("sextant-otlp-test")

requests = meter.create_counter("otlp.requests", unit="1", description="Requests served.")
requests.add(5, {"http.route": "/pay"})
requests.add(7, {"http.route": "/pay"})
requests.add(2, {"http.route": "/cart"})
queue = meter.create_gauge("otlp.queue_depth", description="Jobs waiting.")
queue.set(41, {"queue": "emails"})
queue.set(42.5, {"queue": "emails"})
latency = meter.create_histogram("otlp.latency", unit="s")
for value in (0.05, 0.5, 0.7, 2.0):
    latency.record(value)

# One export: flush, then leave without the exit-time export a shutdown makes.
ok = provider.force_flush(timeout_millis=10_000)
print(json.dumps({"flushed": ok}), flush=True)
os._exit(0)
