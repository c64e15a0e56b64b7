/**
 * Moves an admitted request to its upstream and the answer back, with undici (the HTTP client
 * inside Node's own `fetch`): one connection `Pool` per upstream origin, driven through
 * `dispatch` with one small handler per exchange. By the time a request gets here it is
 * authenticated, its path normalised and its headers rewritten (plugin.ts, headers.ts); this
 * file owns the byte streams and their failures.
 *
 * - Why undici and not http-proxy over `http.request`: the response's bytes go from the
 *   upstream's socket to the client's `ServerResponse` with no `ClientRequest`,
 *   `IncomingMessage` or pipe in between, and no agent bookkeeping per request. Measured on
 *   the same machine (docs/performance.md, "The proxy hop on undici"), this hop's CPU per
 *   proxied GET fell below plain http-proxy's, which does no token check at all.
 * - Bodies stream both ways: the client's request body is the upstream request's body (a
 *   stream, never buffered); each upstream body chunk is written to the client as it comes,
 *   and the upstream connection is paused while the client's socket is full (backpressure).
 * - Response headers pass through `clientResponseHeaders`; one Node refuses to write (an
 *   invalid status or value) makes a 502 instead of a thrown error.
 * - Failures answer 502/504 with generic JSON while nothing was sent yet; afterwards the
 *   client connection is cut, the only honest signal left.
 * - A request body keeps its framing: a Content-Length body goes with its (validated) length,
 *   a chunked one chunked (undici frames a stream of unknown length so); undici checks the
 *   bytes sent against the length declared and fails the request otherwise.
 * - WebSocket handshakes (`ws`) go through the same pool with undici's `upgrade`; the
 *   switched connection leaves the pool and the two sockets are piped.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { FastifyBaseLogger } from 'fastify'
import { type Dispatcher, Pool } from 'undici'
import { errorBody, type LatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import type { GatewayMetrics } from '../ops/metrics.js'
import { clientResponseHeaders } from './headers.js'
import {
  UPSTREAM_CONNECT_TIMEOUT_MS, UPSTREAM_IDLE_KEEP_ALIVE_MS, UPSTREAM_MAX_SOCKETS, type ProxyRoute, type Upstream,
  UpstreamResponseError, classifyUpstreamError
} from './upstream.js'

/** Metric status for a request whose client left before any response was sent (nginx's convention). */
const CLIENT_CLOSED = '499'

export interface Exchange {
  readonly route: ProxyRoute
  readonly upstream: Upstream
  readonly log: FastifyBaseLogger
  readonly requestId: string
  readonly startedAt: bigint
  /** The client's request has a body (`declaresBody`, read before its headers were rewritten). */
  readonly hasBody: boolean
  /** Called once when the client connection of a web request is done (the caller's in-flight count). */
  readonly closed?: (() => void) | undefined
  /** Cancels the upstream request, once it is on a connection (undici's controller). */
  abort?: (reason: Error) => void
  /** A response (or a failure answer) has started towards the client. */
  answered: boolean
  failed: boolean
}

/** Why an upstream request is cancelled when its client has gone; never counted or logged. */
class ClientClosedError extends Error {
  readonly code = 'LK_CLIENT_CLOSED'
  constructor () {
    super('client closed the connection')
    this.name = 'ClientClosedError'
  }
}

export interface ForwarderOptions {
  readonly metrics: GatewayMetrics
  /** Upstream silence allowed, once the request is sent, before 504 (`PROXY_TIMEOUT_MS`). */
  readonly timeoutMs: number
}

function seconds (startedAt: bigint): number {
  return Number(process.hrtime.bigint() - startedAt) / 1e9
}

function failureFor (err: unknown): LatchkeyError {
  return gatewayError(classifyUpstreamError(err) === 'timeout' ? 'GW_GATEWAY_TIMEOUT' : 'GW_BAD_GATEWAY')
}

