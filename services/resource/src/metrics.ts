/**
 * Prometheus metrics in a registry owned by one app instance (never prom-client's global
 * one), so several apps in one process — tests, `latchkey dev` — do not collide.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { VerificationOutcome } from '#shared/access-token-verifier.js'

export interface ResourceMetrics {
  readonly registry: Registry
  readonly requests: Counter<'method' | 'route' | 'status'>
  readonly duration: Histogram<'method' | 'route'>
  readonly tokenOutcomes: Counter<'outcome'>
  readonly jwksFetches: Counter<'result'>
}

export function createResourceMetrics (): ResourceMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const requests = new Counter({ name: 'latchkey_resource_http_requests_total', help: 'HTTP requests answered, by route and status.', labelNames: ['method', 'route', 'status'] as const, registers: [registry] })
  const duration = new Histogram({
    name: 'latchkey_resource_http_request_duration_seconds',
    help: 'Time to answer an HTTP request.',
    labelNames: ['method', 'route'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry]
  })
  const tokenOutcomes = new Counter({ name: 'latchkey_resource_access_tokens_total', help: 'Access-token checks, by outcome (cache_hit, verified, invalid, expired, ...).', labelNames: ['outcome'] as const, registers: [registry] })
  const jwksFetches = new Counter({ name: 'latchkey_resource_jwks_fetches_total', help: 'JWKS fetch attempts, by result.', labelNames: ['result'] as const, registers: [registry] })
  for (const outcome of ['cache_hit', 'verified', 'missing', 'invalid', 'expired', 'revoked', 'unavailable'] satisfies VerificationOutcome[]) tokenOutcomes.inc({ outcome }, 0)
  return { registry, requests, duration, tokenOutcomes, jwksFetches }
}
