/**
 * The format check that runs before any signature work. It refuses every token string
 * that is not the one canonical spelling of a JWS compact serialisation, so that two
 * different strings can never stand for the same verified token — except where the
 * algorithm itself is malleable (ECDSA), which `canonical` folds back to one spelling.
 *
 * Decision (ECDSA s-malleability): WebCrypto accepts both (r, s) and (r, n−s), and the
 * gateway signs with node's crypto, which does not normalise s, so half of its genuine
 * ES256 tokens carry a high s. Refusing high s would refuse genuine tokens. Instead the
 * verified-token cache is keyed by `canonical`, in which s is replaced by min(s, n−s):
 * a malleated copy of a verified token maps to the same entry (it would verify anyway,
 * with the same claims), and a forgery maps to an entry only if its low-s twin verified.
 * Revocation never looks at token bytes: it is by `sid`/`jti` claims.
 */

export const ACCESS_TOKEN_ALGORITHMS = ['EdDSA', 'ES256', 'RS256'] as const
export type AccessTokenAlg = typeof ACCESS_TOKEN_ALGORITHMS[number]

/** Gateway tokens are well under 2 KB; anything near this is not one of ours. */
export const MAX_TOKEN_LENGTH = 8 * 1024
/** RFC 9068 §2.1: access tokens carry `typ: at+jwt` (compared case-insensitively, RFC 7515 §4.1.9). */
export const ACCESS_TOKEN_TYP = 'at+jwt'

const SEGMENT = /^[A-Za-z0-9_-]+$/
/** Key ids are thumbprints or short names: no quotes, slashes, spaces or control bytes. */
const KID = /^[A-Za-z0-9._~:+=-]{1,128}$/
/** Header parameters that name or carry a key: our keys come from the JWKS only (RFC 8725 §3.10). */
const KEY_LOCATING_HEADERS = ['jwk', 'jku', 'x5u', 'x5c'] as const

/**
 * Order of the P-256 group (SEC 2 §2.4.2) and half of it, as the 32 big-endian bytes r and
 * s are spelt in: range checks and the low-s fold work on the bytes themselves (a BigInt
 * round trip through hex cost about 2 µs a token on the client_credentials path).
 */
const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n
const P256_N_BYTES = Buffer.from(P256_N.toString(16).padStart(64, '0'), 'hex')
const P256_HALF_N_BYTES = Buffer.from((P256_N >> 1n).toString(16).padStart(64, '0'), 'hex')

export interface CompactTokenHeader {
  readonly alg: AccessTokenAlg
  readonly kid: string
  readonly typ: string
}

export interface CheckedToken {
  readonly header: CompactTokenHeader
  /** The one spelling of this token that the verified-token cache is keyed by. */
  readonly canonical: string
}

/** Why a token string was refused; for debug logs only (never the token itself). */
export class TokenFormatError extends Error {
  constructor (reason: string) {
    super(reason)
    this.name = 'TokenFormatError'
  }
}

function decodeSegment (segment: string, what: string): Buffer {
  // Base64url without padding, and the re-encoding must match: unused low bits in the
  // last character would otherwise give many strings for the same bytes.
  if (!SEGMENT.test(segment)) throw new TokenFormatError(`${what} is not base64url`)
  const bytes = Buffer.from(segment, 'base64url')
  if (bytes.toString('base64url') !== segment) throw new TokenFormatError(`${what} is not canonical base64url`)
  return bytes
}

