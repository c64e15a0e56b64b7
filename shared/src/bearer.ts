/**
 * Reading `Authorization: Bearer <token>` (RFC 6750 §2.1). Only the header form is
 * accepted: the query and body forms (§2.2, §2.3) leak tokens into logs and caches.
 */

export type BearerCredentials =
  | { readonly kind: 'none' }
  | { readonly kind: 'malformed' }
  | { readonly kind: 'token', readonly token: string }

const NONE: BearerCredentials = Object.freeze({ kind: 'none' })
const MALFORMED: BearerCredentials = Object.freeze({ kind: 'malformed' })

/**
 * No header, or a header for another scheme, is "no credentials" (RFC 6750 §3.1: no error
 * code). `Bearer` followed by anything but one space and a token is malformed. The token
 * itself is returned byte for byte — trailing whitespace included — so that the format
 * check, not this parser, decides what is canonical.
 */
export function readBearer (authorization: string | undefined): BearerCredentials {
  if (authorization === undefined || authorization === '') return NONE
  // The auth-scheme is case-insensitive (RFC 9110 §11.1).
  const scheme = authorization.slice(0, 7)
  if (scheme.toLowerCase() !== 'bearer ') {
    return authorization.toLowerCase() === 'bearer' ? MALFORMED : NONE
  }
  const token = authorization.slice(7)
  return token === '' ? MALFORMED : { kind: 'token', token }
}