function jsonHead (body: string): Record<string, string> {
  return { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store' }
}

/** undici hands raw header names and values as bytes; Node's own parser reads them as latin1. */
function latin1 (v: Buffer | string | undefined): string {
  return v === undefined ? '' : typeof v === 'string' ? v : v.toString('latin1')
}

function latin1Headers (raw: readonly Buffer[] | readonly string[] | null): string[] {
  if (raw === null) return []
  const out = new Array<string>(raw.length)
  for (let i = 0; i < raw.length; i++) out[i] = latin1(raw[i])
  return out
}

/** A `HTTP/1.1` head for a raw socket: the status line, the headers, the blank line. */
function rawHead (statusLine: string, headers: readonly string[]): string {
  let head = `${statusLine}\r\n`
  for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i] as string}: ${headers[i + 1] as string}\r\n`
  return `${head}\r\n`
}

/** A failure answered on a raw socket (a WebSocket handshake that never switched). */
function rawFailure (failure: LatchkeyError): string {
  const body = JSON.stringify(errorBody(failure))
  const headers = Object.entries({ ...jsonHead(body), connection: 'close' }).flat()
  return rawHead(`HTTP/1.1 ${failure.statusCode} ${failure.statusCode === 504 ? 'Gateway Timeout' : 'Bad Gateway'}`, headers) + body
}

export class Forwarder {
  /**
   * One connection pool per upstream origin. A route-table reload that keeps an upstream
   * keeps its pool (and its warm connections); `retain` closes the pools of upstreams that
   * went away, once the requests already sent through them are answered.
   */
  readonly #pools = new Map<string, Pool>()
  readonly #metrics: GatewayMetrics
  readonly #timeoutMs: number
  /** Both ends of every switched WebSocket, so closing the app can end them. */
  readonly #tunnels = new Set<Duplex>()

  constructor (options: ForwarderOptions) {
    this.#metrics = options.metrics
    this.#timeoutMs = options.timeoutMs
  }

  #poolFor (upstream: Upstream): Pool {
    const known = this.#pools.get(upstream.origin)
    if (known !== undefined) return known
    const pool = new Pool(upstream.origin, {
      connections: UPSTREAM_MAX_SOCKETS,
      keepAliveTimeout: UPSTREAM_IDLE_KEEP_ALIVE_MS,
      connectTimeout: UPSTREAM_CONNECT_TIMEOUT_MS,
      headersTimeout: this.#timeoutMs,
      bodyTimeout: this.#timeoutMs
    })
    this.#pools.set(upstream.origin, pool)
    return pool
  }

  /** After a route-table reload: close the pools of upstreams no longer routed to. */
  retain (upstreams: Iterable<Upstream | undefined>): void {
    const live = new Set<string>()
    for (const u of upstreams) if (u !== undefined) live.add(u.origin)
    for (const [origin, pool] of this.#pools) {
      if (live.has(origin)) continue
      this.#pools.delete(origin)
      // Requests already sent through it are answered first (undici's close).
      pool.close().catch(() => {})
    }
  }

  /** How many upstream pools are kept (for tests: reloads must not grow it). */
  get upstreamServers (): number { return this.#pools.size }

  web (exchange: Exchange, req: IncomingMessage, res: ServerResponse): void {
    res.once('close', () => {
      exchange.closed?.()
      const status = res.headersSent ? String(res.statusCode) : CLIENT_CLOSED
      this.#metrics.proxyDuration.observe({ route: exchange.route.label, status_code: status }, seconds(exchange.startedAt))
      if (res.writableFinished) return
      // The answer was cut short: by us after an upstream failure (already counted), or by
      // the client leaving. Either way, nothing more to fetch upstream.
      exchange.failed = true
      exchange.abort?.(new ClientClosedError())
    })
    this.#poolFor(exchange.upstream).dispatch({
      path: exchange.upstream.basePath + (req.url ?? '/'),
      method: req.method ?? 'GET',
      headers: req.headers,
      // A request that declares no body (RFC 9112 §6.3) is sent without one, never chunked.
      body: exchange.hasBody ? req : null
    }, new WebHandler(this, exchange, req, res))
  }

  ws (exchange: Exchange, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // The server's inactivity timeout is for HTTP requests; a WebSocket may stay quiet.
    ;(socket as Socket).setTimeout(0)
    this.#poolFor(exchange.upstream).dispatch({
      path: exchange.upstream.basePath + (req.url ?? '/'),
      method: 'GET',
      headers: req.headers,
      upgrade: 'websocket',
      body: null
    }, new UpgradeHandler(this, exchange, socket, head))
  }

  /** End switched WebSockets (they would hold the server open); with `pools`, drop every upstream connection too. */
  close (pools = false): void {
    for (const s of this.#tunnels) s.destroy()
    this.#tunnels.clear()
    if (!pools) return
    for (const pool of this.#pools.values()) pool.destroy().catch(() => {})
    this.#pools.clear()
  }

  /** A switched WebSocket: the two sockets are piped, and each one's end ends the other. */
  tunnel (socket: Duplex, upstreamSocket: Duplex, head: Buffer): void {
    // Bytes the client sent after its handshake, read by Node's parser with the headers.
    if (head.length > 0) upstreamSocket.write(head)
    for (const [end, other] of [[socket, upstreamSocket], [upstreamSocket, socket]] as const) {
      this.#tunnels.add(end)
      // pipe carries a clean end across but not an abrupt close or an error.
      end.on('error', () => { end.destroy() })
      end.once('close', () => {
        this.#tunnels.delete(end)
        other.destroy()
      })
    }
    upstreamSocket.pipe(socket).pipe(upstreamSocket)
  }

  observe (exchange: Exchange, status: number): void {
    this.#metrics.proxyDuration.observe({ route: exchange.route.label, status_code: String(status) }, seconds(exchange.startedAt))
  }

  onWebError (exchange: Exchange, err: Error, req: IncomingMessage, res: ServerResponse): void {
    if (exchange.failed) return
    exchange.failed = true
    const clientGone = res.destroyed || req.socket.destroyed
    if (clientGone && classifyUpstreamError(err) !== 'timeout') return
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

  onWsError (exchange: Exchange, err: Error, socket: Duplex): void {
    if (exchange.failed) return
    exchange.failed = true
    if (socket.destroyed) return
    this.#countFailure(exchange, err)
    if (exchange.answered) {
      socket.destroy()
      return
    }
    const failure = failureFor(err)
    exchange.answered = true
    socket.end(rawFailure(failure))
    this.observe(exchange, failure.statusCode)
  }

  #countFailure (exchange: Exchange, err: unknown): void {
    const kind = classifyUpstreamError(err)
    this.#metrics.upstreamErrors.inc({ route: exchange.route.label, kind })
    // The errno is enough to act on; the message can carry the upstream's address.
    exchange.log.warn({ reqId: exchange.requestId, route: exchange.route.label, kind, code: (err as { code?: unknown }).code }, 'upstream request failed')
  }
}

/** A body follows the headers (RFC 9112 §6.3): chunked, or a non-zero Content-Length. */
export function declaresBody (req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/**
 * What both upstream sides share. They are written to the handler interface undici's
 * HTTP/1.1 client itself calls (`onConnect`, `onHeaders`, `onData`, `onComplete`,
 * `onError`), which its types mark deprecated in favour of a controller-based one. That newer
 * interface is an adapter over this one which, for every response, allocates a controller
 * and parses the raw headers into an object this proxy never reads (it relays the raw list):
 * `npm run bench:instructions` counted 654,000–730,000 instructions per proxied GET with it
 * against 555,000–573,000 with this one. undici 7 supports both; the proxy tests pin the
 * behaviour either way.
 */
abstract class UpstreamSide {
  protected readonly forwarder: Forwarder
  protected readonly exchange: Exchange
  /** Where the upstream's answer goes: the client's response, or its raw socket. */
  readonly #sink: NodeJS.WritableStream
  #resume: (() => void) | undefined
  readonly #onDrain = (): void => { this.#resume?.() }

  constructor (forwarder: Forwarder, exchange: Exchange, sink: NodeJS.WritableStream) {
    this.forwarder = forwarder
    this.exchange = exchange
    this.#sink = sink
  }

  /** The request is on a connection: a client gone meanwhile cancels it. */
  onConnect (abort: (reason?: Error) => void): void {
    if (this.exchange.failed) {
      abort(new ClientClosedError())
      return
    }
    this.exchange.abort = abort
  }

  /** Called from `onHeaders`: what resumes the upstream connection after backpressure. */
  protected answering (resume: () => void): void {
    this.exchange.answered = true
    this.#resume = resume
  }

  onData (chunk: Buffer): boolean {
    if (this.#sink.write(chunk)) return true
    // Backpressure: undici pauses the upstream connection until `resume`.
    this.#sink.once('drain', this.#onDrain)
    return false
  }

  onComplete (): void {
    this.#sink.end()
  }
}

/** One proxied web request's upstream side: the answer goes straight into `res`. */
class WebHandler extends UpstreamSide implements Dispatcher.DispatchHandler {
  readonly #req: IncomingMessage
  readonly #res: ServerResponse

  constructor (forwarder: Forwarder, exchange: Exchange, req: IncomingMessage, res: ServerResponse) {
    super(forwarder, exchange, res)
    this.#req = req
    this.#res = res
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // 1xx interim answers (103 Early Hints) are not relayed; the final one follows.
    if (statusCode >= 100 && statusCode < 200) return true
    const res = this.#res
    if (this.exchange.failed || res.destroyed) throw new ClientClosedError()
    try {
      res.writeHead(statusCode, clientResponseHeaders(latin1Headers(rawHeaders)))
    } catch (err) {
      // An invalid status or header value: Node refuses to write it, so nothing went out
      // yet. Thrown here, undici aborts the request with it (onError).
      throw new UpstreamResponseError(err)
    }
    this.answering(resume)
    return true
  }

  onError (err: Error): void {
    this.forwarder.onWebError(this.exchange, err, this.#req, this.#res)
  }
}

/** A WebSocket handshake's upstream side: a 101 switches the sockets, any other answer is relayed and the socket closed. */
class UpgradeHandler extends UpstreamSide implements Dispatcher.DispatchHandler {
  readonly #socket: Duplex
  readonly #head: Buffer

  constructor (forwarder: Forwarder, exchange: Exchange, socket: Duplex, head: Buffer) {
    super(forwarder, exchange, socket)
    this.#socket = socket
    this.#head = head
  }

  override onConnect (abort: (reason?: Error) => void): void {
    super.onConnect(abort)
    // The client left before the upstream answered.
    this.#socket.once('close', () => {
      if (this.exchange.answered) return
      this.exchange.failed = true
      this.exchange.abort?.(new ClientClosedError())
    })
  }

  onUpgrade (_statusCode: number, rawHeaders: Buffer[] | string[] | null, upstreamSocket: Duplex): void {
    const exchange = this.exchange
    if (exchange.failed || this.#socket.destroyed) {
      upstreamSocket.destroy()
      return
    }
    exchange.answered = true
    const raw = latin1Headers(rawHeaders)
    let upgrade = 'websocket'
    for (let i = 0; i + 1 < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === 'upgrade') upgrade = raw[i + 1] as string
    const relayed = [...clientResponseHeaders(raw), 'Connection', 'Upgrade', 'Upgrade', upgrade]
    this.#socket.write(rawHead('HTTP/1.1 101 Switching Protocols', relayed))
    this.forwarder.observe(exchange, 101)
    this.forwarder.tunnel(this.#socket, upstreamSocket, this.#head)
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode >= 100 && statusCode < 200) return true
    // The upstream refused the switch: its answer is relayed with the body unframed (undici
    // hands it decoded), so the client reads it to the close.
    this.answering(resume)
    const relayed = [...clientResponseHeaders(latin1Headers(rawHeaders)), 'Connection', 'close']
    this.#socket.write(rawHead(`HTTP/1.1 ${statusCode} ${statusText}`, relayed))
    this.forwarder.observe(this.exchange, statusCode)
    return true
  }

  onError (err: Error): void {
    this.forwarder.onWsError(this.exchange, err, this.#socket)
  }
}
