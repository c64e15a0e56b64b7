/**
 * Who the client is, behind `TRUSTED_PROXIES`: the address, scheme and host the request was
 * first made with. Fastify computes `request.ip/protocol/host` with the same list and the same
 * library (@fastify/proxy-addr, app.ts `trustProxy`); the proxy needs them for requests the
 * fast lane takes before Fastify sees them, so both lanes ask this.
 *
 * - Address: the rightmost `X-Forwarded-For` hop that is not a trusted proxy, walking left
 *   from the peer only while each hop is trusted (proxy-addr); with no trusted proxies, the peer.
 * - Scheme and host: the last `X-Forwarded-Proto`/`-Host` value, believed only when the peer is
 *   trusted (as Fastify does); a scheme other than http/https is ignored.
 */
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import proxyAddr from '@fastify/proxy-addr'

export interface ClientOrigin {
  readonly ip: string | undefined
  readonly proto: 'http' | 'https'
  /** The `Host` the client asked for (RFC 9110 §7.2), if any. */
  readonly host: string | undefined
}

export type ClientOriginOf = (req: IncomingMessage) => ClientOrigin

function lastEntry (value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined
  const joined = Array.isArray(value) ? value.join(',') : value
  const entry = joined.slice(joined.lastIndexOf(',') + 1).trim()
  return entry === '' ? undefined : entry
}

function socketProto (req: IncomingMessage): 'http' | 'https' {
  return (req.socket as Socket & { encrypted?: boolean }).encrypted === true ? 'https' : 'http'
}

export function clientOrigin (trustedProxies: readonly string[]): ClientOriginOf {
  if (trustedProxies.length === 0) {
    return (req) => ({ ip: req.socket.remoteAddress, proto: socketProto(req), host: req.headers.host })
  }
  const trusted = proxyAddr.compile([...trustedProxies])
  return (req) => {
    const peer = req.socket.remoteAddress
    if (peer === undefined || !trusted(peer, 0)) return { ip: peer, proto: socketProto(req), host: req.headers.host }
    const forwardedProto = lastEntry(req.headers['x-forwarded-proto'])?.toLowerCase()
    return {
      ip: proxyAddr(req, trusted),
      proto: forwardedProto === 'https' || forwardedProto === 'http' ? forwardedProto : socketProto(req),
      host: lastEntry(req.headers['x-forwarded-host']) ?? req.headers.host
    }
  }
}
