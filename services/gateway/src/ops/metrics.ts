/**
 * Prometheus metrics (prom-client), one registry per app so tests and several apps in one
 * process never share counters. Names follow Prometheus conventions (`_total`, `_seconds`).
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** Request-duration buckets (seconds): sub-millisecond proxy hops to slow argon2 logins. */
export const DURATION_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Set on proxy routes: they are timed by the proxy histogram, not the request histogram. */
    proxied?: boolean
  }
}

export interface GatewayMetrics {
  readonly registry: Registry
  readonly logins: Counter<'outcome'>
  readonly refreshes: Counter<'outcome'>
  readonly reuseDetections: Counter
  /** Families rolled forward to a newer token after lost writes (sessions/redis-family-store.ts `rotate`). */
  readonly rolledForward: Counter
  readonly revocations: Counter<'reason'>
  readonly tokensIssued: Counter<'grant'>
  readonly rateLimited: Counter<'limit'>
  readonly storeErrors: Counter
  readonly requestDuration: Histogram<'method' | 'route' | 'status_code'>
  readonly proxyDuration: Histogram<'route' | 'status_code'>
  readonly upstreamErrors: Counter<'route' | 'kind'>
  /** Config file reloads (ops/reloader.ts) by file variable and result (success, failure). */
  readonly configReloads: Counter<'file' | 'result'>
}

export function createGatewayMetrics (options: { defaultMetrics?: boolean } = {}): GatewayMetrics {
  const registry = new Registry()
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'latchkey_gateway_' })
  const registers = [registry]
  return {
    registry,
    logins: new Counter({ name: 'latchkey_logins_total', help: 'Login attempts by outcome.', labelNames: ['outcome'], registers }),
    refreshes: new Counter({ name: 'latchkey_refreshes_total', help: 'Refresh attempts by outcome (rotated, grace, invalid, reuse).', labelNames: ['outcome'], registers }),
    reuseDetections: new Counter({ name: 'latchkey_refresh_reuse_detected_total', help: 'Refresh-token reuse detections (each revoked a family).', registers }),
    rolledForward: new Counter({ name: 'latchkey_refresh_rolled_forward_total', help: 'Refreshes whose token was newer than its family in Redis (rotations lost in a failover): the family was rolled forward to it.', registers }),
    revocations: new Counter({ name: 'latchkey_revocations_total', help: 'Families revoked, by reason.', labelNames: ['reason'], registers }),
    tokensIssued: new Counter({ name: 'latchkey_tokens_issued_total', help: 'Access tokens issued, by grant.', labelNames: ['grant'], registers }),
    rateLimited: new Counter({ name: 'latchkey_rate_limited_total', help: 'Requests refused by a brute-force limit.', labelNames: ['limit'], registers }),
    storeErrors: new Counter({ name: 'latchkey_redis_errors_total', help: 'Requests that failed because the session store (Redis) did not answer.', registers }),
    requestDuration: new Histogram({ name: 'latchkey_http_request_duration_seconds', help: 'Gateway request duration.', labelNames: ['method', 'route', 'status_code'], buckets: DURATION_BUCKETS_S, registers }),
    proxyDuration: new Histogram({ name: 'latchkey_proxy_request_duration_seconds', help: 'Proxied request duration, upstream included.', labelNames: ['route', 'status_code'], buckets: DURATION_BUCKETS_S, registers }),
    upstreamErrors: new Counter({ name: 'latchkey_upstream_errors_total', help: 'Proxied requests that failed upstream, by kind (refused, timeout, reset).', labelNames: ['route', 'kind'], registers }),
    configReloads: new Counter({ name: 'latchkey_config_reload_total', help: 'Config file reloads by file (USERS_FILE, ...) and result (success, failure: the old one stays).', labelNames: ['file', 'result'], registers })
  }
}

async function metricsPlugin (app: FastifyInstance, opts: { metrics: GatewayMetrics, text?: () => Promise<string> }): Promise<void> {
  const { metrics } = opts
  const text = opts.text ?? (async () => await metrics.registry.metrics())
  // A callback hook: an async one costs a promise and a microtask on every request.
  app.addHook('onResponse', (req, reply, done) => {
    // `routeOptions` is a getter that builds a new object: read it once.
    const options = req.routeOptions
    // Proxied requests have their own histogram (observed by the proxy, upstream included).
    if (options.config.proxied !== true) {
      // The route pattern, never the raw URL: unbounded label values would grow the registry forever.
      metrics.requestDuration.observe({ method: req.method, route: options.url ?? 'unmatched', status_code: String(reply.statusCode) }, reply.elapsedTime / 1000)
    }
    done()
  })
  app.addHook('onError', async (_req, _reply, err) => {
    if ((err as { code?: string }).code === 'GW_STORE_UNAVAILABLE') metrics.storeErrors.inc()
  })
  app.get('/metrics', async (_req, reply) => {
    reply.header('Content-Type', metrics.registry.contentType)
    reply.header('Cache-Control', 'no-store')
    return await text()
  })
}

export default fp(metricsPlugin, { name: 'latchkey-metrics', fastify: '5.x' })