function parseHeader (bytes: Buffer, algorithms: readonly AccessTokenAlg[]): CompactTokenHeader {
  let header: unknown
  try {
    header = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw new TokenFormatError('header is not JSON')
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new TokenFormatError('header is not an object')
  const h = header as Record<string, unknown>
  if (typeof h.alg !== 'string' || !(algorithms as readonly string[]).includes(h.alg)) throw new TokenFormatError('alg not allowed')
  if (typeof h.kid !== 'string' || !KID.test(h.kid)) throw new TokenFormatError('kid missing or malformed')
  if (typeof h.typ !== 'string' || h.typ.toLowerCase().replace(/^application\//, '') !== ACCESS_TOKEN_TYP) throw new TokenFormatError('typ is not at+jwt')
  for (const name of KEY_LOCATING_HEADERS) {
    if (name in h) throw new TokenFormatError(`header carries ${name}`)
  }
  return { alg: h.alg as AccessTokenAlg, kid: h.kid, typ: h.typ }
}

/** 1 ≤ x < n for a 32-byte big-endian scalar (SEC 1 §4.1.4 step 1: r and s in [1, n−1]). */
function inScalarRange (x: Buffer): boolean {
  return Buffer.compare(x, P256_N_BYTES) < 0 && x.some(b => b !== 0)
}

/**
 * An ES256 r||s signature with s replaced by n−s when s is high: the same signature over the
 * same data, in the one spelling the verified-token cache keys on. The gateway's issuer signs
 * with it, so every token it issues is canonical and found by the cache's raw-string lookup
 * (the proxy's fast lane). For a genuine s (n/2 < s < n) the big-endian subtraction below
 * needs no final borrow; a low s is returned as it is.
 */
export function lowSEs256Signature (signature: Buffer): Buffer {
  // s (bytes 32..64) against n/2, compared in place: a subarray view costs more than the compare.
  if (signature.length !== 64 || signature.compare(P256_HALF_N_BYTES, 0, 32, 32, 64) <= 0) return signature
  const folded = Buffer.allocUnsafe(64)
  signature.copy(folded, 0, 0, 32)
  let borrow = 0
  for (let i = 31; i >= 0; i--) {
    const d = (P256_N_BYTES[i] as number) - (signature[32 + i] as number) - borrow
    folded[32 + i] = d & 0xff
    borrow = d < 0 ? 1 : 0
  }
  return folded
}

/** The signature in its canonical form, or a refusal when its shape cannot be genuine. */
function canonicalSignature (alg: AccessTokenAlg, signature: Buffer, segment: string): string {
  switch (alg) {
    case 'EdDSA':
      // Ed25519 (RFC 8032 §5.1.6); verification itself refuses a non-reduced S.
      if (signature.length !== 64) throw new TokenFormatError('EdDSA signature is not 64 bytes')
      return segment
    case 'RS256':
      // The signature is as long as the modulus: 2048..4096-bit keys.
      if (signature.length < 256 || signature.length > 512) throw new TokenFormatError('RS256 signature length out of range')
      return segment
    case 'ES256': {
      // JWS uses the fixed-width r || s form (RFC 7518 §3.4), never DER.
      if (signature.length !== 64) throw new TokenFormatError('ES256 signature is not 64 bytes')
      if (!inScalarRange(signature.subarray(0, 32)) || !inScalarRange(signature.subarray(32))) throw new TokenFormatError('ES256 r or s out of range')
      const folded = lowSEs256Signature(signature)
      return folded === signature ? segment : folded.toString('base64url')
    }
  }
}

/**
 * Check a token string's shape and header without verifying it. Throws `TokenFormatError`.
 * Exactly three non-empty base64url segments, no padding, no whitespace, at most
 * `MAX_TOKEN_LENGTH` characters; a header with an allowed `alg`, a `kid`, `typ: at+jwt`,
 * and no key-locating parameters; a signature of the right size for its algorithm.
 */
export function checkTokenFormat (token: string, algorithms: readonly AccessTokenAlg[] = ACCESS_TOKEN_ALGORITHMS): CheckedToken {
  if (token.length > MAX_TOKEN_LENGTH) throw new TokenFormatError('token too long')
  const parts = token.split('.')
  if (parts.length !== 3) throw new TokenFormatError('not three segments')
  const [h, p, s] = parts as [string, string, string]
  const header = parseHeader(decodeSegment(h, 'header'), algorithms)
  decodeSegment(p, 'payload')
  const signature = canonicalSignature(header.alg, decodeSegment(s, 'signature'), s)
  return { header, canonical: signature === s ? token : `${h}.${p}.${signature}` }
}
