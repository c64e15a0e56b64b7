/**
 * Bearer authentication for the gateway's own Bearer routes (logout-all, sessions),
 * RFC 6750 §2.1 header form only: tokens in query strings end up in logs.
 */
import type { FastifyRequest } from 'fastify'
import { gatewayError } from '../errors.js'
import type { AccessTokenVerifier, VerifiedAccessToken } from '../keys/access-token.js'
import type { RevokedSessions } from '../sessions/revocation.js'

/** RFC 6750 §3: a challenge on every 401 from a Bearer-protected route. */
export const BEARER_REALM = 'latchkey'

export function bearerChallenge (error?: string): string {
  return error === undefined ? `Bearer realm="${BEARER_REALM}"` : `Bearer realm="${BEARER_REALM}", error="${error}"`
}

export function bearerToken (req: FastifyRequest): string | undefined {
  const header = req.headers.authorization
  if (header === undefined) return undefined
  const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(header)
  return m === null ? '' : m[1]
}

/**
 * A valid access token of a session that has not been revoked: a signed-out session's
 * token must not list sessions or sign the user out everywhere for the rest of its lifetime.
 */
export async function authenticateBearer (req: FastifyRequest, verifier: AccessTokenVerifier, audience: string, revoked: RevokedSessions): Promise<VerifiedAccessToken> {
  const token = bearerToken(req)
  if (token === undefined) throw gatewayError('GW_INVALID_TOKEN', { headers: { 'WWW-Authenticate': bearerChallenge() } })
  let claims: VerifiedAccessToken
  try {
    claims = await verifier.verify(token, { audience })
  } catch (err) {
    throw gatewayError('GW_INVALID_TOKEN', { cause: err, headers: { 'WWW-Authenticate': bearerChallenge('invalid_token') } })
  }
  if (claims.sid !== undefined && revoked.has(claims.sid)) {
    throw gatewayError('GW_INVALID_TOKEN', { headers: { 'WWW-Authenticate': bearerChallenge('invalid_token') } })
  }
  return claims
}
