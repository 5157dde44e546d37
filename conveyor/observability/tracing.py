"""Optional OpenTelemetry tracing (CONVEYOR_TRACING=true): FastStream's middleware opens a
span per consumed and per published message and propagates the trace context in headers.

Imported only when tracing is on, so that without it nothing of OpenTelemetry is loaded.
Spans go over OTLP/HTTP; the exporter reads the standard OTEL_EXPORTER_OTLP_* variables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider

MISSING_EXPORTER = (
    "CONVEYOR_TRACING=true needs the OpenTelemetry SDK and OTLP exporter: "
    "install them with pip install 'conveyor[tracing]'"
)


def build_tracer_provider() -> TracerProvider:
    """A tracer provider exporting over OTLP/HTTP in batches (flushed at exit)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(f"{MISSING_EXPORTER} ({exc})") from None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "conveyor"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def telemetry_middleware() -> RabbitTelemetryMiddleware:
    try:
        from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
    except ImportError as exc:
        raise RuntimeError(f"{MISSING_EXPORTER} ({exc})") from None
    return RabbitTelemetryMiddleware(tracer_provider=build_tracer_provider())
