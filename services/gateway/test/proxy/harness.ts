/**
 * Test rig for the proxy: a bare Fastify app configured like the gateway (request ids,
 * no trusted proxy, the gateway's error handling) with `proxyPlugin` registered, stand-ins
 * for the gateway's own `/auth` and `/.well-known` routes that count hits, upstreams on
 * port 0, and clients that send bytes exactly as written (no URL normalisation).
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { randomUUID } from 'node:crypto'
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { type Clock, systemClock } from '#shared/clock.js'
import type { RouteConfig } from '#gateway/config.js'
import { AccessTokenIssuer, type AccessTokenClaims } from '#gateway/keys/access-token.js'
import { loadSigningKeys, type SigningKeys } from '#gateway/keys/signing-keys.js'
import { installErrorHandling } from '#gateway/ops/error-handler.js'
import { createGatewayMetrics, type GatewayMetrics } from '#gateway/ops/metrics.js'
import { createGatewayVerifier } from '#gateway/auth/bearer.js'
import { FastLane } from '#gateway/proxy/fast-lane.js'
import { proxyPlugin } from '#gateway/proxy/plugin.js'

interface Teardown { teardown (fn: () => unknown): void }

export const ISSUER = 'http://gateway.test'
export const AUDIENCE = 'latchkey-api'

export interface ProxyApp {
  readonly app: FastifyInstance
  readonly keys: SigningKeys
  readonly metrics: GatewayMetrics
  readonly revoked: Set<string>
  /** Hits on the stand-ins for the gateway's own routes. */
  readonly ownRouteHits: string[]
  readonly logs: Array<Record<string, unknown>>
  token (claims?: Partial<AccessTokenClaims>, clock?: Clock): Promise<string>
}

export interface ProxyAppOptions {
  readonly routes: readonly RouteConfig[]
  readonly timeoutMs?: number
  readonly clock?: Clock
  readonly fastLane?: boolean
  readonly maxInFlightPerCaller?: number
}

export async function buildProxyApp (options: ProxyAppOptions): Promise<ProxyApp> {
  const logs: Array<Record<string, unknown>> = []
  // The lane installed as app.ts installs it; `fastLane: false` builds a server without one.
  const lane = options.fastLane === false ? undefined : new FastLane()
  const app = Fastify({
    ...(lane === undefined ? {} : { serverFactory: lane.serverFactory }),
    logger: { level: 'info', stream: { write (line: string) { try { logs.push(JSON.parse(line) as Record<string, unknown>) } catch { /* not JSON */ } } } },
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    trustProxy: false,
    bodyLimit: 1024 * 1024
  })
  const keys = await loadSigningKeys(undefined, { warn () {} })
  const metrics = createGatewayMetrics({ defaultMetrics: false })
  const revoked = new Set<string>()
  const ownRouteHits: string[] = []
  installErrorHandling(app)
  const audiences = [...new Set(options.routes.map(r => r.audience))]
  const verifier = createGatewayVerifier({ keys, issuer: ISSUER, audiences: () => audiences, revoked, clock: options.clock })
  await app.register(proxyPlugin, { routes: options.routes, verifier, metrics, timeoutMs: options.timeoutMs, lane, maxInFlightPerCaller: options.maxInFlightPerCaller })
  app.all('/auth/*', async (req) => { ownRouteHits.push(req.url); return { reached: 'gateway' } })
  app.get('/.well-known/*', async (req) => { ownRouteHits.push(req.url); return { reached: 'gateway' } })
  app.get('/healthz', async () => ({ status: 'ok' }))
  const issuer = (clock: Clock): AccessTokenIssuer => new AccessTokenIssuer({ keys, issuer: ISSUER, ttlS: 300, clock })
  return {
    app,
    keys,
    metrics,
    revoked,
    ownRouteHits,
    logs,
    async token (claims = {}, clock = systemClock) {
      const issued = await issuer(clock).issue({ sub: 'alice', aud: AUDIENCE, client_id: 'web', scope: 'notes:read', sid: 'sid-alice', ...claims })
      return issued.token
    }
  }
}

export interface ListeningProxy extends ProxyApp {
  readonly port: number
}

