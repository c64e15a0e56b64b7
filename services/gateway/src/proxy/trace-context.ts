/**
 * W3C Trace Context across the proxy hop (https://www.w3.org/TR/trace-context/), for both
 * lanes (plugin.ts `forward`):
 * - tracing on: the hop is a CLIENT span, a child of the request's server span (the Fastify
 *   gate runs inside @fastify/otel's context) or, on the fast lane, which runs before Fastify,
 *   of the caller's own `traceparent`; the upstream gets this span's `traceparent`/`tracestate`;
 * - tracing off: the caller's `traceparent` passes through untouched, and a request without
 *   one gets a fresh one, so the services behind the gateway can still tie their logs to one
 *   request. That costs 48 hex characters sliced from a pooled CSPRNG draw, no span and no SDK.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, type Tracer, context, propagation, trace } from '@opentelemetry/api'
import { RandomHexPool } from '../sessions/random-pool.js'

const ids = new RandomHexPool()

/** `00-<trace id>-<span id>-01`: version 00, sampled, so a traced upstream records its part. */
export function newTraceparent (): string {
  return `00-${ids.take(16)}-${ids.take(8)}-01`
}

/** Starts the hop's span; `incoming` are the client's headers, before they are rewritten. */
export function startProxySpan (tracer: Tracer, incoming: IncomingHttpHeaders, route: string, method: string | undefined): Span {
  const active = context.active()
  const parent = trace.getSpan(active) === undefined ? propagation.extract(ROOT_CONTEXT, incoming) : active
  return tracer.startSpan(`proxy ${route}`, { kind: SpanKind.CLIENT, attributes: { 'http.request.method': method ?? 'GET', 'latchkey.route': route } }, parent)
}

/** Sets the upstream-bound `traceparent`/`tracestate`: the hop's span, or the caller's, or a new one. */
export function propagate (span: Span | undefined, outgoing: IncomingHttpHeaders): void {
  if (span !== undefined) {
    delete outgoing.traceparent
    delete outgoing.tracestate
    propagation.inject(trace.setSpan(ROOT_CONTEXT, span), outgoing)
  } else if (outgoing.traceparent === undefined) {
    outgoing.traceparent = newTraceparent()
  }
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
