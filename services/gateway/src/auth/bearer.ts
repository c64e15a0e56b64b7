/**
 * Bearer access tokens at the gateway: the one `AccessTokenVerifier` (shared) set up over
 * the gateway's own keys and edge revocation, and the check its own Bearer routes
 * (logout-all, sessions, admin) run. The proxy and forward-auth reach the same verifier
 * through proxy/admission.ts; there is no other access-token check in the gateway.
 */
import type { FastifyRequest } from 'fastify'
import type { Clock } from '#shared/clock.js'
import { type AccessRequirement, type AccessToken, AccessTokenVerifier } from '#shared/access-token-verifier.js'
import type { SigningKeys } from '../keys/signing-keys.js'
import { signingKeyResolver } from '../keys/verification-keys.js'

/** Edge revocation, asked in memory per request (sessions/revocation.ts). */
export interface RevokedSids {
  has (sid: string): boolean
}

export interface GatewayVerifierOptions {
  readonly keys: SigningKeys
  readonly issuer: string
  /** Every audience the gateway serves (its own and its routes'), asked per full verification. */
  readonly audiences: () => readonly string[]
  readonly revoked: RevokedSids
  readonly clock?: Clock
}

/**
 * One verifier per app, so one verified-token cache: it accepts any audience the gateway
 * serves, and each caller then names the audience of the place being entered
 * (`authorize`), so a token for one route's audience never opens another.
 * A signed-out session's tokens are refused at once, on cache hits too.
 */
export function createGatewayVerifier (options: GatewayVerifierOptions): AccessTokenVerifier {
  const { revoked } = options
  return new AccessTokenVerifier({
    keys: signingKeyResolver(options.keys),
    issuer: options.issuer,
    audience: options.audiences,
    clock: options.clock,
    isRevoked: (token) => token.sid !== undefined && revoked.has(token.sid)
  })
}

/**
 * A valid access token for `audience` (RFC 6750 §2.1 header form only) whose session has not
 * been revoked at the edge: a signed-out session's token must not list sessions or sign the
 * user out everywhere for the rest of its lifetime. Throws the verifier's `LatchkeyError`s,
 * which carry their RFC 6750 §3 `WWW-Authenticate` challenge.
 */
export async function authenticateBearer (req: FastifyRequest, verifier: AccessTokenVerifier, audience: string, requirement: Omit<AccessRequirement, 'audience'> = {}): Promise<AccessToken> {
  const token = await verifier.verifyAuthorization(req.headers.authorization)
  verifier.authorize(token, { ...requirement, audience })
  return token
}
