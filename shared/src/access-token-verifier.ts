/**
 * Access-token verification (RFC 9068 JWTs) without any HTTP framework: the Fastify plugin
 * and the gateway's proxy both sit on this. Order of work, cheapest first:
 * 1. `Authorization` parsed (bearer.ts) and the token string format-checked (token-format.ts);
 * 2. the verified-token cache, keyed by the canonical token string (looked up by the raw
 *    string first, which for any canonical token skips even the decoding);
 * 3. jose `jwtVerify`: signature with a JWKS key, alg allow-list, iss, aud, typ, exp/nbf
 *    against the injected clock with `CLOCK_TOLERANCE_S`, then the RFC 9068 claim types;
 * 4. the caller's revocation predicate (by `sid`/`jti`), on cache hits as well;
 * then, per use, `authorize` with what the place being entered needs: its audience (RFC 9068
 * §4: a token for another audience is `invalid_token`), the token kind and the scopes
 * (`insufficient_scope`, RFC 6750 §3.1).
 * This is the only access-token verifier: the resource service (through the plugin), the
 * gateway's proxy, forward-auth and its own bearer routes all use it. Failures are `LatchkeyError`s from the shared catalogue carrying their RFC 6750
 * `WWW-Authenticate` header; jose errors are translated only through `classifyJoseError`.
 */
import { type JWTPayload, type JWTVerifyGetKey, jwtVerify } from 'jose'
import { type Clock, systemClock } from './clock.js'
import { type LatchkeyError, isLatchkeyError } from './errors.js'
import { sharedError } from './http-errors.js'
import { classifyJoseError } from './jose-errors.js'
import { readBearer } from './bearer.js'
import { type FetchLike, type JwksTuning, JwksUnavailableError, RemoteJwks } from './remote-jwks.js'
import { ACCESS_TOKEN_ALGORITHMS, ACCESS_TOKEN_TYP, type AccessTokenAlg, TokenFormatError, checkTokenFormat } from './token-format.js'
import { VerifiedTokenCache } from './verified-token-cache.js'

/** Seconds of skew allowed on exp/nbf between the issuer's clock and ours. */
export const CLOCK_TOLERANCE_S = 5
export const DEFAULT_REALM = 'latchkey'
/** RFC 6749 §3.3 scope-token characters. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/
const REALM = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}$/

export type TokenKind = 'user' | 'service'

/** A verified access token. The token string itself is deliberately not kept. */
export interface AccessToken {
  readonly iss: string
  readonly sub: string
  readonly aud: string | readonly string[]
  readonly client_id: string
  /** Space-separated, as issued. */
  readonly scope: string
  readonly scopes: ReadonlySet<string>
  /** The refresh-token family of a user token; absent on service tokens. */
  readonly sid: string | undefined
  readonly jti: string
  readonly exp: number
  readonly iat: number
  /** `service` when there is no `sid` and `sub` is the client itself (client credentials). */
  readonly kind: TokenKind
  readonly claims: Readonly<JWTPayload>
}

export type VerificationOutcome = 'cache_hit' | 'verified' | 'missing' | 'invalid' | 'expired' | 'revoked' | 'unavailable'

export interface AccessTokenVerifierOptions {
  /** The issuer's JWKS. One of `jwksUrl` and `keys` is required. */
  readonly jwksUrl?: string | URL
  /** An in-process key resolver instead (e.g. `createLocalJWKSet` over the gateway's own keys). */
  readonly keys?: JWTVerifyGetKey
  readonly issuer: string
  /**
   * Audiences a token may carry to be verified at all (checked by jose); a function is asked
   * on every full verification, for a set that changes at run time (the gateway's routes).
   */
  readonly audience: string | readonly string[] | (() => string | readonly string[])
  readonly algorithms?: readonly AccessTokenAlg[]
  readonly realm?: string
  readonly clock?: Clock
  readonly fetch?: FetchLike
  readonly jwks?: JwksTuning
  readonly cacheSize?: number
  /** Refuse a verified token (edge revocation by `sid`/`jti`); consulted on every request. */
  readonly isRevoked?: (token: AccessToken) => boolean
  readonly onOutcome?: (outcome: VerificationOutcome) => void
  readonly onJwksFetch?: (ok: boolean) => void
}

