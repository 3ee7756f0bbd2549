package bridge

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing. An event that comes with a W3C trace context (a traceparent
// header, or the CloudEvents distributed tracing extension) is handled in
// that trace: the event, each recipient, the state, the WeChat call and
// the result's publication are spans of it, and the result goes out with a
// traceparent header and its trace_id, so downstream consumers join it. An
// event without one starts a trace of its own. Whether spans are recorded
// and exported is the TracerProvider's business (see Config.Tracer).
//
// Spans never carry a secret: ids, names, statuses and errcodes only.

const instrumentation = "github.com/wxbridge/wxbridge/bridge"

var traceContext = propagation.TraceContext{}

// startEvent starts the span of one event delivery, in the trace it came
// with.
func (b *Bridge) startEvent(ctx context.Context, ev *event) (context.Context, trace.Span) {
	if ev.trace != nil {
		ctx = traceContext.Extract(ctx, ev.trace)
	}
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", ev.Subject),
		attribute.String("wxbridge.event.id", ev.ID),
		attribute.String("wxbridge.event.type", ev.Type),
	}
	if ev.Source != "" {
		attrs = append(attrs, attribute.String("wxbridge.event.source", ev.Source))
	}
	if ev.raw != nil {
		attrs = append(attrs, attribute.Int64("messaging.nats.stream_sequence", int64(ev.raw.streamSeq)),
			attribute.Int64("messaging.nats.delivered", int64(ev.raw.delivered)))
	}
	return b.tracer.Start(ctx, "wxbridge.event", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// span starts a child span; end records err (if any) and ends it.
func (b *Bridge) span(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, func(err error)) {
	ctx, sp := b.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
	return ctx, func(err error) {
		if err != nil {
			sp.RecordError(err)
			sp.SetStatus(codes.Error, clipN(err.Error(), 200))
		}
		sp.End()
	}
}

// traceparentOf is the W3C traceparent of ctx's span ("" without one).
func traceparentOf(ctx context.Context) string {
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c["traceparent"]
}

// traceIDOf returns the trace id in a traceparent ("" if it has none).
func traceIDOf(traceparent string) string {
	sc := trace.SpanContextFromContext(traceContext.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent}))
	if !sc.TraceID().IsValid() {
		return ""
	}
	return sc.TraceID().String()
}

// outcomeAttrs describes a recipient's outcome on its span.
func outcomeAttrs(state, reason string, errcode int) []attribute.KeyValue {
	a := []attribute.KeyValue{attribute.String("wxbridge.status", state)}
	if reason != "" {
		a = append(a, attribute.String("wxbridge.reason", reason))
	}
	if errcode != 0 {
		a = append(a, attribute.String("wechat.errcode", strconv.Itoa(errcode)))
	}
	return a
}
