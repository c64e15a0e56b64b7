/**
 * POST /oauth/revoke (RFC 7009): revokes the family of a refresh token.
 * - §2.2: an invalid token (unknown, expired, already revoked, garbage, any string with two
 *   dots that is not a live access token of ours) gets 200: the client cannot act on the
 *   difference, and an attacker must not learn which tokens exist.
 * - §2.1: a token issued to another client is refused, not silently ignored: without client
 *   credentials (a confidential client's token needs its authentication) → 401
 *   invalid_client; with another client's → 400 unauthorized_client.
 * - §2.2.1: a live access token is refused with `unsupported_token_type`: access tokens are
 *   self-contained JWTs, and revoking a session by one would let any upstream that sees it
 *   sign the user out.
 */
import type { FastifyInstance } from 'fastify'
import type { GatewayConfig } from '../config.js'
import { gatewayError } from '../errors.js'
import { parseRefreshToken } from '../sessions/refresh-token.js'
import { BROWSER_CLIENT_ID, type SessionService } from '../sessions/service.js'
import { noStore } from '../auth/token-response.js'
import { type ClientAuthenticator, invalidClient } from './client-auth.js'
import { requireParam, type FormParams } from './form-body.js'
import type { AccessTokenCheck } from './introspect-route.js'

export interface RevokeRouteOptions {
  readonly config: GatewayConfig
  readonly sessions: SessionService
  readonly clientAuth: ClientAuthenticator
  readonly checkAccessToken: AccessTokenCheck
}

export function registerRevokeRoute (app: FastifyInstance, opts: RevokeRouteOptions): void {
  const { config, sessions, clientAuth, checkAccessToken } = opts
  app.post('/oauth/revoke', async (req, reply) => {
    noStore(reply)
    const form: FormParams = (req.body as FormParams | undefined) ?? {}
    const client = await clientAuth.authenticate(req, form)
    const token = requireParam(form, 'token')
    // `token_type_hint` (§2.1) needs no lookup: the two kinds have disjoint formats.
    const presented = parseRefreshToken(token)
    if (presented === null) {
      // User tokens carry AUDIENCE; a client's service tokens one of its own audiences.
      const audiences = [...new Set([config.audience, ...(client?.audiences ?? [])])]
      if (await checkAccessToken(token, audiences) !== null) throw gatewayError('GW_UNSUPPORTED_TOKEN_TYPE')
      return reply.code(200).send()
    }
    const owner = client?.id ?? BROWSER_CLIENT_ID
    const family = await sessions.lookup(presented)
    if (family !== null && family.clientId !== owner) {
      if (client === null) throw invalidClient()
      throw gatewayError('GW_TOKEN_OF_ANOTHER_CLIENT')
    }
    // The store checks the owner again, atomically with the revocation.
    await sessions.revokeByToken(token, { clientId: owner, reason: 'revoke' }, req)
    return reply.code(200).send()
  })
}
