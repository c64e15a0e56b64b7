/**
 * The browser flow (docs/contract.md "Browser flow"): login, refresh, logout, logout-all, sessions.
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
import type { GatewayEvents } from '../ops/events.js'
import type { LoginLimiter } from './login-limiter.js'
import { BROWSER_CLIENT_ID, sessionView, type SessionService } from '../sessions/service.js'
import { authenticateBearer } from './bearer.js'
import { clearAllRefreshCookies, clearRefreshCookie, refreshCookieValues, setRefreshCookie } from './cookie.js'
import { corsHeaders, createOriginPolicy, crossSiteGuard } from './origin-guard.js'
import { familyRemainingS, noStore } from './token-response.js'
import { checkPassword } from './password-check.js'

/** Auth bodies are a username and a password: anything bigger is not a login. */
export const AUTH_BODY_LIMIT_BYTES = 8 * 1024
// Defined beside the session service and the store; re-exported for existing importers.
export { BROWSER_CLIENT_ID } from '../sessions/service.js'
export { USER_AGENT_MAX_CHARS } from '../sessions/family-store.js'

export interface AuthRoutesOptions {
  readonly config: GatewayConfig
  readonly sessions: SessionService
  readonly users: UserDirectory
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

function seenOf (req: FastifyRequest): { ip: string, userAgent: string | undefined } {
  return { ip: req.ip, userAgent: req.headers['user-agent'] }
}

async function authRoutes (app: FastifyInstance, opts: AuthRoutesOptions): Promise<void> {
  const { config, sessions, users, verifier, clock, events, limiter } = opts
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

  /**
   * The one refresh cookie of the request, or undefined. Two or more (cookie tossing,
   * docs/contract.md "Browser flow") → 401 with every copy cleared: neither is trusted.
   */
  function presentedRefresh (req: FastifyRequest, reply: FastifyReply): string | undefined {
    const values = refreshCookieValues(req)
    if (values.length <= 1) return values[0]
    clearAllRefreshCookies(reply, secure, req.url.split('?')[0] ?? req.url)
    req.log.warn({ event: 'refresh_cookie_duplicated', count: values.length }, 'more than one refresh cookie: refused')
    throw gatewayError('GW_INVALID_GRANT')
  }

  app.post('/auth/login', { schema: loginSchema, preHandler: refuseCrossSite }, async (req, reply) => {
    const { username, password } = req.body as { username: string, password: string }
    const user = await checkPassword({ users, limiter, events }, req, username, password)
    if (user === null) throw gatewayError('GW_INVALID_CREDENTIALS')
    // A refresh cookie sent with a login is ignored: login always starts a new family.
    const issued = await sessions.create(req, { user, clientId: BROWSER_CLIENT_ID, scope: user.scope, seen: seenOf(req), grant: 'login' })
    setRefreshCookie(reply, issued.refreshToken, familyRemainingS(issued.family, clock), secure)
    noStore(reply)
    return issued.body
  })

  app.post('/auth/refresh', { preHandler: refuseCrossSite }, async (req, reply) => {
    const result = await sessions.refresh(req, presentedRefresh(req, reply), { clientId: BROWSER_CLIENT_ID, seen: seenOf(req) })
    if (!result.ok) failRefresh(reply, gatewayError('GW_INVALID_GRANT'))
    setRefreshCookie(reply, result.refreshToken, familyRemainingS(result.family, clock), secure)
    noStore(reply)
    return result.body
  })

  app.post('/auth/logout', { preHandler: refuseCrossSite }, async (req, reply) => {
    await sessions.revokeByToken(presentedRefresh(req, reply), { clientId: BROWSER_CLIENT_ID, reason: 'logout' }, req)
    clearRefreshCookie(reply, secure)
    return reply.code(204).send()
  })

  app.post('/auth/logout-all', async (req, reply) => {
    const claims = await authenticateBearer(req, verifier, config.audience)
    await sessions.revokeAllForUser(claims.sub, 'logout_all', req)
    clearRefreshCookie(reply, secure)
    return reply.code(204).send()
  })

  app.get('/auth/sessions', async (req, reply) => {
    const claims = await authenticateBearer(req, verifier, config.audience)
    const families = await sessions.list(claims.sub)
    reply.header('Cache-Control', 'no-store')
    // No client_id here: a browser's own list has always been these six fields.
    return families.map(f => {
      const { client_id: _client, ...view } = sessionView(f)
      // A session an upstream identity provider signed in says which (identity/oidc).
      return { ...view, current: f.sid === claims.sid, ...(f.provider === undefined ? {} : { provider: f.provider }) }
    })
  })

  app.delete('/auth/sessions/:id', {
    schema: { params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] } }
  }, async (req, reply) => {
    const claims = await authenticateBearer(req, verifier, config.audience)
    const { id } = req.params as { id: string }
    if (!(await sessions.revokeSession(claims.sub, id, 'session_delete', req))) throw gatewayError('GW_SESSION_NOT_FOUND')
    return reply.code(204).send()
  })
}

export default fp(authRoutes, {
  name: 'latchkey-auth-routes',
  fastify: '5.x',
  encapsulate: true
})
