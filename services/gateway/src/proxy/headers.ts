/**
 * Which headers cross the proxy, in each direction.
 *
 * Upstream-bound: end-to-end headers pass (Authorization included); hop-by-hop headers
 * (RFC 9110 §7.6.1) and every header the client names in `Connection` are dropped; so are
 * forwarding and internal headers a client could use to pose as the gateway, and any name
 * spelled with `_` (an alias of the hyphenated name to CGI-style upstreams). The gateway then
 * sets its own `X-Request-Id`, `X-Forwarded-For/-Proto/-Host` and `Host` — after the
 * `Connection` pruning, so `Connection: x-request-id` cannot remove them — and decides body
 * framing itself from what its own parser accepted. The refresh cookie never leaves the
 * gateway (it belongs to `/auth` only).
 *
 * Client-bound: hop-by-hop headers and those the upstream names in `Connection` are dropped,
 * and an upstream cannot set (or clear) the gateway's refresh cookie.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { REFRESH_COOKIE } from '../auth/cookie.js'

/** RFC 9110 §7.6.1, plus the non-standard `Proxy-Connection`, RFC 2616's `Trailers` spelling and h2c's `HTTP2-Settings` (RFC 7540 §3.2.1). */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection',
  'te', 'trailer', 'trailers', 'transfer-encoding', 'upgrade', 'http2-settings'
])

/** Header-name prefixes only the gateway may send upstream. */
export const INTERNAL_HEADER_PREFIXES: readonly string[] = ['x-latchkey-', 'x-forwarded-']

/**
 * Headers a client could use to claim another address, path or identity, which some
 * upstream stacks believe: dropped and, where the gateway has the answer, set by it.
 * `expect` is answered by the gateway itself (Node sends the 100) and `host` is the upstream's.
 */
export const CLIENT_DROPPED_HEADERS: ReadonlySet<string> = new Set([
  'forwarded', 'x-real-ip', 'x-client-ip', 'true-client-ip', 'cf-connecting-ip', 'x-cluster-client-ip',
  'client-ip', 'x-original-forwarded-for', 'x-original-url', 'x-rewrite-url', 'x-request-id', 'expect', 'host'
])

/** The `Connection` options named in one or more `Connection` header values, lower-cased. */
function connectionOptions (values: string | readonly string[] | undefined): Set<string> {
  const named = new Set<string>()
  if (values === undefined) return named
  for (const value of typeof values === 'string' ? [values] : values) {
    for (const token of value.split(',')) {
      const t = token.trim().toLowerCase()
      if (t !== '') named.add(t)
    }
  }
  return named
}

function isInternal (name: string): boolean {
  return INTERNAL_HEADER_PREFIXES.some(p => name.startsWith(p))
}

function cookieName (pair: string): string {
  const eq = pair.indexOf('=')
  return (eq === -1 ? pair : pair.slice(0, eq)).trim().toLowerCase()
}

const REFRESH_COOKIE_NAME = REFRESH_COOKIE.toLowerCase()

/** The `Cookie` header without the refresh cookie; undefined when nothing is left. */
export function withoutRefreshCookie (cookie: string): string | undefined {
  const kept = cookie.split(';').map(p => p.trim()).filter(p => p !== '' && cookieName(p) !== REFRESH_COOKIE_NAME)
  return kept.length === 0 ? undefined : kept.join('; ')
}

export interface ForwardingContext {
  readonly requestId: string
  /** The client's address: the peer, or behind TRUSTED_PROXIES the real client (client-origin.ts). */
  readonly clientIp: string | undefined
  readonly proto: 'http' | 'https'
  /** The host the client asked for, sent as `X-Forwarded-Host`. */
  readonly forwardedHost: string | undefined
  /** `host[:port]` of the upstream, sent as `Host`. */
  readonly upstreamHost: string
}

/** The headers sent upstream for a client request with `incoming` headers. */
export function upstreamRequestHeaders (incoming: IncomingHttpHeaders, ctx: ForwardingContext): IncomingHttpHeaders {
  const named = connectionOptions(incoming.connection)
  const out: IncomingHttpHeaders = {}
  for (const [name, value] of Object.entries(incoming)) {
    // A name with `_` is dropped, as nginx does (underscores_in_headers off): CGI, WSGI and PHP
    // map `X_Forwarded_For` onto the same variable as `X-Forwarded-For`, past every check here.
    if (value === undefined || name.includes('_') || HOP_BY_HOP_HEADERS.has(name) || named.has(name) || isInternal(name) || CLIENT_DROPPED_HEADERS.has(name)) continue
    if (name === 'content-length') continue
    if (name === 'cookie') {
      const kept = withoutRefreshCookie(Array.isArray(value) ? value.join('; ') : value)
      if (kept !== undefined) out.cookie = kept
      continue
    }
    out[name] = value
  }
  // Framing follows what the gateway's parser read, whatever `Connection` named: a
  // Content-Length body keeps its (validated) length; a body the client sent chunked has no
  // length here, and the forwarder's client (undici) sends a body of unknown length chunked,
  // never unframed, which would let its bytes be read upstream as a second request.
  if (incoming['transfer-encoding'] === undefined && incoming['content-length'] !== undefined) out['content-length'] = incoming['content-length']
  out.host = ctx.upstreamHost
  out['x-request-id'] = ctx.requestId
  if (ctx.clientIp !== undefined) out['x-forwarded-for'] = ctx.clientIp
  out['x-forwarded-proto'] = ctx.proto
  if (ctx.forwardedHost !== undefined) out['x-forwarded-host'] = ctx.forwardedHost
  return out
}

/**
 * The client-bound headers of an upstream response, as a flat `[name, value, ...]` list
 * (`writeHead` takes one), keeping the upstream's spelling and repetitions.
 * For a 101 the caller re-adds `Connection: Upgrade` and `Upgrade`; for a WebSocket
 * handshake going upstream, undici adds them itself (forwarder.ts `ws`).
 */
export function clientResponseHeaders (rawHeaders: readonly string[]): string[] {
  const named = new Set<string>()
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() === 'connection') {
      for (const t of connectionOptions(rawHeaders[i + 1] as string)) named.add(t)
    }
  }
  const out: string[] = []
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string
    const value = rawHeaders[i + 1] as string
    const lower = name.toLowerCase()
    if (HOP_BY_HOP_HEADERS.has(lower) || named.has(lower)) continue
    if (lower === 'set-cookie' && cookieName(value.split(';', 1)[0] as string) === REFRESH_COOKIE_NAME) continue
    out.push(name, value)
  }
  return out
}
