/**
 * Cross-site request refusal for the cookie routes. The refresh cookie is SameSite=Strict,
 * but a login CSRF or an old browser must still be refused at the server: a request whose
 * `Origin` is neither the gateway's own nor listed in CORS_ORIGINS, an `Origin: null`
 * (sandboxed frames, some redirects), or `Sec-Fetch-Site: cross-site` gets 403 before any
 * state changes. A request with no Origin at all (curl, server-to-server) is allowed: it
 * carries no ambient browser credentials it did not choose to send.
 *
 * Allowed origins also get CORS headers with credentials, and their preflights are answered.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { gatewayError } from '../errors.js'

/** How long a browser may cache a preflight answer. */
export const CORS_PREFLIGHT_MAX_AGE_S = 600

export interface OriginPolicy {
  /** The gateway's own origin (from ISSUER). */
  readonly own: string
  readonly allowed: ReadonlySet<string>
}

export function createOriginPolicy (own: string, corsOrigins: readonly string[]): OriginPolicy {
  return Object.freeze({ own, allowed: new Set([own, ...corsOrigins]) })
}

function headerValue (req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name]
  return Array.isArray(v) ? v[0] : v
}

/** preHandler for routes that read or set the refresh cookie. */
export function crossSiteGuard (policy: OriginPolicy) {
  return async function refuseCrossSite (req: FastifyRequest): Promise<void> {
    const origin = headerValue(req, 'origin')
    if (headerValue(req, 'sec-fetch-site') === 'cross-site' && (origin === undefined || !policy.allowed.has(origin) || origin === policy.own)) {
      throw gatewayError('GW_CROSS_SITE')
    }
    if (origin !== undefined && !policy.allowed.has(origin)) throw gatewayError('GW_CROSS_SITE')
  }
}

/** onRequest hook: CORS headers for listed origins (never `*`: the routes use credentials). */
export function corsHeaders (policy: OriginPolicy) {
  return async function cors (req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const origin = headerValue(req, 'origin')
    reply.header('Vary', 'Origin')
    if (origin === undefined || origin === policy.own || !policy.allowed.has(origin)) return
    reply.header('Access-Control-Allow-Origin', origin)
    reply.header('Access-Control-Allow-Credentials', 'true')
    if (req.method === 'OPTIONS') {
      reply.header('Access-Control-Allow-Methods', 'GET, POST, DELETE')
      reply.header('Access-Control-Allow-Headers', 'Authorization, Content-Type')
      reply.header('Access-Control-Max-Age', String(CORS_PREFLIGHT_MAX_AGE_S))
    }
  }
}
