/**
 * The admin API for automation (docs/contract.md "Admin"): list and end a user's sessions.
 *
 *   GET    /admin/users/:name/sessions        → 200 [{id, client_id, created_at, last_used_at, user_agent, ip}]
 *   DELETE /admin/users/:name/sessions        → 200 {revoked: [sid...]}  (every session of the user)
 *   DELETE /admin/users/:name/sessions/:sid   → 204, or 404 if it is not a live session of the user
 *
 * Only a service token may call it: an access token from the client_credentials grant
 * (no session, `sub` = `client_id`) whose scope includes `latchkey:admin`. No token or a bad
 * one → 401; a user's token, or a service token without the scope → 403 (RFC 6750 §3.1
 * `insufficient_scope`). A user's token never qualifies, whatever its scope: users-file
 * scopes are not admin grants. Revocations go through the session service, so they reach
 * every replica's edge before the answer. Every call, refused ones included, leaves one
 * audit line (who, what, which user, status), never a token.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { GatewayConfig } from '../config.js'
import { gatewayError } from '../errors.js'
import type { UserDirectory, User } from '../identity/user-directory.js'
import type { AccessTokenVerifier } from '#shared/access-token-verifier.js'
import { authenticateBearer } from '../auth/bearer.js'
import { sessionView, type SessionService } from '../sessions/service.js'

export const ADMIN_SCOPE = 'latchkey:admin'

export interface AdminRoutesOptions {
  readonly config: GatewayConfig
  readonly sessions: SessionService
  readonly users: UserDirectory
  readonly verifier: AccessTokenVerifier
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The admin client that authenticated this request ('' until it has), for the audit line. */
    adminClient: string
  }
}

const nameParam = { type: 'string', minLength: 1, maxLength: 256 } as const
const sidParam = { type: 'string', minLength: 1, maxLength: 64 } as const

async function adminRoutes (app: FastifyInstance, opts: AdminRoutesOptions): Promise<void> {
  const { config, sessions, users, verifier } = opts

  app.decorateRequest('adminClient', '')
  app.addHook('onResponse', async (req, reply) => {
    const { name, sid } = (req.params ?? {}) as { name?: string, sid?: string }
    req.log.info({
      event: 'admin_call', method: req.method, route: req.routeOptions.url, user: name, sid, client: req.adminClient === '' ? undefined : req.adminClient, status: reply.statusCode
    }, 'admin call')
  })

  /** 401 without a valid, unrevoked access token; 403 unless it is a service token with the admin scope. */
  async function authorize (req: FastifyRequest): Promise<void> {
    // A service (client credentials) token with the admin scope: 403 insufficient_scope naming it otherwise.
    const claims = await authenticateBearer(req, verifier, config.audience, { kind: 'service', scopes: [ADMIN_SCOPE] })
    req.adminClient = claims.client_id
  }

  function userNamed (name: string): User {
    const user = users.getByUsername(name)
    if (user === undefined) throw gatewayError('GW_NOT_FOUND')
    return user
  }

  // Before the params are even validated: a caller without the right token learns nothing.
  app.addHook('onRequest', async (req, reply) => {
    reply.header('Cache-Control', 'no-store')
    await authorize(req)
  })

  app.get('/admin/users/:name/sessions', {
    schema: { params: { type: 'object', properties: { name: nameParam }, required: ['name'] } }
  }, async (req) => {
    const user = userNamed((req.params as { name: string }).name)
    return (await sessions.list(user.id)).map(sessionView)
  })

  app.delete('/admin/users/:name/sessions', {
    schema: { params: { type: 'object', properties: { name: nameParam }, required: ['name'] } }
  }, async (req) => {
    const user = userNamed((req.params as { name: string }).name)
    return { revoked: await sessions.revokeAllForUser(user.id, 'admin', req) }
  })

  app.delete('/admin/users/:name/sessions/:sid', {
    schema: { params: { type: 'object', properties: { name: nameParam, sid: sidParam }, required: ['name', 'sid'] } }
  }, async (req, reply) => {
    const { name, sid } = req.params as { name: string, sid: string }
    if (!(await sessions.revokeSession(userNamed(name).id, sid, 'admin', req))) throw gatewayError('GW_SESSION_NOT_FOUND')
    return reply.code(204).send()
  })
}

export default fp(adminRoutes, { name: 'latchkey-admin-routes', fastify: '5.x', encapsulate: true })
