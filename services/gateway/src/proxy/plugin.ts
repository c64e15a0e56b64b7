/**
 * The gateway's reverse proxy (SPEC "Proxy"), as a Fastify plugin:
 *
 *   await app.register(proxyPlugin, { routes: config.routes, keys, issuer: config.issuer, metrics, revoked })
 *
 * Each `ROUTES_FILE` prefix becomes a `<prefix>*` route whose work is done in an `onRequest`
 * hook, before Fastify would read or parse a body: the path is normalised and must stay under
 * the route's prefix (path.ts), the access token is checked in process (access.ts), then the
 * reply is hijacked and the raw request streamed upstream (forwarder.ts).
 *
 * Fast lane: a request whose bearer token is already in the verified-token cache, on a
 * normalised path under its route, is forwarded straight from the server's 'request' event,
 * before Fastify builds a request, a reply and a child logger for it (that lifecycle cost
 * more than the proxy hop itself; see README "Performance"). The lane admits exactly what
 * the `onRequest` gate would admit and never answers anything itself: a request it does not
 * take (no token, a token not seen before, a refusal, a WebSocket handshake, the app
 * closing) goes on to Fastify's routing unchanged, which decides and explains. App-level
 * hooks do not run for fast-lane requests; the proxy logs `incoming request` for them as
 * Fastify does. The lane takes over the server's 'request' listener at registration; with a
 * `serverFactory` (no such listener) there is none and every request takes the gate.
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
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { Clock } from '#shared/clock.js'
import { errorBody, isLatchkeyError, type LatchkeyError } from '#shared/errors.js'
import type { RouteConfig } from '../config.js'
import { gatewayError } from '../errors.js'
import type { SigningKeys } from '../keys/signing-keys.js'
import type { GatewayMetrics } from '../ops/metrics.js'
import { ProxyAccess, type RevokedSids } from './access.js'
import { type Exchange, Forwarder } from './forwarder.js'
import { upstreamRequestHeaders } from './headers.js'
import { normalisePath, routeFor, splitTarget } from './path.js'
import { PROXY_TIMEOUT_MS, type ProxyRoute, compileRoute, createUpstreamAgents } from './upstream.js'

/** Methods proxied; others (TRACE, WebDAV, CONNECT) get the gateway's 404. */
export const PROXY_METHODS: readonly HTTPMethods[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']
const LANE_METHODS: ReadonlySet<string> = new Set(PROXY_METHODS)
/** Prefixes that belong to the gateway itself and can never be proxied. */
export const RESERVED_PREFIXES: readonly string[] = ['/auth/', '/oauth/', '/.well-known/']

export interface ProxyPluginOptions {
  readonly routes: readonly RouteConfig[]
  readonly keys: SigningKeys
  readonly issuer: string
  readonly metrics: GatewayMetrics
  /** Edge revocation: a token whose `sid` is in here is refused (401 invalid_token). Asked in memory, per request. */
  readonly revoked: RevokedSids
  readonly clock?: Clock
  /** Upstream silence allowed before 504 (default `PROXY_TIMEOUT_MS`). */
  readonly timeoutMs?: number
  /** Request ids for fast-lane requests: the app's own `genReqId` (default `randomUUID`). */
  readonly genReqId?: () => string
  /** Serve cached-token requests before Fastify's lifecycle (default true; see the module comment). */
  readonly fastLane?: boolean
}

interface PendingUpgrade {
  readonly socket: Duplex
  readonly head: Buffer
}

function assertRoutes (routes: readonly RouteConfig[]): void {
  const seen = new Set<string>()
  for (const { prefix } of routes) {
    const normalised = normalisePath(prefix)
    if (!normalised.ok || normalised.path !== prefix || !prefix.endsWith('/') || prefix === '/') {
      throw new TypeError(`proxy route prefix ${JSON.stringify(prefix)} must be a normalised path ending in "/"`)
    }
    if (RESERVED_PREFIXES.some(r => prefix.startsWith(r) || r.startsWith(prefix))) {
      throw new TypeError(`proxy route prefix ${prefix} would shadow the gateway's own routes`)
    }
    if (seen.has(prefix)) throw new TypeError(`proxy route prefix ${prefix} is listed twice`)
    seen.add(prefix)
  }
}

function isWebSocketHandshake (req: IncomingMessage): boolean {
  return req.method === 'GET' && typeof req.headers.upgrade === 'string' && req.headers.upgrade.toLowerCase() === 'websocket'
}

function refuse (reply: FastifyReply, err: LatchkeyError): FastifyReply {
  return reply.code(err.statusCode).headers(err.headers).header('cache-control', 'no-store').send(errorBody(err))
}

async function proxy (app: FastifyInstance, options: ProxyPluginOptions): Promise<void> {
  assertRoutes(options.routes)
  const access = new ProxyAccess(options)
  const agents = createUpstreamAgents()
  const forwarder = new Forwarder({ metrics: options.metrics, timeoutMs: options.timeoutMs ?? PROXY_TIMEOUT_MS })
  const routes = options.routes.map(r => compileRoute(r, agents))
  const upgrades = new WeakMap<IncomingMessage, PendingUpgrade>()
  const genReqId = options.genReqId ?? randomUUID
  const log = app.log
  // A custom logger may lack pino's level test: then the line is always offered to it.
  const logsRequests = (log as Partial<Pick<Logger, 'isLevelEnabled'>>).isLevelEnabled?.bind(log, 'info') ?? (() => true)
  let closing = false

  /** Both lanes end here: the request is admitted, `url` its normalised target. */
  function forward (req: IncomingMessage, res: ServerResponse, route: ProxyRoute, url: string, requestId: string, startedAt: bigint, upgrade: PendingUpgrade | undefined): void {
    const websocket = upgrade !== undefined && isWebSocketHandshake(req)
    req.headers = upstreamRequestHeaders(req.headers, {
      requestId,
      clientIp: req.socket.remoteAddress,
      proto: (req.socket as Socket & { encrypted?: boolean }).encrypted === true ? 'https' : 'http',
      upstreamHost: route.hostHeader,
      websocket
    })
    req.url = url
    const exchange: Exchange = { route, log, requestId, startedAt, answered: false, upgraded: false, failed: false }
    if (upgrade !== undefined && websocket) {
      // From here the socket speaks WebSocket (or the upstream's refusal), not this response.
      res.detachSocket(upgrade.socket as Socket)
      forwarder.ws(exchange, req, upgrade.socket, upgrade.head)
    } else {
      forwarder.web(exchange, req, res)
    }
  }

  function gate (route: ProxyRoute) {
    return async function proxyGate (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
      const startedAt = process.hrtime.bigint()
      const req = request.raw
      const { path, query } = splitTarget(req.url ?? '/')
      const normalised = normalisePath(path)
      // The router chose this route from the raw path; the normalised path must agree.
      if (!normalised.ok || routeFor(routes, normalised.path) !== route) {
        request.log.info({ route: route.label, reason: normalised.ok ? 'leaves_prefix' : normalised.reason }, 'proxy path refused')
        return refuse(reply, gatewayError('GW_PROXY_PATH_NOT_ALLOWED'))
      }
      try {
        await access.admit(request.headers.authorization, route.config)
      } catch (err) {
        if (!isLatchkeyError(err)) throw err
        request.log.debug({ route: route.label, code: err.code }, 'proxy access refused')
        return refuse(reply, err)
      }
      reply.hijack()
      forward(req, reply.raw, route, normalised.path + query, request.id, startedAt, upgrades.get(req))
      return undefined
    }
  }

  /**
   * The fast lane (module comment): true when it took the request. Every check is the
   * gate's, in the gate's order; anything else is left to Fastify.
   */
  function fastLane (req: IncomingMessage, res: ServerResponse): boolean {
    if (closing || req.headers.upgrade !== undefined || !LANE_METHODS.has(req.method ?? '')) return false
    const startedAt = process.hrtime.bigint()
    const target = req.url ?? '/'
    const { path, query } = splitTarget(target)
    // The route Fastify's router would pick from the raw path, which the normalised path must keep.
    const route = routeFor(routes, path)
    if (route === undefined) return false
    const normalised = normalisePath(path)
    if (!normalised.ok || (normalised.path !== path && routeFor(routes, normalised.path) !== route)) return false
    if (access.admitCached(req.headers.authorization, route.config) === undefined) return false
    const requestId = genReqId()
    // Fastify's own access-log line, field for field (its `req` serializer reads these).
    if (logsRequests()) {
      log.info({ reqId: requestId, req: { method: req.method, url: target, host: req.headers.host, ip: req.socket.remoteAddress, socket: req.socket } }, 'incoming request')
    }
    forward(req, res, route, normalised.path + query, requestId, startedAt, undefined)
    return true
  }

  // An encapsulated scope: nothing here touches the rest of the app's routes or parsers.
  await app.register(async function proxyRoutes (scope) {
    for (const route of routes) {
      scope.route({
        method: [...PROXY_METHODS],
        url: `${route.prefix}*`,
        exposeHeadRoute: false,
        // The generic request histogram skips these: the proxy observes its own.
        config: { proxied: true },
        onRequest: gate(route),
        // Never reached: the onRequest hook either answers or hijacks.
        handler: async () => { throw gatewayError('GW_INTERNAL') }
      })
    }
  })

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
    app.routing(req, res)
  }
  app.server.on('upgrade', onUpgrade)
  // Fastify's router is the server's 'request' listener; the lane goes in front of it.
  const routing = app.routing
  if (options.fastLane !== false && app.server.listeners('request').includes(routing)) {
    app.server.removeListener('request', routing)
    app.server.on('request', (req: IncomingMessage, res: ServerResponse) => { if (!fastLane(req, res)) routing(req, res) })
  }
  // Closing: Fastify answers new requests 503 (return503OnClosing); the lane must leave them to it.
  app.addHook('preClose', async () => {
    closing = true
    forwarder.close()
  })
  app.addHook('onClose', async () => {
    app.server.off('upgrade', onUpgrade)
    forwarder.close()
    agents.destroy()
  })
}

/** Registered by app.ts; see the module comment. */
export const proxyPlugin = fp(proxy, { name: 'latchkey-proxy', fastify: '5.x' })
export default proxyPlugin
