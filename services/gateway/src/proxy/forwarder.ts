/**
 * Moves an admitted request to its upstream and the answer back, with http-proxy.
 * By the time a request gets here it is authenticated, its path normalised and its headers
 * rewritten (plugin.ts, headers.ts); this file owns the byte streams and their failures.
 *
 * - Bodies stream both ways (`req` is piped into the upstream request, the upstream response
 *   piped into `res`); nothing is buffered. `pipe` rather than `stream.pipeline`: pipeline's
 *   per-call AbortController, aborted with a stack-capturing AbortError when each response
 *   completes, cost more than the rest of the hop (profiled); the failure paths are wired here.
 * - The response is written here (`selfHandleResponse`), so its headers pass through
 *   `clientResponseHeaders` and an unrelayable one becomes a 502 instead of a thrown error.
 * - Failures answer 502/504 with generic JSON while nothing was sent yet; afterwards the
 *   client connection is cut, the only honest signal left.
 * - http-proxy's `deleteLength` pass is removed: it would set `Content-Length: 0` on a chunked
 *   DELETE/OPTIONS and then stream the body after it — upstream, a second request.
 */
import { type ClientRequest, type IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Socket } from 'node:net'
import httpProxy from 'http-proxy'
import type { FastifyBaseLogger } from 'fastify'
import { errorBody, type LatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import type { GatewayMetrics } from '../ops/metrics.js'
import { clientResponseHeaderObject, clientResponseHeaders } from './headers.js'
import { type ProxyRoute, type Upstream, UpstreamResponseError, UpstreamTimeoutError, classifyUpstreamError } from './upstream.js'

/** Metric status for a request whose client left before any response was sent (nginx's convention). */
const CLIENT_CLOSED = '499'

export interface Exchange {
  readonly route: ProxyRoute
  readonly upstream: Upstream
  readonly log: FastifyBaseLogger
  readonly requestId: string
  readonly startedAt: bigint
  /** Called once when the client connection of a web request is done (the caller's in-flight count). */
  readonly closed?: (() => void) | undefined
  upstreamRequest?: ClientRequest
  /** A response (or a failure answer) has started towards the client. */
  answered: boolean
  /** The WebSocket is switched: errors can no longer be answered in HTTP. */
  upgraded: boolean
  failed: boolean
}

/**
 * http-proxy's events carry the client request, not our state: the exchange rides on the
 * request itself. (A WeakMap keyed by request cost a GC ephemeron per proxied request.)
 */
const EXCHANGE = Symbol('latchkey.exchange')
type ExchangeCarrier = IncomingMessage & { [EXCHANGE]?: Exchange }

export interface ForwarderOptions {
  readonly metrics: GatewayMetrics
  readonly timeoutMs: number
}

function seconds (startedAt: bigint): number {
  return Number(process.hrtime.bigint() - startedAt) / 1e9
}

/** An upstream's identity for the server map: where it sends, and through which pool. */
function upstreamKey (u: Upstream): string {
  return `${u.target.protocol}//${u.target.hostname}:${u.target.port}${u.target.path}`
}

function failureFor (err: unknown): LatchkeyError {
  return gatewayError(err instanceof UpstreamTimeoutError ? 'GW_GATEWAY_TIMEOUT' : 'GW_BAD_GATEWAY')
}

function jsonHead (body: string): Record<string, string> {
  return { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store' }
}

export class Forwarder {
  /**
   * One http-proxy server per upstream, its target and pool in the server's options: a call
   * with options of its own costs two option copies (and a callback closure) per request.
   * Keyed by the upstream's address (`upstreamKey`), so a route-table reload that keeps an
   * upstream keeps its server, and `retain` drops the servers of upstreams that went away.
   */
  readonly #proxies = new Map<string, httpProxy>()
  readonly #metrics: GatewayMetrics
  readonly #timeoutMs: number
  /** Both ends of every switched WebSocket, so closing the app can end them. */
  readonly #tunnels = new Set<Duplex>()

  constructor (options: ForwarderOptions) {
    this.#metrics = options.metrics
    this.#timeoutMs = options.timeoutMs
  }

  #proxyFor (upstream: Upstream): httpProxy {
    const key = upstreamKey(upstream)
    const known = this.#proxies.get(key)
    if (known !== undefined) return known
    // xfwd off and changeOrigin off: the forwarding headers and Host are the gateway's own
    // (headers.ts). toProxy: the already-normalised `req.url` is used as is, not re-parsed.
    const proxy = httpProxy.createProxyServer({ target: upstream.target, agent: upstream.agent, xfwd: false, changeOrigin: false, selfHandleResponse: true, toProxy: true, ws: true })
    const passes = proxy as unknown as { webPasses: Array<{ name: string }> }
    passes.webPasses = passes.webPasses.filter(pass => pass.name !== 'deleteLength')
    // Web requests report failures here (WebSocket calls pass a callback of their own).
    proxy.on('error', (err, req, res) => {
      const exchange = (req as ExchangeCarrier)[EXCHANGE]
      if (exchange !== undefined && res instanceof ServerResponse) this.#onWebError(exchange, err, req, res)
    })
    proxy.on('proxyReq', (proxyReq, req, res) => { this.#onUpstreamRequest(proxyReq, req, res) })
    proxy.on('proxyRes', (proxyRes, req, res) => { this.#onUpstreamResponse(proxyRes, req, res) })
    proxy.on('proxyReqWs', (proxyReq, req, socket) => { this.#onUpstreamUpgradeRequest(proxyReq, req, socket) })
    this.#proxies.set(key, proxy)
    return proxy
  }

  /**
   * After a route-table reload: forget the servers of upstreams no longer routed to. A request
   * still in progress holds its own reference and finishes through it; only the map lets go.
   */
  retain (upstreams: Iterable<Upstream | undefined>): void {
    const live = new Set<string>()
    for (const u of upstreams) if (u !== undefined) live.add(upstreamKey(u))
    for (const key of this.#proxies.keys()) if (!live.has(key)) this.#proxies.delete(key)
  }

  /** How many upstream servers are kept (for tests: reloads must not grow it). */
  get upstreamServers (): number { return this.#proxies.size }

  web (exchange: Exchange, req: IncomingMessage, res: ServerResponse): void {
    (req as ExchangeCarrier)[EXCHANGE] = exchange
    res.once('close', () => {
      exchange.closed?.()
      const status = res.headersSent ? String(res.statusCode) : CLIENT_CLOSED
      this.#metrics.proxyDuration.observe({ route: exchange.route.label, status_code: status }, seconds(exchange.startedAt))
      if (res.writableFinished) return
      // The answer was cut short: by us after an upstream failure (already counted), or by
      // the client leaving. Either way, nothing more to fetch upstream.
      exchange.failed = true
      exchange.upstreamRequest?.destroy()
    })
    this.#proxyFor(exchange.upstream).web(req, res)
  }

  ws (exchange: Exchange, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    (req as ExchangeCarrier)[EXCHANGE] = exchange
    // A fresh connection per WebSocket: a switched socket never returns to a pool.
    this.#proxyFor(exchange.upstream).ws(req, socket, head, { agent: false }, (err) => { this.#onWsError(exchange, err, socket) })
  }

  /** End switched WebSockets: they would hold the server open. */
  close (): void {
    for (const s of this.#tunnels) s.destroy()
    this.#tunnels.clear()
  }

  #onUpstreamRequest (proxyReq: ClientRequest, req: IncomingMessage, res: ServerResponse): void {
    const exchange = (req as ExchangeCarrier)[EXCHANGE]
    if (exchange === undefined) return
    exchange.upstreamRequest = proxyReq
    // The client left while this request waited for a pooled socket.
    if (exchange.failed) {
      proxyReq.destroy()
      return
    }
    // Idle time on the upstream socket: no response headers yet, or a stalled body.
    proxyReq.setTimeout(this.#timeoutMs, () => { proxyReq.destroy(new UpstreamTimeoutError()) })
    // A 101 to a request that asked for no upgrade: Node would drop the socket and leave
    // the request hanging; with a listener it hands the socket over, and this fails it.
    proxyReq.on('upgrade', (_res: IncomingMessage, upstreamSocket: Socket) => {
      upstreamSocket.destroy()
      this.#onWebError(exchange, new UpstreamResponseError(new Error('unrequested protocol switch')), req, res)
    })
  }

  #onUpstreamResponse (proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void {
    const exchange = (req as ExchangeCarrier)[EXCHANGE]
    if (exchange === undefined || exchange.failed || res.destroyed) {
      proxyRes.destroy()
      return
    }
    try {
      res.writeHead(proxyRes.statusCode ?? 502, clientResponseHeaders(proxyRes.rawHeaders))
    } catch (err) {
      // An invalid status or header value: Node refuses to write it, so nothing went out yet.
      proxyRes.destroy()
      this.#onWebError(exchange, new UpstreamResponseError(err), req, res)
      return
    }
    exchange.answered = true
    // Cut mid-body by the upstream: the client connection is cut too (a client that left
    // is handled by the 'close' listener in web(), and is not an upstream failure).
    proxyRes.on('error', (err) => {
      res.destroy()
      if (exchange.failed) return
      exchange.failed = true
      this.#countFailure(exchange, err)
    })
    proxyRes.pipe(res)
  }

  #onWebError (exchange: Exchange, err: Error, req: IncomingMessage, res: ServerResponse): void {
    if (exchange.failed) return
    exchange.failed = true
    exchange.upstreamRequest?.destroy()
    const clientGone = res.destroyed || req.socket.destroyed
    if (clientGone && !(err instanceof UpstreamTimeoutError)) return
    this.#countFailure(exchange, err)
    if (clientGone) return
    if (res.headersSent) {
      res.destroy()
      return
    }
    const failure = failureFor(err)
    const body = JSON.stringify(errorBody(failure))
    exchange.answered = true
    res.writeHead(failure.statusCode, jsonHead(body))
    res.end(body)
  }

  #countFailure (exchange: Exchange, err: unknown): void {
    const kind = classifyUpstreamError(err)
    this.#metrics.upstreamErrors.inc({ route: exchange.route.label, kind })
    // The errno is enough to act on; the message can carry the upstream's address.
    exchange.log.warn({ reqId: exchange.requestId, route: exchange.route.label, kind, code: (err as { code?: unknown }).code }, 'upstream request failed')
  }

  #onUpstreamUpgradeRequest (proxyReq: ClientRequest, req: IncomingMessage, socket: Socket): void {
    const exchange = (req as ExchangeCarrier)[EXCHANGE]
    if (exchange === undefined) return
    exchange.upstreamRequest = proxyReq
    proxyReq.setTimeout(this.#timeoutMs, () => { proxyReq.destroy(new UpstreamTimeoutError()) })
    // Registered before http-proxy's own listeners (which write `headers` to the client as
    // they are), so these rewrites are what the client sees.
    proxyReq.on('response', (res: IncomingMessage) => {
      exchange.answered = true
      // The body follows unframed (http-proxy pipes it decoded): the client reads to close.
      res.headers = { ...clientResponseHeaderObject(res.rawHeaders), connection: 'close' }
      delete res.headers['transfer-encoding']
      this.#metrics.proxyDuration.observe({ route: exchange.route.label, status_code: String(res.statusCode) }, seconds(exchange.startedAt))
    })
    proxyReq.on('upgrade', (res: IncomingMessage, upstreamSocket: Socket) => {
      exchange.answered = true
      exchange.upgraded = true
      res.headers = { ...clientResponseHeaderObject(res.rawHeaders), connection: 'Upgrade', upgrade: res.headers.upgrade ?? 'websocket' }
      this.#metrics.proxyDuration.observe({ route: exchange.route.label, status_code: '101' }, seconds(exchange.startedAt))
      // http-proxy pipes the two ends, which carries a clean end across but not an abrupt
      // close: without this, a client that vanishes would leave the upstream socket open.
      for (const [end, other] of [[socket, upstreamSocket], [upstreamSocket, socket]] as const) {
        this.#tunnels.add(end)
        end.once('close', () => {
          this.#tunnels.delete(end)
          other.destroy()
        })
      }
    })
  }

  #onWsError (exchange: Exchange, err: Error, socket: Duplex): void {
    if (exchange.failed) return
    exchange.failed = true
    exchange.upstreamRequest?.destroy()
    if (socket.destroyed) return
    this.#countFailure(exchange, err)
    // http-proxy ends the socket after this callback.
    if (exchange.answered) return
    const failure = failureFor(err)
    const body = JSON.stringify(errorBody(failure))
    const head = Object.entries({ ...jsonHead(body), connection: 'close' }).map(([k, v]) => `${k}: ${v}\r\n`).join('')
    socket.write(`HTTP/1.1 ${failure.statusCode} ${failure.statusCode === 504 ? 'Gateway Timeout' : 'Bad Gateway'}\r\n${head}\r\n${body}`)
    this.#metrics.proxyDuration.observe({ route: exchange.route.label, status_code: String(failure.statusCode) }, seconds(exchange.startedAt))
  }
}