/** `beforeListen` may add hooks, which Fastify refuses once it listens. */
export async function proxyGateway (t: Teardown, options: ProxyAppOptions, beforeListen?: (app: FastifyInstance) => void): Promise<ListeningProxy> {
  const built = await buildProxyApp(options)
  t.teardown(() => built.app.close())
  beforeListen?.(built.app)
  await built.app.listen({ port: 0, host: '127.0.0.1' })
  return { ...built, port: (built.app.server.address() as AddressInfo).port }
}

export function route (upstream: string, overrides: Partial<RouteConfig> = {}): RouteConfig {
  return { prefix: '/api/', upstream, audience: AUDIENCE, scopes: [], ...overrides }
}

export interface Received {
  readonly method: string
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly rawHeaders: readonly string[]
  readonly bodyBytes: number
}

export interface Upstream {
  readonly server: http.Server
  readonly url: string
  readonly port: number
  readonly received: Received[]
}

/**
 * An upstream answering every request with what it received (method, url, headers, body
 * size), counting body bytes without keeping them. `handle` may answer first (return true).
 */
export async function echoUpstream (t: Teardown, handle?: (req: IncomingMessage, res: ServerResponse) => boolean): Promise<Upstream> {
  const received: Received[] = []
  const server = http.createServer((req, res) => {
    let bodyBytes = 0
    req.on('data', (chunk: Buffer) => { bodyBytes += chunk.length })
    req.on('end', () => {
      const seen: Received = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, bodyBytes }
      received.push(seen)
      if (handle?.(req, res) === true) return
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(seen))
    })
  })
  return listenUpstream(t, server, received)
}

export async function listenUpstream (t: Teardown, server: http.Server, received: Received[] = []): Promise<Upstream> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  const port = (server.address() as AddressInfo).port
  return { server, url: `http://127.0.0.1:${port}`, port, received }
}

/** An upstream that answers every connection with `response` bytes, verbatim, then closes. */
export async function rawUpstream (t: Teardown, response: string | Buffer): Promise<{ url: string, connections: () => number }> {
  let connections = 0
  const server = net.createServer((socket) => {
    connections++
    socket.on('error', () => {})
    socket.once('data', () => { socket.end(response) })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => connections }
}

/** A port nothing listens on. */
export async function closedPort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>(resolve => server.close(() => resolve()))
  return port
}

export interface Answer {
  readonly status: number
  readonly headers: IncomingHttpHeaders
  readonly rawHeaders: readonly string[]
  readonly body: string
  json<T = Record<string, unknown>> (): T
}

/** One request on a fresh connection; the path is sent exactly as given. */
export function send (port: number, options: { method?: string, path: string, headers?: Record<string, string | string[]>, body?: string | Buffer }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: options.method ?? 'GET', path: options.path, headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString()
        resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body, json: <T>() => JSON.parse(body) as T })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

/** Write `text` on a raw connection and collect everything until the server closes it (or `idleMs` of silence). */
export function rawExchange (port: number, text: string | Buffer, idleMs = 2000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(text))
    let out = ''
    const finish = (): void => { clearTimeout(timer); socket.destroy(); resolve(out) }
    let timer = setTimeout(finish, idleMs)
    socket.on('data', (d: Buffer) => { out += d.toString('latin1'); clearTimeout(timer); timer = setTimeout(finish, idleMs) })
    socket.on('close', finish)
    socket.on('error', finish)
  })
}

/** The status code of the first response in raw bytes. */
export function statusOf (raw: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw)
  return m === null ? 0 : Number(m[1])
}

export async function histogramCount (metrics: GatewayMetrics, labels: Record<string, string>): Promise<number> {
  const values = (await metrics.proxyDuration.get()).values
  const hit = values.find(v => (v.metricName ?? '').endsWith('_count') && Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val))
  return hit?.value ?? 0
}

export async function upstreamErrorCount (metrics: GatewayMetrics, labels: Record<string, string>): Promise<number> {
  const values = (await metrics.upstreamErrors.get()).values
  return values.filter(v => Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val)).reduce((n, v) => n + v.value, 0)
}

/**
 * The completion line is written when the response closes, just after the client has the
 * answer: wait (bounded) until `count` of them are in.
 */
export async function completionLogged (logs: ReadonlyArray<Record<string, unknown>>, count: number, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (logs.filter(l => l.msg === 'request completed').length < count && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}
