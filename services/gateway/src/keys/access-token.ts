/**
 * Access tokens: JWTs profiled by RFC 9068, signed with the gateway's first key and
 * verified in process with its own key set (the proxy never makes a network call).
 */
import { KeyObject, randomUUID, sign as cryptoSign, type SignKeyObjectInput } from 'node:crypto'
import { errors, jwtVerify } from 'jose'
import type { JWTPayload } from 'jose'
import type { Clock } from '#shared/clock.js'
import { classifyJoseError } from '#shared/jose-errors.js'
import { gatewayError } from '../errors.js'
import { SIGNING_ALGS } from './signing-keys.js'
import type { SigningKey, SigningKeys } from './signing-keys.js'

/** RFC 9068 §2.1: the `typ` header of a JWT access token. */
export const ACCESS_TOKEN_TYP = 'at+jwt'
/** Seconds of clock skew allowed on exp/nbf between the gateway's replicas and its callers. */
export const DEFAULT_CLOCK_TOLERANCE_S = 5
/** Our tokens are well under 1 KiB; anything far larger is refused before any parsing. */
export const MAX_ACCESS_TOKEN_LENGTH = 8192

/**
 * JWS compact serialisation (RFC 7515 §7.1) with unpadded base64url (§2): exactly three
 * non-empty segments. Anything else (whitespace, '=' padding, '+/') is refused up front
 * so that one token has exactly one spelling.
 */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
const REQUIRED_CLAIMS = ['exp', 'iat', 'jti', 'sub', 'client_id', 'scope']
/** Checked before any key is chosen, so `none` and HS* never reach key resolution. */
const ALLOWED_ALGS: string[] = [...SIGNING_ALGS]

export interface AccessTokenClaims {
  readonly sub: string
  readonly aud: string | readonly string[]
  readonly client_id: string
  /** Space-separated scope tokens (RFC 6749 §3.3). */
  readonly scope: string
  /** The refresh-token family id, for user tokens. */
  readonly sid?: string
  /** RFC 8693 §4.1: who acts for `sub` (token exchange), nested for chains. */
  readonly act?: ActorClaim
  /** Seconds since the epoch: expire no later than this (an exchanged token never outlives its subject token). */
  readonly notAfter?: number
}

export interface ActorClaim {
  readonly sub: string
  readonly act?: ActorClaim
}

export interface IssuedAccessToken {
  readonly token: string
  /** Seconds, as `expires_in` in a token response (RFC 6749 §5.1). */
  readonly expiresIn: number
}

export interface VerifiedAccessToken {
  readonly sub: string
  /** As issued: one audience or several. */
  readonly aud: string | readonly string[]
  readonly client_id: string
  readonly scope: readonly string[]
  readonly sid?: string
  readonly jti: string
  readonly exp: number
  readonly iat: number
}

/**
 * node:crypto's sign() arguments for each JWS alg (RFC 7518 §3): Ed25519 hashes internally;
 * ES256 wants the fixed-width r||s form (§3.4), not DER.
 */
function signerFor (alg: SigningKeys['signing']['alg'], key: KeyObject): (data: Buffer) => Buffer {
  switch (alg) {
    case 'EdDSA': return (data) => cryptoSign(null, data, key)
    case 'ES256': {
      const input: SignKeyObjectInput = { key, dsaEncoding: 'ieee-p1363' }
      return (data) => cryptoSign('sha256', data, input)
    }
    case 'RS256': return (data) => cryptoSign('sha256', data, key)
  }
}

/**
 * Signing is on the refresh and client-credentials hot paths. jose 6 signs through
 * WebCrypto (an async round trip per token); node:crypto's synchronous sign() on the same
 * key is measured at 53 µs against 92 µs per Ed25519 token (bench, `npm run bench`), so the
 * issuer serialises the JWS itself (RFC 7515 §7.1) while every verification stays with jose.
 */
export class AccessTokenIssuer {
  readonly #keys: SigningKeys
  /** The signing key the signer and header below were made for; a reloaded key file replaces it. */
  #signingKey: SigningKeys['signing'] | undefined
  #sign: (data: Buffer) => Buffer = () => Buffer.alloc(0)
  /** base64url of the protected header: the same for every token of this key. */
  #encodedHeader = ''
  readonly #issuer: string
  readonly #ttlS: number
  readonly #clock: Clock

  constructor (opts: { keys: SigningKeys, issuer: string, ttlS: number, clock: Clock }) {
    if (!Number.isInteger(opts.ttlS) || opts.ttlS <= 0) throw new TypeError('ttlS must be a positive integer')
    this.#keys = opts.keys
    this.#issuer = opts.issuer
    this.#ttlS = opts.ttlS
    this.#clock = opts.clock
    this.#follow()
  }

