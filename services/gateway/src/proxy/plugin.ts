/**
 * The gateway's reverse proxy (docs/contract.md "Proxy"), as a Fastify plugin:
 *
 *   await app.register(proxyPlugin, { routes: config.routes, verifier, metrics, lane })
 *
 * One catch-all route (`/*`, the gateway's own routes are static and win over it) whose work is
 * done in an `onRequest` hook, before Fastify would read or parse a body: admission.ts decides
 * (path → route → token → revocation → audience → scopes), then the reply is hijacked and the
 * raw request streamed upstream (forwarder.ts). A path under no route gets the app's 404.
 *
 * Fast lane (fast-lane.ts, installed by app.ts with `serverFactory`): a request the same
 * admission function admits at once (its token already verified) is forwarded from the
 * server's request listener, before Fastify builds anything for it. Both lanes end in
 * `forward`; the lane logs Fastify's "incoming request" and "request completed" lines itself.
 *
 * WebSocket handshakes: Node hands every `Connection: Upgrade` request to the server's
 * 'upgrade' listeners instead of 'request'. This plugin's listener gives each such request a
 * ServerResponse on its socket and feeds it through Fastify's normal routing, so an upgrade is
 * authenticated, logged and refused exactly like any other request (a 401 goes out on the
 * socket, which is then closed). Only a WebSocket handshake on a proxy route is switched;
 * any other upgrade request is served as a plain request (RFC 9110 §7.8 lets a server ignore
 * `Upgrade`) — without a body: bytes after its headers are not read. No other plugin may add
 * an 'upgrade' listener to the same server.
 */
