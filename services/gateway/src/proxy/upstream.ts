/**
 * Upstream targets and connection pools: one keep-alive agent per scheme shared by every
 * route, and each route's target parsed once at start, not per request.
 */
import http from 'node:http'
import https from 'node:https'
import type { RouteConfig } from '../config.js'
import type { AdmissionRoute } from './admission.js'

/** Concurrent sockets per upstream host:port; requests beyond it queue in the agent. */
export const UPSTREAM_MAX_SOCKETS = 256
/**
 * Proxied requests one caller (a session, or a client's service tokens) may have in progress
 * at once. Well under `UPSTREAM_MAX_SOCKETS`: one caller trickling request bodies can hold
 * at most this many upstream sockets, never an upstream's whole pool (issue: 260 slow POSTs
 * took all 256 sockets from every other user).
 */
export const PROXY_MAX_IN_FLIGHT_PER_CALLER = 32
/** Idle keep-alive sockets kept per upstream host:port. */
export const UPSTREAM_MAX_FREE_SOCKETS = 64
/** Reuse upstream connections: a new TCP (and TLS) handshake per request would dominate a proxy hop. */
export const UPSTREAM_KEEP_ALIVE = true
/** TCP keep-alive probes on idle pooled sockets start after this long. */
export const UPSTREAM_KEEP_ALIVE_MS = 1000
/**
 * An upstream that sends nothing for this long (no response headers, or a stalled body)
 * is abandoned: 504 if nothing was answered yet, else the client connection is cut.
 */
export const PROXY_TIMEOUT_MS = 30_000

export interface UpstreamAgents {
  readonly http: http.Agent
  readonly https: https.Agent
  destroy (): void
}

export function createUpstreamAgents (): UpstreamAgents {
  const options = {
    keepAlive: UPSTREAM_KEEP_ALIVE,
    keepAliveMsecs: UPSTREAM_KEEP_ALIVE_MS,
    maxSockets: UPSTREAM_MAX_SOCKETS,
    maxFreeSockets: UPSTREAM_MAX_FREE_SOCKETS,
    // Most recently used first: the socket least likely to have hit the upstream's idle timeout.
    scheduling: 'lifo' as const
  }
  const agents = { http: new http.Agent(options), https: new https.Agent(options) }
  return { ...agents, destroy () { agents.http.destroy(); agents.https.destroy() } }
}

/** The fields of a target http-proxy copies into `http.request` options. */
export interface UpstreamTarget {
  readonly protocol: 'http:' | 'https:'
  readonly host: string
  readonly hostname: string
  readonly port: string
  /** A base path the request path is appended to; '' for none. */
  readonly path: string
}

/** Where a route's requests go, and through which pool. */
export interface Upstream {
  readonly target: UpstreamTarget
  /** `Host` sent upstream: the upstream's own authority, as in its URL. */
  readonly hostHeader: string
  readonly agent: http.Agent
}

export interface ProxyRoute extends AdmissionRoute {
  readonly config: RouteConfig
  /** Absent on a route that exists for forward-auth only (nothing is proxied to it). */
  readonly upstream: Upstream | undefined
}

function compileUpstream (prefix: string, upstream: string, agents: UpstreamAgents): Upstream {
  const url = new URL(upstream)
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`route ${prefix}: upstream must be http or https`)
  const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1')
  const target: UpstreamTarget = Object.freeze({
    protocol: url.protocol,
    host: hostname,
    hostname,
    port: url.port === '' ? (url.protocol === 'https:' ? '443' : '80') : url.port,
    path: url.pathname.replace(/\/+$/, '')
  })
  return Object.freeze({ target, hostHeader: url.host, agent: url.protocol === 'https:' ? agents.https : agents.http })
}

export function compileRoute (config: RouteConfig, agents: UpstreamAgents): ProxyRoute {
  return Object.freeze({
    config,
    prefix: config.prefix,
    upstream: config.upstream === undefined ? undefined : compileUpstream(config.prefix, config.upstream, agents),
    label: config.prefix,
    requirement: Object.freeze({ audience: config.audience, scopes: config.scopes })
  })
}

export type UpstreamErrorKind = 'refused' | 'unreachable' | 'timeout' | 'reset' | 'bad_response' | 'other'

/** Raised by the gateway when the upstream stays silent for the proxy timeout. */
export class UpstreamTimeoutError extends Error {
  readonly code = 'LK_UPSTREAM_TIMEOUT'
  constructor () {
    super('upstream timed out')
    this.name = 'UpstreamTimeoutError'
  }
}

/** Raised when an upstream response cannot be relayed (an invalid status or header). */
export class UpstreamResponseError extends Error {
  readonly code = 'LK_UPSTREAM_BAD_RESPONSE'
  constructor (cause: unknown) {
    super('upstream response cannot be relayed', { cause })
    this.name = 'UpstreamResponseError'
  }
}

/** Sorted by errno / Node error code, never by message. */
export function classifyUpstreamError (err: unknown): UpstreamErrorKind {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code !== 'string') return 'other'
  switch (code) {
    case 'LK_UPSTREAM_TIMEOUT':
      return 'timeout'
    case 'ECONNREFUSED':
      return 'refused'
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ETIMEDOUT':
      return 'unreachable'
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
      return 'reset'
    case 'LK_UPSTREAM_BAD_RESPONSE':
      return 'bad_response'
    default:
      return code.startsWith('HPE_') || code.startsWith('ERR_INVALID') || code.startsWith('ERR_HTTP') ? 'bad_response' : 'other'
  }
}
