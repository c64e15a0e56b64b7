/**
 * What a client entry may say about keys instead of (or besides) a secret:
 * - `jwks` / `jwks_uri`: the client's own public keys, for `private_key_jwt` (RFC 7523 §2.2,
 *   OIDC Core §9);
 * - `federated`: an external issuer the client trusts to vouch for it (workload identity:
 *   a Kubernetes service-account token, RFC 7523 §2.2 with another issuer), its keys found
 *   by OIDC discovery, or named by `jwks_uri`, or given inline as `jwks`.
 * Parsing only; verification is oauth/client-assertion.ts.
 */
import type { JSONWebKeySet, JWK } from 'jose'

/** Members a public JWK may carry here: key material is picked by allow-list. */
const PUBLIC_MEMBERS = ['kty', 'crv', 'x', 'y', 'n', 'e', 'kid', 'alg', 'use', 'key_ops'] as const
/** Any of these means a private (or symmetric) key was pasted where a public one belongs. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const
const KEY_TYPES = new Set(['EC', 'RSA', 'OKP'])
/** A client has a few keys; a long list is a mistake (or a whole provider's key set). */
export const MAX_CLIENT_KEYS = 20
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]'])

export interface FederatedTrust {
  /** The external issuer (`iss` of its tokens), e.g. the cluster's service-account issuer. */
  readonly issuer: string
  /** The `sub` it must vouch for, e.g. `system:serviceaccount:NAMESPACE:NAME`. */
  readonly subject: string
  /** Where its keys are; absent with `jwks` absent too → OIDC discovery at the issuer. */
  readonly jwksUri?: string
  readonly jwks?: JSONWebKeySet
}

/**
 * https, or http on a loopback host (a local test issuer): keys fetched over plain http
 * from anywhere else could be swapped on the way.
 */
export function checkKeyUrl (value: unknown): string | null {
  if (typeof value !== 'string') return null
  let url: URL
  try { url = new URL(value) } catch { return null }
  if (url.username !== '' || url.password !== '' || url.hash !== '') return null
  if (url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname))) return url.href
  return null
}

/** An issuer identifier: a key URL without query (OIDC Discovery §3), kept as written. */
function checkIssuer (value: unknown): string | null {
  if (typeof value !== 'string' || checkKeyUrl(value) === null || new URL(value).search !== '') return null
  return value
}

/** The public JWKS in `value` (only public members kept), or a problem description. */
export function parsePublicJwks (value: unknown): JSONWebKeySet | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'expected a JWKS object {"keys": [...]}'
  const keys = (value as { keys?: unknown }).keys
  if (!Array.isArray(keys) || keys.length === 0 || keys.length > MAX_CLIENT_KEYS) return `expected 1..${MAX_CLIENT_KEYS} keys`
  const out: JWK[] = []
  for (const [i, key] of keys.entries()) {
    if (typeof key !== 'object' || key === null || Array.isArray(key)) return `keys[${i}]: expected an object`
    const rec = key as Record<string, unknown>
    // Never echo key material: name the member only.
    const secret = PRIVATE_MEMBERS.find(m => m in rec)
    if (secret !== undefined) return `keys[${i}]: has private member "${secret}"; give the public key only`
    if (typeof rec.kty !== 'string' || !KEY_TYPES.has(rec.kty)) return `keys[${i}]: kty must be EC, RSA or OKP`
    const pub: Record<string, unknown> = {}
    for (const m of PUBLIC_MEMBERS) if (rec[m] !== undefined) pub[m] = rec[m]
    out.push(pub as JWK)
  }
  return { keys: out }
}

export function parseFederatedTrust (value: unknown): FederatedTrust | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'expected an object {"issuer", "subject", "jwks_uri"?, "jwks"?}'
  const rec = value as Record<string, unknown>
  for (const key of Object.keys(rec)) if (!['issuer', 'subject', 'jwks_uri', 'jwks'].includes(key)) return `unknown key "${key}"`
  const issuer = checkIssuer(rec.issuer)
  if (issuer === null) return 'issuer: expected an https URL (http only on localhost) without query'
  if (typeof rec.subject !== 'string' || rec.subject === '' || rec.subject.length > 256) return 'subject: expected a non-empty string'
  const trust: { -readonly [K in keyof FederatedTrust]: FederatedTrust[K] } = { issuer, subject: rec.subject }
  if (rec.jwks_uri !== undefined) {
    const uri = checkKeyUrl(rec.jwks_uri)
    if (uri === null) return 'jwks_uri: expected an https URL (http only on localhost)'
    trust.jwksUri = uri
  }
  if (rec.jwks !== undefined) {
    if (trust.jwksUri !== undefined) return 'give jwks_uri or jwks, not both'
    const jwks = parsePublicJwks(rec.jwks)
    if (typeof jwks === 'string') return `jwks: ${jwks}`
    trust.jwks = jwks
  }
  return trust
}

/** The file form of a federated trust (snake_case, as read). */
export function serialiseFederatedTrust (trust: FederatedTrust): Record<string, unknown> {
  const out: Record<string, unknown> = { issuer: trust.issuer, subject: trust.subject }
  if (trust.jwksUri !== undefined) out.jwks_uri = trust.jwksUri
  if (trust.jwks !== undefined) out.jwks = trust.jwks
  return out
}
