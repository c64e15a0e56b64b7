/**
 * Distributed tracing with the OpenTelemetry SDK (W3C Trace Context, spans over OTLP/HTTP).
 *
 * Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is configured: then the SDK is not even loaded,
 * nothing is registered, no Fastify hook is added and `tracer` is the API's no-op tracer, so
 * an untraced gateway pays nothing per request (the bench shows it). On: one tracer provider per process (the API's
 * globals are per process), a batch span processor exporting to `<endpoint>/v1/traces`
 * (OTLP/HTTP, JSON), the AsyncLocalStorage context manager and the W3C `traceparent`/
 * `tracestate` propagator; `@fastify/otel` gives every route a server span whose parent is
 * the incoming `traceparent`. The SDK's own `OTEL_BSP_*`/`OTEL_TRACES_SAMPLER` settings apply.
 */
import { type Context, type Span, type Tracer, context, propagation, trace } from '@opentelemetry/api'
import type { FastifyPluginCallback } from 'fastify'

/** The instrumentation scope every latchkey span is created under. */
export const TRACER_NAME = 'latchkey'

export interface TracingConfig {
  /** OTLP/HTTP base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`); undefined turns tracing off. */
  readonly endpoint: string | undefined
  /** `service.name` on every span (`latchkey-gateway`, `latchkey-resource`). */
  readonly serviceName: string
}

export interface Tracing {
  readonly enabled: boolean
  readonly tracer: Tracer
  /** Register first in an app: a server span per request, parented by `traceparent`. Undefined when off. */
  readonly fastifyPlugin: FastifyPluginCallback | undefined
  /** Flush what is buffered and stop exporting. */
  shutdown (): Promise<void>
}

const OFF: Tracing = Object.freeze({
  enabled: false,
  tracer: trace.getTracer(TRACER_NAME),
  fastifyPlugin: undefined,
  shutdown: async () => {}
})

let started: Tracing | undefined

/** Start tracing for this process (once; later calls get the same instance). */
export async function startTracing (config: TracingConfig): Promise<Tracing> {
  if (config.endpoint === undefined) return OFF
  if (started !== undefined) return started
  // Loaded only when tracing is on: an untraced process does not carry the SDK in memory.
  const [{ FastifyOtelInstrumentation }, { OTLPTraceExporter }, { resourceFromAttributes }, { BatchSpanProcessor, NodeTracerProvider }] = await Promise.all([
    import('@fastify/otel'), import('@opentelemetry/exporter-trace-otlp-http'), import('@opentelemetry/resources'), import('@opentelemetry/sdk-trace-node')
  ])
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': config.serviceName }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${config.endpoint.replace(/\/$/, '')}/v1/traces` }))]
  })
  // Registers the global tracer provider, the AsyncLocalStorage context manager and the W3C propagators.
  provider.register()
  const instrumentation = new FastifyOtelInstrumentation({
    registerOnInitialization: false,
    // Probes would drown the traces that matter.
    ignorePaths: ({ url }) => url === '/healthz' || url === '/readyz' || url === '/metrics',
    // HTTP server span names are "{method} {route}" (OpenTelemetry HTTP semantic conventions).
    requestHook: (span, request) => { span.updateName(`${request.method} ${request.routeOptions.url ?? 'unmatched'}`) }
  })
  instrumentation.setTracerProvider(provider)
  started = Object.freeze({
    enabled: true,
    tracer: provider.getTracer(TRACER_NAME),
    fastifyPlugin: instrumentation.plugin() as FastifyPluginCallback,
    shutdown: async () => { await provider.shutdown() }
  })
  return started
}

/** pino `mixin`: the active span's ids on every log line written inside a traced request. */
export function traceLogMixin (): Record<string, string> {
  const span = trace.getSpan(context.active())
  if (span === undefined) return {}
  const { traceId, spanId } = span.spanContext()
  return { trace_id: traceId, span_id: spanId }
}

/** The parent context a request's `traceparent`/`tracestate` headers name (W3C Trace Context). */
export function extractTraceContext (headers: Readonly<Record<string, string | string[] | undefined>>): Context {
  return propagation.extract(context.active(), headers)
}

/** Write `span`'s context into outgoing headers as `traceparent`/`tracestate`. */
export function injectTraceContext (span: Span, headers: Record<string, string | string[] | undefined>): void {
  propagation.inject(trace.setSpan(context.active(), span), headers)
}