export interface AccessRequirement {
  /** The audience of the place being entered: the token's `aud` must contain it. */
  readonly audience?: string
  readonly scopes?: readonly string[]
  readonly kind?: TokenKind
}

/** The token carries every one of `scopes`. */
export function hasScopes (token: AccessToken, scopes: readonly string[]): boolean {
  return scopes.every(s => token.scopes.has(s))
}

/** The token's `aud` names `audience` (one string or a list, RFC 7519 §4.1.3). */
export function hasAudience (token: AccessToken, audience: string): boolean {
  return typeof token.aud === 'string' ? token.aud === audience : token.aud.includes(audience)
}

/** The token meets `requirement`: the checks of `authorize`, without an answer. */
export function meets (token: AccessToken, requirement: AccessRequirement): boolean {
  return (requirement.audience === undefined || hasAudience(token, requirement.audience)) &&
    (requirement.kind === undefined || token.kind === requirement.kind) &&
    hasScopes(token, requirement.scopes ?? [])
}

function quoted (value: string): string {
  return `"${value}"`
}

function stringClaim (payload: JWTPayload, name: string, required: boolean): string | undefined {
  const v = payload[name]
  if (v === undefined && !required) return undefined
  if (typeof v !== 'string' || v === '') throw new TokenFormatError(`claim ${name} missing or not a string`)
  return v
}

function toAccessToken (payload: JWTPayload): AccessToken {
  const sub = stringClaim(payload, 'sub', true) as string
  const clientId = stringClaim(payload, 'client_id', true) as string
  const sid = stringClaim(payload, 'sid', false)
  // Optional (RFC 9068 §2.2.3); the gateway writes '' for a client granted no scope, read as none.
  const scope = payload.scope === '' ? '' : stringClaim(payload, 'scope', false) ?? ''
  const scopes = scope === '' ? [] : scope.split(' ')
  if (!scopes.every(s => SCOPE_TOKEN.test(s))) throw new TokenFormatError('scope is not a list of scope tokens')
  if (typeof payload.iat !== 'number') throw new TokenFormatError('iat missing')
  return Object.freeze({
    iss: payload.iss as string,
    sub,
    aud: payload.aud as string | string[],
    client_id: clientId,
    scope,
    scopes: new Set(scopes),
    sid,
    jti: stringClaim(payload, 'jti', true) as string,
    exp: payload.exp as number,
    iat: payload.iat,
    kind: sid === undefined && sub === clientId ? 'service' : 'user',
    claims: Object.freeze({ ...payload })
  })
}

export class AccessTokenVerifier {
  readonly realm: string
  readonly #keys: JWTVerifyGetKey
  readonly #jwks: RemoteJwks | undefined
  readonly #issuer: string
  readonly #audience: () => string | string[]
  readonly #algorithms: readonly AccessTokenAlg[]
  readonly #clock: Clock
  readonly #cache: VerifiedTokenCache<AccessToken>
  readonly #isRevoked: ((token: AccessToken) => boolean) | undefined
  readonly #onOutcome: ((outcome: VerificationOutcome) => void) | undefined
  readonly #counts: Record<VerificationOutcome, number> = { cache_hit: 0, verified: 0, missing: 0, invalid: 0, expired: 0, revoked: 0, unavailable: 0 }

