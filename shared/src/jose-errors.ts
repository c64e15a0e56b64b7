/**
 * The one place jose's errors are translated into what a verifier acts on:
 * - `expired`: refuse with 401 (the client should refresh);
 * - `invalid`: refuse with 401 (forged, malformed, wrong iss/aud/typ/alg, ...);
 * - `unknown_key`: refuse with 401; the kid is not in the key set even after
 *   jose's rate-limited refetch (a rotation not yet published, or a forgery);
 * - `unavailable`: the key set could not be fetched: answer 503, the token may be fine.
 * Callers switch on the result, never on jose's messages.
 */
export type JoseErrorClass = 'expired' | 'invalid' | 'unavailable' | 'unknown_key'

/** Socket and undici failures that mean "the JWKS endpoint did not answer", not "the token is bad". */
const NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH',
  'ENETUNREACH', 'ENETDOWN', 'EPIPE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED'
])

/** How deep to follow `cause` chains: fetch wraps the socket error once, jose once more. */
const MAX_CAUSE_DEPTH = 4

function codeOf (err: unknown): string | undefined {
  if (err === null || typeof err !== 'object') return undefined
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' ? code : undefined
}

function isNetworkish (err: unknown): boolean {
  let current: unknown = err
  for (let depth = 0; depth < MAX_CAUSE_DEPTH && current !== null && typeof current === 'object'; depth++) {
    const { name, message } = current as { name?: unknown, message?: unknown }
    const code = codeOf(current)
    if (code !== undefined && NETWORK_CODES.has(code)) return true
    if (name === 'AbortError' || name === 'TimeoutError') return true
    // undici's fetch rejects every transport failure with this exact TypeError.
    if (current instanceof TypeError && message === 'fetch failed') return true
    current = (current as { cause?: unknown }).cause
  }
  return false
}

export function classifyJoseError (err: unknown): JoseErrorClass {
  switch (codeOf(err)) {
    case 'ERR_JWT_EXPIRED':
      return 'expired'
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return 'unknown_key'
    // A malformed key set is the publisher's fault, not the token's; jose throws the bare
    // JOSEError (ERR_JOSE_GENERIC) only while fetching a remote JWKS (non-200, unparsable body).
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
    case 'ERR_JOSE_GENERIC':
      return 'unavailable'
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
    case 'ERR_JWK_INVALID':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return 'invalid'
  }
  return isNetworkish(err) ? 'unavailable' : 'invalid'
}
