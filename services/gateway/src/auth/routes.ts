/**
 * The browser flow (SPEC "Browser flow"): login, refresh, logout, logout-all, sessions.
 * The refresh token lives only in the `lk_refresh` cookie; bodies carry access tokens.
 */
import fp from 'fastify-plugin'
import cookie from '@fastify/cookie'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Clock } from '#shared/clock.js'
import type { GatewayConfig } from '../config.js'
import { gatewayError } from '../errors.js'
import type { UserDirectory } from '../identity/user-directory.js'
import type { AccessTokenVerifier } from '#shared/access-token-verifier.js'
import type { AccessTokenIssuer } from '../keys/access-token.js'
import type { FamilyStore, RotateResult } from '../sessions/family-store.js'
import { parseRefreshToken } from '../sessions/refresh-token.js'
import type { GatewayEvents } from '../ops/events.js'
import type { LoginLimiter } from './login-limiter.js'
import { authenticateBearer } from './bearer.js'
import { clearRefreshCookie, REFRESH_COOKIE, setRefreshCookie } from './cookie.js'
import { corsHeaders, createOriginPolicy, crossSiteGuard } from './origin-guard.js'
import { accessTokenForFamily, familyRemainingS, noStore } from './token-response.js'

/** Auth bodies are a username and a password: anything bigger is not a login. */
export const AUTH_BODY_LIMIT_BYTES = 8 * 1024
/** The client id browser sessions are issued under (RFC 9068 `client_id`). */
export const BROWSER_CLIENT_ID = 'latchkey-browser'
/** Longest user agent kept with a session. */
export const USER_AGENT_MAX_CHARS = 200

export interface AuthRoutesOptions {
  readonly config: GatewayConfig
  readonly store: FamilyStore
  readonly users: UserDirectory
  readonly issuer: AccessTokenIssuer
  readonly verifier: AccessTokenVerifier
  readonly clock: Clock
  readonly events: GatewayEvents
  readonly limiter: LoginLimiter
}

const loginSchema = {
  body: {
    type: 'object',
    required: ['username', 'password'],
    properties: {
      username: { type: 'string', minLength: 1, maxLength: 256 },
      password: { type: 'string', minLength: 1, maxLength: 1024 }
    }
  }
} as const

function userAgentOf (req: FastifyRequest): string {
  return (req.headers['user-agent'] ?? '').slice(0, USER_AGENT_MAX_CHARS)
}

async function authRoutes (app: FastifyInstance, opts: AuthRoutesOptions): Promise<void> {
  const { config, store, users, issuer, verifier, clock, events, limiter } = opts
  const policy = createOriginPolicy(config.origin, config.corsOrigins)
  const refuseCrossSite = crossSiteGuard(policy)
  const secure = config.cookieSecure

  // Cookies are parsed here only: the refresh cookie is scoped to /auth, and parsing every
  // proxied request's Cookie header would be work for nothing on the hot path.
  await app.register(cookie)
  // Only JSON reaches these routes: a text/plain POST is how a cross-site <form> would
  // arrive without a preflight, so it is refused with 415 rather than parsed.
  app.removeContentTypeParser(['text/plain'])
  app.addHook('onRoute', (route) => { route.bodyLimit ??= AUTH_BODY_LIMIT_BYTES })
  app.addHook('onRequest', corsHeaders(policy))
  app.options('/auth/*', async (_req, reply) => reply.code(204).send())

  function failRefresh (reply: FastifyReply, err: Error): never {
    clearRefreshCookie(reply, secure)
    throw err
  }

  app.post('/auth/login', { schema: loginSchema, preHandler: refuseCrossSite }, async (req, reply) => {
    const { username, password } = req.body as { username: string, password: string }
    await limiter.check(req, username)
    const user = await users.authenticate(username, password)
    if (user === null) {
      events.loginFailed(req, username)
      throw gatewayError('GW_INVALID_CREDENTIALS')
    }
    // A refresh cookie sent with a login is ignored: login always starts a new family.
    const { token, family } = await store.create({
      userId: user.id, clientId: BROWSER_CLIENT_ID, scope: user.scope, userAgent: userAgentOf(req), ip: req.ip
    })
    const body = await accessTokenForFamily(issuer, family, config.audience)
    events.loginSucceeded(req, user.id, family.sid)
    events.tokenIssued('login')
    setRefreshCookie(reply, token.raw, familyRemainingS(family, clock), secure)
    noStore(reply)
    return body
  })

  app.post('/auth/refresh', { preHandler: refuseCrossSite }, async (req, reply) => {
    const presented = parseRefreshToken(req.cookies[REFRESH_COOKIE])
    if (presented === null) {
      events.refreshed(req, 'invalid')
      failRefresh(reply, gatewayError('GW_INVALID_GRANT'))
    }
    const result: RotateResult = await store.rotate(presented, { ip: req.ip, userAgent: userAgentOf(req), clientId: BROWSER_CLIENT_ID })
    if (result.kind === 'reuse') {
      events.reuseDetected(req, result.sid, result.userId)
      failRefresh(reply, gatewayError('GW_INVALID_GRANT'))
    }
    if (result.kind === 'invalid') {
      events.refreshed(req, 'invalid')
      failRefresh(reply, gatewayError('GW_INVALID_GRANT'))
    }
    const body = await accessTokenForFamily(issuer, result.family, config.audience)
    events.refreshed(req, result.kind, result.family.sid)
    events.tokenIssued('refresh_token')
    setRefreshCookie(reply, result.token.raw, familyRemainingS(result.family, clock), secure)
    noStore(reply)
    return body
  })

  app.post('/auth/logout', { preHandler: refuseCrossSite }, async (req, reply) => {
    const presented = parseRefreshToken(req.cookies[REFRESH_COOKIE])
    if (presented !== null) {
      const revoked = await store.revokeByToken(presented, { clientId: BROWSER_CLIENT_ID })
      if (revoked !== null) events.revoked(req, 'logout', [revoked.sid], revoked.userId)
    }
    clearRefreshCookie(reply, secure)
    return reply.code(204).send()
  })

  app.post('/auth/logout-all', async (req, reply) => {
    const claims = await authenticateBearer(req, verifier, config.audience)
    const sids = await store.revokeAllForUser(claims.sub)
    events.revoked(req, 'logout_all', sids, claims.sub)
    clearRefreshCookie(reply, secure)
    return reply.code(204).send()
  })

  app.get('/auth/sessions', async (req, reply) => {
    const claims = await authenticateBearer(req, verifier, config.audience)
    const families = await store.listForUser(claims.sub)
    reply.header('Cache-Control', 'no-store')
    return families.map(f => ({
      id: f.sid,
      created_at: new Date(f.createdAt).toISOString(),
      last_used_at: new Date(f.lastUsedAt).toISOString(),
      user_agent: f.userAgent,
      ip: f.ip,
      current: f.sid === claims.sid
    }))
  })

  app.delete('/auth/sessions/:id', {
    schema: { params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] } }
  }, async (req, reply) => {
    const claims = await authenticateBearer(req, verifier, config.audience)
    const { id } = req.params as { id: string }
    if (!(await store.revokeSession(claims.sub, id))) throw gatewayError('GW_SESSION_NOT_FOUND')
    events.revoked(req, 'session_delete', [id], claims.sub)
    return reply.code(204).send()
  })
}

export default fp(authRoutes, {
  name: 'latchkey-auth-routes',
  fastify: '5.x',
  encapsulate: true
})
