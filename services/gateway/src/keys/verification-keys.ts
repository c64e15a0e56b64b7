/**
 * The gateway's own keys as a jose key resolver for the shared `AccessTokenVerifier`
 * (no JWKS fetch: the proxy never makes a network call to verify).
 */
import { errors as joseErrors, type JWTVerifyGetKey } from 'jose'
import type { SigningKeys } from './signing-keys.js'

/**
 * Keys by kid, asked of `keys` on every verification (never a snapshot: the key set is
 * replaced in place on reload); the alg is pinned to the key's, so a token header cannot
 * choose it (RFC 8725 §3.1).
 */
export function signingKeyResolver (keys: SigningKeys): JWTVerifyGetKey {
  return (header) => {
    const entry = header.kid === undefined ? undefined : keys.verificationKey(header.kid)
    if (entry === undefined) throw new joseErrors.JWKSNoMatchingKey()
    if (entry.alg !== header.alg) throw new joseErrors.JOSEAlgNotAllowed('alg does not match the key')
    return entry.key
  }
}