  constructor (options: AccessTokenVerifierOptions) {
    this.realm = options.realm ?? DEFAULT_REALM
    if (!REALM.test(this.realm)) throw new TypeError('realm must be printable text without quotes or backslashes')
    const algorithms = options.algorithms ?? ACCESS_TOKEN_ALGORITHMS
    if (algorithms.length === 0 || !algorithms.every(a => (ACCESS_TOKEN_ALGORITHMS as readonly string[]).includes(a))) {
      throw new TypeError(`algorithms must be a non-empty subset of ${ACCESS_TOKEN_ALGORITHMS.join(', ')}`)
    }
    this.#algorithms = Object.freeze([...algorithms])
    this.#clock = options.clock ?? systemClock
    if (options.keys !== undefined) {
      this.#keys = options.keys
    } else if (options.jwksUrl !== undefined) {
      this.#jwks = new RemoteJwks(options.jwksUrl, { ...options.jwks, clock: this.#clock, fetch: options.fetch, onFetch: options.onJwksFetch })
      this.#keys = this.#jwks.getKey
    } else {
      throw new TypeError('one of jwksUrl or keys is required')
    }
    this.#issuer = options.issuer
    const { audience } = options
    if (typeof audience === 'function') {
      this.#audience = () => { const a = audience(); return typeof a === 'string' ? a : [...a] }
    } else {
      const fixed = typeof audience === 'string' ? audience : [...audience]
      this.#audience = () => fixed
    }
    this.#cache = new VerifiedTokenCache({ maxEntries: options.cacheSize, clock: this.#clock })
    this.#isRevoked = options.isRevoked
    this.#onOutcome = options.onOutcome
  }

  /** Verify the token in an `Authorization` header value. */
  async verifyAuthorization (authorization: string | undefined): Promise<AccessToken> {
    const credentials = readBearer(authorization)
    if (credentials.kind === 'none') throw this.#refuse('missing', 'AT_MISSING', `Bearer realm=${quoted(this.realm)}`)
    if (credentials.kind === 'malformed') throw this.#refuse('invalid', 'AT_INVALID', this.#invalidTokenHeader(), new TokenFormatError('malformed Authorization header'))
    return await this.verify(credentials.token)
  }

