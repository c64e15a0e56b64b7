/**
 * POST /oauth/revoke (RFC 7009): revokes the family of a refresh token. Invalid or unknown
 * tokens still get 200 (§2.2: the client cannot act on the difference, and an attacker must
 * not learn which tokens exist). Access tokens are self-contained JWTs and are refused with
 * `unsupported_token_type` (§2.2.1): revoking a session by an access token would let any
 * upstream that sees one sign the user out.
 */
import type { FastifyInstance } from 'fastify'
import { gatewayError } from '../errors.js'
import { parseRefreshToken } from '../sessions/refresh-token.js'
import { BROWSER_CLIENT_ID, type SessionService } from '../sessions/service.js'
import { noStore } from '../auth/token-response.js'
import type { ClientAuthenticator } from './client-auth.js'
import { param, requireParam, type FormParams } from './form-body.js'

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/

export function registerRevokeRoute (app: FastifyInstance, opts: { sessions: SessionService, clientAuth: ClientAuthenticator }): void {
  const { sessions, clientAuth } = opts
  app.post('/oauth/revoke', async (req, reply) => {
    noStore(reply)
    const form: FormParams = (req.body as FormParams | undefined) ?? {}
    const client = await clientAuth.authenticate(req, form)
    const token = requireParam(form, 'token')
    const hint = param(form, 'token_type_hint')
    const presented = parseRefreshToken(token)
    if (presented === null) {
      if (hint === 'access_token' || JWT_SHAPE.test(token)) throw gatewayError('GW_UNSUPPORTED_TOKEN_TYPE')
      return reply.code(200).send()
    }
    // §2.1: a client may revoke only its own tokens; another client's token is left alone.
    await sessions.revokeByToken(token, { clientId: client?.id ?? BROWSER_CLIENT_ID, reason: 'revoke' }, req)
    return reply.code(200).send()
  })
}
