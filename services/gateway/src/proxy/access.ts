/**
 * Who may pass a proxy route: a valid access token, verified in process against the
 * gateway's own public keys (no JWKS fetch, no Redis), whose audience is the route's and
 * whose scopes cover the route's, and whose session (`sid`) has not been revoked at the edge.
 *
 * One shared verifier per app (one verified-token cache): it accepts any route's audience,
 * and the route's own audience is then checked here, so a token for one route's audience
 * never opens another route.
 */
import { errors as joseErrors, type JWTVerifyGetKey } from 'jose'
import type { Clock } from '#shared/clock.js'
import { type AccessToken, AccessTokenVerifier, hasScopes } from '#shared/access-token-verifier.js'
import { sharedError } from '#shared/http-errors.js'
import type { RouteConfig } from '../config.js'
import type { SigningKeys } from '../keys/signing-keys.js'

export interface RevokedSids {
  has (sid: string): boolean
}

export interface ProxyAccessOptions {
  readonly routes: readonly RouteConfig[]
  readonly keys: SigningKeys
  readonly issuer: string
  readonly revoked: RevokedSids
  readonly clock?: Clock
}

/**
 * Keys by kid from the gateway's own, already-imported key set; the alg is pinned to the
 * key's, so a token header cannot choose it (RFC 8725 §3.1).
 */
export function localKeys (keys: SigningKeys): JWTVerifyGetKey {
  return (header) => {
    const entry = header.kid === undefined ? undefined : keys.verificationKey(header.kid)
    if (entry === undefined) throw new joseErrors.JWKSNoMatchingKey()
    if (entry.alg !== header.alg) throw new joseErrors.JOSEAlgNotAllowed('alg does not match the key')
    return entry.key
  }
}

function hasAudience (token: AccessToken, audience: string): boolean {
  return typeof token.aud === 'string' ? token.aud === audience : token.aud.includes(audience)
}

export class ProxyAccess {
  readonly verifier: AccessTokenVerifier

  constructor (options: ProxyAccessOptions) {
    const audiences = [...new Set(options.routes.map(r => r.audience))]
    const { revoked } = options
    this.verifier = new AccessTokenVerifier({
      keys: localKeys(options.keys),
      issuer: options.issuer,
      audience: audiences,
      clock: options.clock,
      isRevoked: (token) => token.sid !== undefined && revoked.has(token.sid)
    })
  }

  /**
   * Admit a request to `route`, or throw a `LatchkeyError` carrying its RFC 6750 §3
   * `WWW-Authenticate` header: 401 without an error code when no credentials were sent,
   * 401 `invalid_token` (bad, expired, revoked, other audience), 403 `insufficient_scope`.
   */
  /**
   * `admit` without waiting, for a token already verified once (the fast lane): the token when
   * `admit` would return it, undefined when `admit` must decide (and explain a refusal).
   */
  admitCached (authorization: string | undefined, route: RouteConfig): AccessToken | undefined {
    return this.verifier.cachedAuthorization(authorization, token => hasAudience(token, route.audience) && hasScopes(token, route.scopes))
  }

  async admit (authorization: string | undefined, route: RouteConfig): Promise<AccessToken> {
    const token = await this.verifier.verifyAuthorization(authorization)
    if (!hasAudience(token, route.audience)) {
      throw sharedError('AT_INVALID', {
        headers: { 'www-authenticate': `Bearer realm="${this.verifier.realm}", error="invalid_token"` },
        description: 'The access token is not valid for this audience.'
      })
    }
    this.verifier.authorize(token, { scopes: route.scopes })
    return token
  }
}