  /** Sign with the key that signs now (SigningKeys.replace on a key-file reload); rebuilt only when it changed. */
  #follow (): void {
    const signing = this.#keys.signing
    if (signing === this.#signingKey) return
    const { kid, alg, key } = signing
    this.#sign = signerFor(alg, key instanceof KeyObject ? key : KeyObject.from(key))
    this.#encodedHeader = Buffer.from(JSON.stringify({ alg, kid, typ: ACCESS_TOKEN_TYP })).toString('base64url')
    this.#signingKey = signing
  }

  async issue (claims: AccessTokenClaims): Promise<IssuedAccessToken> {
    this.#follow()
    const iat = Math.floor(this.#clock.now() / 1000)
    const exp = claims.notAfter === undefined ? iat + this.#ttlS : Math.min(iat + this.#ttlS, claims.notAfter)
    const payload: JWTPayload = {
      iss: this.#issuer,
      sub: claims.sub,
      aud: typeof claims.aud === 'string' ? claims.aud : [...claims.aud],
      exp,
      iat,
      jti: randomUUID(),
      client_id: claims.client_id,
      scope: claims.scope
    }
    if (claims.sid !== undefined) payload.sid = claims.sid
    if (claims.act !== undefined) payload.act = claims.act
    const signingInput = `${this.#encodedHeader}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`
    const signature = this.#sign(Buffer.from(signingInput)).toString('base64url')
    return { token: `${signingInput}.${signature}`, expiresIn: exp - iat }
  }
}

function claimsOf (payload: JWTPayload): VerifiedAccessToken {
  const { sub, aud, client_id: clientId, scope, sid, jti, exp, iat } = payload
  // Signed by us, so these hold unless a key leaked or a bug crept in; check cheaply anyway.
  if (typeof sub !== 'string' || typeof clientId !== 'string' || typeof scope !== 'string' || typeof jti !== 'string' ||
      typeof exp !== 'number' || typeof iat !== 'number' || (sid !== undefined && typeof sid !== 'string') || aud === undefined) {
    throw new errors.JWTInvalid('access token claims have unexpected types')
  }
  const out: { -readonly [K in keyof VerifiedAccessToken]: VerifiedAccessToken[K] } = {
    sub, aud, client_id: clientId, scope: scope.split(' ').filter(s => s !== ''), jti, exp, iat
  }
  if (sid !== undefined) out.sid = sid
  return out
}

export class AccessTokenVerifier {
  readonly #keys: SigningKeys
  readonly #issuer: string
  readonly #clock: Clock
  readonly #toleranceS: number

  constructor (opts: { keys: SigningKeys, issuer: string, clock: Clock, clockToleranceS?: number }) {
    this.#keys = opts.keys
    this.#issuer = opts.issuer
    this.#clock = opts.clock
    this.#toleranceS = opts.clockToleranceS ?? DEFAULT_CLOCK_TOLERANCE_S
  }

  /** Pick the key by kid and pin the alg to that key's: a header cannot choose the algorithm (RFC 8725 §3.1). */
  readonly #resolveKey = (header: { kid?: unknown, alg?: unknown }): SigningKey => {
    if (typeof header.kid !== 'string') throw new errors.JWSInvalid('kid header missing')
    const entry = this.#keys.verificationKey(header.kid)
    if (entry === undefined) throw new errors.JWKSNoMatchingKey()
    if (header.alg !== entry.alg) throw new errors.JOSEAlgNotAllowed('alg does not match the key')
    return entry.key
  }

  /** Throws `GW_INVALID_TOKEN` on any failure; the jose error is the `cause`. */
  async verify (token: string, expected: { audience: string }): Promise<VerifiedAccessToken> {
    try {
      if (typeof token !== 'string' || token.length > MAX_ACCESS_TOKEN_LENGTH || !COMPACT_JWS.test(token)) {
        throw new errors.JWSInvalid('not a compact JWS')
      }
      const { payload } = await jwtVerify(token, this.#resolveKey, {
        algorithms: ALLOWED_ALGS,
        issuer: this.#issuer,
        audience: expected.audience,
        typ: ACCESS_TOKEN_TYP,
        requiredClaims: REQUIRED_CLAIMS,
        clockTolerance: this.#toleranceS,
        currentDate: new Date(this.#clock.now())
      })
      return claimsOf(payload)
    } catch (err) {
      throw gatewayError('GW_INVALID_TOKEN', {
        cause: err,
        description: classifyJoseError(err) === 'expired' ? 'The access token has expired.' : undefined
      })
    }
  }
}
