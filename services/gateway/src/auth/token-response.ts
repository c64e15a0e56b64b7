/**
 * Turning a family into a token response: the access token (RFC 9068) and, for the OAuth
 * endpoint, the rotated refresh token in the body. Shared by the cookie flow and the
 * `refresh_token` / `password` grants so both follow the same family rules.
 */
import type { FastifyReply } from 'fastify'
import type { Clock } from '#shared/clock.js'
import type { AccessTokenIssuer } from '../keys/access-token.js'
import type { Family } from '../sessions/family-store.js'

export interface TokenBody {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  scope: string
  refresh_token?: string
}

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