  /**
   * The token in `authorization` when it is already in the verified-token cache under its
   * exact string and is not revoked; otherwise undefined, and `verifyAuthorization` must
   * decide and explain. Synchronous, and it never throws or counts a refusal (only the cache
   * hit of a token it returns): the gateway's admission asks it first, so that a request it
   * can decide at once (the proxy's fast lane) never waits for a microtask.
   */
  cachedAuthorization (authorization: string | undefined): AccessToken | undefined {
    const credentials = readBearer(authorization)
    if (credentials.kind !== 'token') return undefined
    const seen = this.#cache.get(credentials.token)
    if (seen === undefined || this.#isRevoked?.(seen) === true) return undefined
    this.#count('cache_hit')
    return seen
  }

  /** Verify a bare token string. Throws `LatchkeyError` AT_INVALID / AT_EXPIRED / AT_REVOKED / AT_JWKS_UNAVAILABLE. */
  async verify (token: string): Promise<AccessToken> {
    // Fast path: a cache key is a canonical string that already passed the format check,
    // so a token string equal to one needs neither decoding nor a signature check.
    const seen = this.#cache.get(token)
    if (seen !== undefined) return this.#admit(seen, 'cache_hit')
    let canonical: string
    try {
      canonical = checkTokenFormat(token, this.#algorithms).canonical
    } catch (err) {
      throw this.#refuse('invalid', 'AT_INVALID', this.#invalidTokenHeader(), err)
    }
    const cached = canonical === token ? undefined : this.#cache.get(canonical)
    if (cached !== undefined) return this.#admit(cached, 'cache_hit')

    let verified: AccessToken
    try {
      const { payload } = await jwtVerify(canonical, this.#keys, {
        issuer: this.#issuer,
        audience: this.#audience(),
        algorithms: [...this.#algorithms],
        typ: ACCESS_TOKEN_TYP,
        clockTolerance: CLOCK_TOLERANCE_S,
        currentDate: new Date(this.#clock.now()),
        requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id']
      })
      verified = toAccessToken(payload)
    } catch (err) {
      throw this.#translate(err)
    }
    // Dropped at exp: past it the token must go back through jose and its clock tolerance.
    this.#cache.set(canonical, verified, verified.exp * 1000)
    return this.#admit(verified, 'verified')
  }

  /**
   * Check a verified token against what the place being entered needs, in this order:
   * audience (401 `invalid_token`: the token is not for here, RFC 9068 §4), kind and
   * scopes (403 `insufficient_scope`, RFC 6750 §3.1). Throws `LatchkeyError`s.
   */
  authorize (token: AccessToken, requirement: AccessRequirement = {}): void {
    if (requirement.audience !== undefined && !hasAudience(token, requirement.audience)) {
      throw sharedError('AT_WRONG_AUDIENCE', { headers: { 'www-authenticate': this.#invalidTokenHeader() } })
    }
    const scopes = requirement.scopes ?? []
    const scopeParam = scopes.length === 0 ? '' : `, scope=${quoted(scopes.join(' '))}`
    const header = `Bearer realm=${quoted(this.realm)}, error="insufficient_scope"${scopeParam}`
    if (requirement.kind !== undefined && token.kind !== requirement.kind) {
      throw sharedError(requirement.kind === 'service' ? 'AT_SERVICE_TOKEN_REQUIRED' : 'AT_USER_TOKEN_REQUIRED', { headers: { 'www-authenticate': header } })
    }
    if (!hasScopes(token, scopes)) throw sharedError('AT_INSUFFICIENT_SCOPE', { headers: { 'www-authenticate': header } })
  }

  /** Keys are usable: in-process keys always; a JWKS when cached or reachable now. */
  async ready (): Promise<boolean> {
    return this.#jwks === undefined ? true : await this.#jwks.ready()
  }

  stats (): { outcomes: Readonly<Record<VerificationOutcome, number>>, cachedTokens: number, jwks: { fetches: number, failures: number, keysCached: boolean } | undefined } {
    return { outcomes: { ...this.#counts }, cachedTokens: this.#cache.size, jwks: this.#jwks?.stats() }
  }

  #admit (token: AccessToken, outcome: 'cache_hit' | 'verified'): AccessToken {
    if (this.#isRevoked?.(token) === true) throw this.#refuse('revoked', 'AT_REVOKED', this.#invalidTokenHeader())
    this.#count(outcome)
    return token
  }

  #translate (err: unknown): LatchkeyError {
    if (isLatchkeyError(err)) return err
    if (err instanceof TokenFormatError) return this.#refuse('invalid', 'AT_INVALID', this.#invalidTokenHeader(), err)
    const kind = err instanceof JwksUnavailableError ? 'unavailable' : classifyJoseError(err)
    switch (kind) {
      case 'unavailable':
        return this.#refuse('unavailable', 'AT_JWKS_UNAVAILABLE', undefined, err)
      case 'expired':
        return this.#refuse('expired', 'AT_EXPIRED', this.#invalidTokenHeader(), err)
      case 'invalid':
      case 'unknown_key':
        return this.#refuse('invalid', 'AT_INVALID', this.#invalidTokenHeader(), err)
    }
  }

  #invalidTokenHeader (): string {
    return `Bearer realm=${quoted(this.realm)}, error="invalid_token"`
  }

  #refuse (outcome: VerificationOutcome, code: 'AT_MISSING' | 'AT_INVALID' | 'AT_EXPIRED' | 'AT_REVOKED' | 'AT_JWKS_UNAVAILABLE', wwwAuthenticate: string | undefined, cause?: unknown): LatchkeyError {
    this.#count(outcome)
    const headers = wwwAuthenticate === undefined ? undefined : { 'www-authenticate': wwwAuthenticate }
    return sharedError(code, { headers, cause })
  }

  #count (outcome: VerificationOutcome): void {
    this.#counts[outcome]++
    this.#onOutcome?.(outcome)
  }
}
