/**
 * Turning a family into a token response: the access token (RFC 9068) and, for the OAuth
 * endpoint, the rotated refresh token in the body. Shared by the cookie flow and the
 * `refresh_token` / `password` grants so both follow the same family rules.
 */
import type { FastifyReply } from 'fastify'
import type { Clock } from '#shared/clock.js'
import type { AccessTokenIssuer } from '../keys/access-token.js'
import type { Family } from '../sessions/family-store.js'
import type { ExchangedTokenBody } from '../oauth/token-exchange.js'

export interface TokenBody {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  scope: string
  refresh_token?: string
}

/**
 * A 200 token response (RFC 6749 §5.1, RFC 8693 §2.2.1) as Fastify's response schema, so
 * that fast-json-stringify writes it rather than JSON.stringify. `access_token` is written
 * without an escaping scan (`format: 'unsafe'`): it is a JWS compact serialisation
 * (RFC 7515 §7.1), base64url segments and dots, made by `AccessTokenIssuer`, so there is
 * nothing in it to escape, and scanning its ~450 characters cost more than the rest of the
 * body. A field the schema does not name would be left out of the answer: the `satisfies`
 * below makes every field of the bodies a property here.
 */
export const TOKEN_RESPONSE_SCHEMA = {
  type: 'object',
  properties: {
    access_token: { type: 'string', format: 'unsafe' },
    token_type: { type: 'string' },
    expires_in: { type: 'integer' },
    scope: { type: 'string' },
    refresh_token: { type: 'string' },
    issued_token_type: { type: 'string' }
  } satisfies Record<keyof ExchangedTokenBody, unknown>,
  required: ['access_token', 'token_type']
} as const

/** RFC 6749 §5.1: token responses must not be cached. */
export function noStore (reply: FastifyReply): void {
  reply.header('Cache-Control', 'no-store')
  reply.header('Pragma', 'no-cache')
}

/** Seconds the family has left: the sooner of its idle and absolute expiry. */
export function familyRemainingS (family: Family, clock: Clock): number {
  return Math.max(0, Math.round((Math.min(family.idleExpiresAt, family.absoluteExpiresAt) - clock.now()) / 1000))
}

export function accessTokenForFamily (issuer: AccessTokenIssuer, family: Family, audience: string): TokenBody {
  const { token, expiresIn } = issuer.issue({
    sub: family.userId,
    aud: audience,
    client_id: family.clientId,
    scope: family.scope,
    sid: family.sid
  })
  return { access_token: token, token_type: 'Bearer', expires_in: expiresIn, scope: family.scope }
}
