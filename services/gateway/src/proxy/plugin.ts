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
 * WebSocket handshakes: Node hands every `Connection: Upgrade` request to the server's
 * 'upgrade' listeners instead of 'request'. This plugin's listener gives each such request a
 * ServerResponse on its socket and feeds it through Fastify's normal routing, so an upgrade is
 * authenticated, logged and refused exactly like any other request (a 401 goes out on the
 * socket, which is then closed). Only a WebSocket handshake on a proxy route is switched;
 * any other upgrade request is served as a plain request (RFC 9110 §7.8 lets a server ignore
 * `Upgrade`) — without a body: bytes after its headers are not read. No other plugin may add
 * an 'upgrade' listener to the same server.
 */
import { type IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify'
import fp from 'fastify-plugin'
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
      const upgrade = upgrades.get(req)
      const websocket = upgrade !== undefined && isWebSocketHandshake(req)
      req.headers = upstreamRequestHeaders(req.headers, {
        requestId: request.id,
        clientIp: req.socket.remoteAddress,
        proto: (req.socket as Socket & { encrypted?: boolean }).encrypted === true ? 'https' : 'http',
        upstreamHost: route.hostHeader,
        websocket
      })
      req.url = normalised.path + query
      reply.hijack()
      const exchange: Exchange = { route, log: request.log, startedAt, answered: false, upgraded: false, failed: false }
      if (upgrade !== undefined && websocket) {
        // From here the socket speaks WebSocket (or the upstream's refusal), not this response.
        reply.raw.detachSocket(upgrade.socket as Socket)
        forwarder.ws(exchange, req, upgrade.socket, upgrade.head)
      } else {
        forwarder.web(exchange, req, reply.raw)
      }
      return undefined
    }
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
  app.addHook('preClose', async () => { forwarder.close() })
  app.addHook('onClose', async () => {
    app.server.off('upgrade', onUpgrade)
    forwarder.close()
    agents.destroy()
  })
}

/** Registered by app.ts; see the module comment. */
export const proxyPlugin = fp(proxy, { name: 'latchkey-proxy', fastify: '5.x' })
export default proxyPlugin
