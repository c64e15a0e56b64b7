/**
 * W3C Trace Context across the proxy hop (https://www.w3.org/TR/trace-context/), for both
 * lanes (plugin.ts `forward`):
 * - tracing on: the hop is a CLIENT span, a child of the request's server span (the Fastify
 *   gate runs inside @fastify/otel's context) or, on the fast lane, which runs before Fastify,
 *   of the caller's own `traceparent`; the upstream gets this span's `traceparent`/`tracestate`;
 * - tracing off: the caller's `traceparent`/`tracestate` pass through untouched and nothing
 *   is added: an untraced gateway does no per-request tracing work at all. Starting a trace
 *   for every request without one measured ~2% of the hop's instructions (callgrind, about
 *   17,000 of 750,000: the header's generation and its handling on the way out), and the
 *   upstream can already tie its log lines to the gateway's by `X-Request-Id`.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, type Tracer, context, propagation, trace } from '@opentelemetry/api'
import { RandomPool } from '../sessions/random-pool.js'

const ids = new RandomPool()

/** `00-<trace id>-<span id>-01`: version 00, sampled, so a traced upstream records its part. */
export function newTraceparent (): string {
  const bytes = ids.take(24)
  return `00-${bytes.toString('hex', 0, 16)}-${bytes.toString('hex', 16, 24)}-01`
}

/** Starts the hop's span; `incoming` are the client's headers, before they are rewritten. */
export function startProxySpan (tracer: Tracer, incoming: IncomingHttpHeaders, route: string, method: string | undefined): Span {
  const active = context.active()
  const parent = trace.getSpan(active) === undefined ? propagation.extract(ROOT_CONTEXT, incoming) : active
  return tracer.startSpan(`proxy ${route}`, { kind: SpanKind.CLIENT, attributes: { 'http.request.method': method ?? 'GET', 'latchkey.route': route } }, parent)
}

/** Sets the upstream-bound `traceparent`/`tracestate` to the hop's span; without one (tracing off) the caller's stay as they are. */
export function propagate (span: Span | undefined, outgoing: IncomingHttpHeaders): void {
  if (span === undefined) return
  delete outgoing.traceparent
  delete outgoing.tracestate
  propagation.inject(trace.setSpan(ROOT_CONTEXT, span), outgoing)
}

export function endProxySpan (span: Span, status: number): void {
  span.setAttribute('http.response.status_code', status)
  if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
  span.end()
}

/**
 * The `traceparent` a forward-auth answer carries, for the ingress to pass upstream
 * (nginx `auth_request_set`, Traefik `authResponseHeaders`): the request's own span when
 * tracing is on, else the caller's `traceparent`, else a new one.
 */
export function answerTraceparent (incoming: IncomingHttpHeaders): string {
  const span = trace.getSpan(context.active())
  if (span !== undefined) {
    const carrier: Record<string, string> = {}
    propagation.inject(trace.setSpan(ROOT_CONTEXT, span), carrier)
    if (carrier.traceparent !== undefined) return carrier.traceparent
  }
  const own = incoming.traceparent
  return typeof own === 'string' ? own : newTraceparent()
}
