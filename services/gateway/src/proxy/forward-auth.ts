/**
 * Forward-auth (docs/contract.md "Forward-auth"): `/auth/verify` and `/auth/verify/*`, any method, for an
 * ingress that carries the bytes itself and asks the gateway only for the decision — nginx
 * `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`. The decision
 * is the proxy's own (admission.ts), applied to the *original* request.
 *
 * The original request, from whichever of these arrives:
 * - `X-Forwarded-Uri` + `X-Forwarded-Method` (Traefik, Caddy; the shipped nginx config sets
 *   them too);
 * - `X-Original-URI` + `X-Original-Method` (the usual nginx `auth_request` configs);
 * - the path after `/auth/verify` and this request's own method (Envoy `ext_authz` with
 *   `path_prefix: /auth/verify`).
 * `X-Forwarded-Uri` wins, then `X-Original-URI`, then the path suffix; but when more than one
 * arrives they must name the same target (and method), else the answer is 403: a client
 * behind a proxy that sets one of them may have sent another, and no order would be safe
 * against every proxy. Every shipped config overwrites the ones it sets.
 *
 * Answers: 200 with the identity for the upstream (`X-Auth-Request-User` = sub, `-Scope`,
 * `-Client-Id`, `-Sid`; the prefix is FORWARD_AUTH_HEADER_PREFIX); 401/403 with the RFC 6750
 * challenge, which the ingress passes on; anything else the proxy would refuse (no route, a
 * path that leaves its prefix, no original URI) is 403, because nginx turns any other status
 * of an auth subrequest into a 500. With TRUSTED_PROXIES set, only those peers may ask (403).
 *
 * Caching: a 200 says `max-age=N, must-revalidate`, N at most `FORWARD_AUTH_MAX_AGE_S` (the
 * promise that a revocation bites everywhere within 1 s) and never past the token's `exp`;
 * refusals are `no-store`. Not `private`: the ingress's cache is a shared cache, and nginx
 * stores nothing marked private; `must-revalidate` is what lets a shared cache store an answer
 * to a request with `Authorization` (RFC 9111 §3.5) and forbids serving it stale (§5.2.2.2). An ingress that caches must key on
 * method + original URI + Authorization (the shipped nginx stanza does). nginx counts cache
 * lifetimes in whole seconds, so with its cache on a revocation bites within 2 s.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import proxyAddr from '@fastify/proxy-addr'
import type { Clock } from '#shared/clock.js'
import { errorBody, type LatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import type { Admission } from './admission.js'
import { answerTraceparent } from './trace-context.js'
import type { ProxyRoute } from './upstream.js'

export const FORWARD_AUTH_PATH = '/auth/verify'
/** The revocation promise: an answer may be reused for at most this long. */
export const FORWARD_AUTH_MAX_AGE_S = 1

export interface ForwardAuthOptions {
  readonly admission: Admission<ProxyRoute>
  readonly clock: Clock
  /** TRUSTED_PROXIES; when non-empty, only these peers may ask. */
  readonly trustedProxies: readonly string[]
  readonly headerPrefix: string
}

interface Original { readonly method: string, readonly target: string }

function single (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? (value.length === 1 ? value[0] : '') : value
}

/** The original method and target, or undefined when none arrived or the sources disagree. */
export function originalRequest (req: FastifyRequest): Original | undefined {
  const url = req.raw.url ?? ''
  const suffix = url.startsWith(`${FORWARD_AUTH_PATH}/`) ? url.slice(FORWARD_AUTH_PATH.length) : undefined
  const candidates: Original[] = []
  const forwarded = single(req.headers['x-forwarded-uri'])
  const original = single(req.headers['x-original-uri'])
  if (forwarded !== undefined) candidates.push({ target: forwarded, method: single(req.headers['x-forwarded-method']) ?? req.method })
  if (original !== undefined) candidates.push({ target: original, method: single(req.headers['x-original-method']) ?? req.method })
  if (suffix !== undefined) candidates.push({ target: suffix, method: req.method })
  const [first] = candidates
  if (first === undefined || !first.target.startsWith('/')) return undefined
  if (!candidates.every(c => c.target === first.target && c.method.toUpperCase() === first.method.toUpperCase())) return undefined
  return { method: first.method.toUpperCase(), target: first.target }
}

async function forwardAuth (app: FastifyInstance, options: ForwardAuthOptions): Promise<void> {
  const { admission, clock } = options
  const trusted = options.trustedProxies.length === 0 ? undefined : proxyAddr.compile([...options.trustedProxies])
  const names = {
    user: `${options.headerPrefix}User`,
    scope: `${options.headerPrefix}Scope`,
    clientId: `${options.headerPrefix}Client-Id`,
    sid: `${options.headerPrefix}Sid`
  }

  function refuse (reply: FastifyReply, err: LatchkeyError): FastifyReply {
    const status = err.statusCode === 401 || err.statusCode === 403 ? err.statusCode : 403
    const answer = status === err.statusCode ? err : gatewayError('GW_FORWARD_AUTH_DENIED')
    return reply.code(status).headers(answer.headers).header('cache-control', 'no-store').send(errorBody(answer))
  }

  async function verify (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const peer = request.raw.socket.remoteAddress
    if (trusted !== undefined && (peer === undefined || !trusted(peer, 0))) {
      request.log.info({ peer }, 'forward-auth asked by an untrusted peer')
      return refuse(reply, gatewayError('GW_FORWARD_AUTH_DENIED'))
    }
    const original = originalRequest(request)
    if (original === undefined) return refuse(reply, gatewayError('GW_FORWARD_AUTH_DENIED', { description: 'The original request is missing or ambiguous.' }))
    const decision = await admission.decide(original.target, request.headers.authorization)
    if (decision.outcome === 'no_route' || decision.outcome === 'undecided') return refuse(reply, gatewayError('GW_FORWARD_AUTH_DENIED'))
    if (decision.outcome === 'refused') {
      request.log.debug({ route: decision.route?.label, reason: decision.reason }, 'forward-auth refused')
      return refuse(reply, decision.error)
    }
    const { token } = decision
    const maxAge = Math.min(FORWARD_AUTH_MAX_AGE_S, Math.floor(token.exp - clock.now() / 1000))
    reply.header('cache-control', maxAge > 0 ? `max-age=${maxAge}, must-revalidate` : 'no-store')
    reply.header(names.user, token.sub).header(names.scope, token.scope).header(names.clientId, token.client_id)
    if (token.sid !== undefined) reply.header(names.sid, token.sid)
    reply.header('traceparent', answerTraceparent(request.headers))
    return reply.code(200).send()
  }

  for (const url of [FORWARD_AUTH_PATH, `${FORWARD_AUTH_PATH}/*`]) {
    app.route({
      // Any method: Envoy asks with the original one.
      method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
      url,
      exposeHeadRoute: false,
      // Decided before any body is read or parsed (Envoy may send the original body).
      onRequest: verify,
      // Never reached: the onRequest hook always answers.
      handler: async () => { throw gatewayError('GW_INTERNAL') }
    })
  }
}

/** Registered by the proxy plugin (same admission, same route table); see the module comment. */
export const forwardAuthRoutes = fp(forwardAuth, { name: 'latchkey-forward-auth', fastify: '5.x' })