import { randomUUID } from 'node:crypto'
import { type IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify'
import type { Tracer } from '@opentelemetry/api'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { AccessToken, AccessTokenVerifier } from '#shared/access-token-verifier.js'
import type { Clock } from '#shared/clock.js'
import { errorBody, type LatchkeyError } from '#shared/errors.js'
import type { RouteConfig } from '../config.js'
import { gatewayError } from '../errors.js'
import type { GatewayMetrics } from '../ops/metrics.js'
import { Admission } from './admission.js'
import { clientOrigin } from './client-origin.js'
import { forwardAuthRoutes } from './forward-auth.js'
import type { FastLane } from './fast-lane.js'
import { type Exchange, Forwarder, declaresBody } from './forwarder.js'
import { upstreamRequestHeaders } from './headers.js'
import { endProxySpan, propagate, startProxySpan } from './trace-context.js'
import { RouteTable } from './route-table.js'
import { PROXY_MAX_IN_FLIGHT_PER_CALLER, PROXY_TIMEOUT_MS, type ProxyRoute, type Upstream, compileRoute } from './upstream.js'

/** Methods proxied; others (TRACE, WebDAV, CONNECT) get the gateway's 404. */
export const PROXY_METHODS: readonly HTTPMethods[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']
const LANE_METHODS: ReadonlySet<string> = new Set(PROXY_METHODS)
/** Logged status of a lane request whose client left before any answer (nginx's convention). */
const CLIENT_CLOSED = 499

export interface ProxyPluginOptions {
  /** Tracing on: each hop is a span and the upstream continues it (trace-context.ts). */
  readonly tracer?: Tracer
  /** The route table; a `RouteTable` may be replaced while the app runs (ROUTES_FILE reload). */
  readonly routes: RouteTable | readonly RouteConfig[]
  /** The gateway's one access-token verifier (auth/bearer.ts `createGatewayVerifier`), edge revocation included. */
  readonly verifier: AccessTokenVerifier
  readonly metrics: GatewayMetrics
  /** Upstream silence allowed before 504 (default `PROXY_TIMEOUT_MS`). */
  readonly timeoutMs?: number
  /** Request ids for fast-lane requests: the app's own `genReqId` (default `randomUUID`). */
  readonly genReqId?: () => string
  /** The server's fast lane (app.ts `serverFactory`); without one every request takes the gate. */
  readonly lane?: FastLane
  /** TRUSTED_PROXIES, as given to Fastify's `trustProxy` (default none). */
  readonly trustedProxies?: readonly string[]
  /** Requests one caller may have in progress (default `PROXY_MAX_IN_FLIGHT_PER_CALLER`). */
  readonly maxInFlightPerCaller?: number
  /** Serve forward-auth (`/auth/verify`, forward-auth.ts) over the same admission; off when absent. */
  readonly forwardAuth?: { readonly headerPrefix: string, readonly clock: Clock }
}

interface PendingUpgrade {
  readonly socket: Duplex
  readonly head: Buffer
}

function isWebSocketHandshake (req: IncomingMessage): boolean {
  return req.method === 'GET' && typeof req.headers.upgrade === 'string' && req.headers.upgrade.toLowerCase() === 'websocket'
}

/** Who a request's capacity is counted against: the session, or the client of a service token. */
function callerOf (token: AccessToken): string {
  return token.sid === undefined ? `client:${token.client_id}` : `sid:${token.sid}`
}

function refuse (reply: FastifyReply, err: LatchkeyError): FastifyReply {
  return reply.code(err.statusCode).headers(err.headers).header('cache-control', 'no-store').send(errorBody(err))
}

async function proxy (app: FastifyInstance, options: ProxyPluginOptions): Promise<void> {
  const table = options.routes instanceof RouteTable ? options.routes : new RouteTable(options.routes)
  const forwarder = new Forwarder({ metrics: options.metrics, timeoutMs: options.timeoutMs ?? PROXY_TIMEOUT_MS })
  let routes = table.routes.map(r => compileRoute(r))
  // A replaced table takes effect for the next request; requests in progress keep their route.
  table.onReplace((next) => {
    routes = next.map(r => compileRoute(r))
    forwarder.retain(routes.map(r => r.upstream))
  })
  const admission = new Admission<ProxyRoute>({ verifier: options.verifier, routes: () => routes })
  const upgrades = new WeakMap<IncomingMessage, PendingUpgrade>()
  const genReqId = options.genReqId ?? randomUUID
  const tracer = options.tracer
  const originOf = clientOrigin(options.trustedProxies ?? [])
  const log = app.log
  // A custom logger may lack pino's level test: then the line is always offered to it.
  const logsRequests = (log as Partial<Pick<Logger, 'isLevelEnabled'>>).isLevelEnabled?.bind(log, 'info') ?? (() => true)
  let closing = false
  const maxInFlight = options.maxInFlightPerCaller ?? PROXY_MAX_IN_FLIGHT_PER_CALLER
  /** Proxied requests in progress per caller (callerOf); an entry exists only while above 0. */
  const inFlight = new Map<string, number>()
  const busy = (caller: string): boolean => (inFlight.get(caller) ?? 0) >= maxInFlight

  /**
   * Both lanes end here: the request is admitted and its `caller` (callerOf) not `busy`,
   * `url` its normalised target. It counts against its caller until its client connection is done.
   */
  function forward (req: IncomingMessage, res: ServerResponse, route: ProxyRoute, upstream: Upstream, caller: string, url: string, requestId: string, startedAt: bigint, upgrade: PendingUpgrade | undefined): void {
    const websocket = upgrade !== undefined && isWebSocketHandshake(req)
    inFlight.set(caller, (inFlight.get(caller) ?? 0) + 1)
    const release = (): void => {
      const n = (inFlight.get(caller) ?? 1) - 1
      if (n <= 0) inFlight.delete(caller)
      else inFlight.set(caller, n)
    }
    // A web request is released by the forwarder's own 'close' listener (one listener less per request).
    if (websocket) upgrade.socket.once('close', release)
    const origin = originOf(req)
    const span = tracer === undefined ? undefined : startProxySpan(tracer, req.headers, route.label, req.method)
    if (span !== undefined) {
      if (websocket) upgrade.socket.once('close', () => { endProxySpan(span, 101) })
      else res.once('close', () => { endProxySpan(span, res.headersSent ? res.statusCode : 499) })
    }
    const hasBody = declaresBody(req)
    req.headers = upstreamRequestHeaders(req.headers, {
      requestId,
      clientIp: origin.ip,
      proto: origin.proto,
      forwardedHost: origin.host,
      upstreamHost: upstream.hostHeader
    })
    propagate(span, req.headers)
    req.url = url
    const exchange: Exchange = { route, upstream, log, requestId, startedAt, hasBody, answered: false, failed: false, closed: websocket ? undefined : release }
    if (upgrade !== undefined && websocket) {
      // From here the socket speaks WebSocket (or the upstream's refusal), not this response.
      res.detachSocket(upgrade.socket as Socket)
      forwarder.ws(exchange, req, upgrade.socket, upgrade.head)
    } else {
      forwarder.web(exchange, req, res)
    }
  }

  async function gate (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const startedAt = process.hrtime.bigint()
    const req = request.raw
    const decision = await admission.decide(req.url ?? '/', request.headers.authorization)
    switch (decision.outcome) {
      case 'no_route':
      case 'undecided':
        reply.callNotFound()
        return reply
      case 'refused':
        if (decision.error.code === 'GW_PROXY_PATH_NOT_ALLOWED') request.log.info({ route: decision.route?.label, reason: decision.reason }, 'proxy path refused')
        else request.log.debug({ route: decision.route?.label, code: decision.error.code }, 'proxy access refused')
        return refuse(reply, decision.error)
      case 'admitted': {
        // A forward-auth-only route: nothing to proxy to.
        const upstream = decision.route.upstream
        if (upstream === undefined) {
          reply.callNotFound()
          return reply
        }
        const caller = callerOf(decision.token)
        if (busy(caller)) {
          request.log.info({ route: decision.route.label }, 'proxy caller has too many requests in progress')
          return refuse(reply.header('retry-after', '1'), gatewayError('GW_PROXY_CALLER_BUSY'))
        }
        reply.hijack()
        forward(req, reply.raw, decision.route, upstream, caller, decision.target, request.id, startedAt, upgrades.get(req))
        return undefined
      }
    }
  }

  /** The fast lane (fast-lane.ts): true when it took the request, which admission admitted at once. */
  function take (req: IncomingMessage, res: ServerResponse): boolean {
    if (closing || req.headers.upgrade !== undefined || !LANE_METHODS.has(req.method ?? '')) return false
    const startedAt = process.hrtime.bigint()
    const target = req.url ?? '/'
    const decision = admission.decide(target, req.headers.authorization, true)
    if (decision instanceof Promise || decision.outcome !== 'admitted' || decision.route.upstream === undefined) return false
    const caller = callerOf(decision.token)
    if (busy(caller)) return false
    const requestId = genReqId()
    // Fastify's own access-log lines, field for field (its `req` and `res` serializers read
    // these); for the gate's requests Fastify writes them itself, hijacked or not.
    if (logsRequests()) {
      log.info({ reqId: requestId, req: { method: req.method, url: target, host: req.headers.host, ip: originOf(req).ip, socket: req.socket } }, 'incoming request')
      res.once('close', () => {
        const responseTime = Number(process.hrtime.bigint() - startedAt) / 1e6
        log.info({ reqId: requestId, res: { statusCode: res.headersSent ? res.statusCode : CLIENT_CLOSED }, responseTime }, 'request completed')
      })
    }
    forward(req, res, decision.route, decision.route.upstream, caller, decision.target, requestId, startedAt, undefined)
    return true
  }

  // An encapsulated scope: nothing here touches the rest of the app's routes or parsers.
  await app.register(async function proxyRoutes (scope) {
    scope.route({
      method: [...PROXY_METHODS],
      url: '/*',
      exposeHeadRoute: false,
      // The generic request histogram skips these: the proxy observes its own.
      config: { proxied: true },
      onRequest: gate,
      // Never reached: the onRequest hook either answers or hijacks.
      handler: async () => { throw gatewayError('GW_INTERNAL') }
    })
  })

  if (options.forwardAuth !== undefined) {
    await app.register(forwardAuthRoutes, { admission, trustedProxies: options.trustedProxies ?? [], ...options.forwardAuth })
  }

  function onUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Node leaves a handed-over socket without an error listener; a reset must not crash us.
    socket.on('error', () => { socket.destroy() })
    upgrades.set(req, { socket, head })
    const res = new ServerResponse(req)
    res.shouldKeepAlive = false
    res.assignSocket(socket as Socket)
    res.on('finish', () => {
      res.detachSocket(socket as Socket)
      ;(socket as Socket).destroySoon()
    })
    // Node does not read the body of a request it hands over here, so one that is not a
    // WebSocket handshake and says it has a body (a POST with Upgrade: websocket) could only
    // hang, here or upstream: refused at once, before any routing.
    if (!isWebSocketHandshake(req) && declaresBody(req)) {
      const err = gatewayError('GW_INVALID_REQUEST', { description: 'A request with Upgrade cannot carry a body.' })
      const body = JSON.stringify(errorBody(err))
      res.writeHead(err.statusCode, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', connection: 'close' })
      res.end(body)
      return
    }
    app.routing(req, res)
  }
  app.server.on('upgrade', onUpgrade)
  options.lane?.attach(take)
  // Closing: Fastify answers new requests 503 (return503OnClosing); the lane must leave them to it.
  app.addHook('preClose', async () => {
    closing = true
    forwarder.close()
  })
  app.addHook('onClose', async () => {
    options.lane?.detach()
    app.server.off('upgrade', onUpgrade)
    forwarder.close(true)
  })
}

/** Registered by app.ts; see the module comment. */
export const proxyPlugin = fp(proxy, { name: 'latchkey-proxy', fastify: '5.x' })
export default proxyPlugin
