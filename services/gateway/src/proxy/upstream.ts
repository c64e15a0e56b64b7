/**
 * Upstream targets and their connection pools' settings: each route's upstream parsed once at
 * start, not per request. The pools themselves (undici `Pool`, one per upstream origin) are
 * the forwarder's (forwarder.ts).
 */
import type { RouteConfig } from '../config.js'
import type { AdmissionRoute } from './admission.js'

/** Concurrent connections per upstream origin; requests beyond it queue in its pool. */
export const UPSTREAM_MAX_SOCKETS = 256
/**
 * Proxied requests one caller (a session, or a client's service tokens) may have in progress
 * at once. Well under `UPSTREAM_MAX_SOCKETS`: one caller trickling request bodies can hold
 * at most this many upstream sockets, never an upstream's whole pool (issue: 260 slow POSTs
 * took all 256 sockets from every other user).
 */
export const PROXY_MAX_IN_FLIGHT_PER_CALLER = 32
/**
 * How long an idle pooled upstream connection is kept when the upstream's `Keep-Alive` names
 * no timeout. Under Node's default server `keepAliveTimeout` (5 s), so the gateway lets go of
 * an idle connection before a Node upstream would close it under a request.
 */
export const UPSTREAM_IDLE_KEEP_ALIVE_MS = 4000
/** Connecting (TCP and TLS) to an upstream longer than this is a failure (502). */
export const UPSTREAM_CONNECT_TIMEOUT_MS = 10_000
/**
 * An upstream that sends nothing for this long (no response headers once the request is
 * sent, or a stalled body) is abandoned: 504 if nothing was answered yet, else the client
 * connection is cut.
 */
export const PROXY_TIMEOUT_MS = 30_000

/** Where a route's requests go. */
export interface Upstream {
  /** `scheme://host[:port]`: the key of its connection pool. */
  readonly origin: string
  /** A base path the request path is appended to; '' for none. */
  readonly basePath: string
  /** `Host` sent upstream: the upstream's own authority, as in its URL. */
  readonly hostHeader: string
}

export interface ProxyRoute extends AdmissionRoute {
  readonly config: RouteConfig
  /** Absent on a route that exists for forward-auth only (nothing is proxied to it). */
  readonly upstream: Upstream | undefined
}

function compileUpstream (prefix: string, upstream: string): Upstream {
  const url = new URL(upstream)
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`route ${prefix}: upstream must be http or https`)
  return Object.freeze({ origin: url.origin, basePath: url.pathname.replace(/\/+$/, ''), hostHeader: url.host })
}

export function compileRoute (config: RouteConfig): ProxyRoute {
  return Object.freeze({
    config,
    prefix: config.prefix,
    upstream: config.upstream === undefined ? undefined : compileUpstream(config.prefix, config.upstream),
    label: config.prefix,
    requirement: Object.freeze({ audience: config.audience, scopes: config.scopes })
  })
}

export type UpstreamErrorKind = 'refused' | 'unreachable' | 'timeout' | 'reset' | 'bad_response' | 'other'

/** Raised when an upstream response cannot be relayed (an invalid status or header). */
export class UpstreamResponseError extends Error {
  readonly code = 'LK_UPSTREAM_BAD_RESPONSE'
  constructor (cause: unknown) {
    super('upstream response cannot be relayed', { cause })
    this.name = 'UpstreamResponseError'
  }
}

/**
 * Sorted by errno, undici's or Node's error code, never by message. undici reports every
 * failure of a connection already in use (closed under a request, a protocol violation it
 * caught itself, such as a 101 to a plain request) as `UND_ERR_SOCKET`: a reset.
 */
export function classifyUpstreamError (err: unknown): UpstreamErrorKind {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code !== 'string') return 'other'
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return 'timeout'
    case 'ECONNREFUSED':
      return 'refused'
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'unreachable'
    case 'UND_ERR_SOCKET':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
      return 'reset'
    case 'LK_UPSTREAM_BAD_RESPONSE':
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
      return 'bad_response'
    default:
      return code.startsWith('HPE_') || code.startsWith('ERR_INVALID') || code.startsWith('ERR_HTTP') ? 'bad_response' : 'other'
  }
}
