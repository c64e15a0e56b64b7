/**
 * Issuing access tokens: JWTs profiled by RFC 9068, signed with the gateway's first key.
 * Verification is the shared `AccessTokenVerifier` (#shared/access-token-verifier.js) over
 * the gateway's own keys (verification-keys.ts), wired once in app.ts.
 */
import { KeyObject, randomUUID, sign as cryptoSign, type SignKeyObjectInput } from 'node:crypto'
import type { Clock } from '#shared/clock.js'
import { ACCESS_TOKEN_TYP } from '#shared/token-format.js'
import { lowSEs256Signature } from '#shared/token-format.js'
import type { SigningKeys } from './signing-keys.js'

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

/** Who a user id belongs to (the gateway's UserDirectory, which keeps its identity across reloads). */
export interface UserNames {
  getById (id: string): { readonly username: string } | undefined
}

export interface IssuedAccessToken {
  readonly token: string
  /** Seconds, as `expires_in` in a token response (RFC 6749 §5.1). */
  readonly expiresIn: number
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
      // Low s (token-format.ts): half of ECDSA signatures have a high s, and a token spelled
      // so would miss the verified-token cache's raw-string lookup, and with it the fast lane.
      return (data) => lowSEs256Signature(cryptoSign('sha256', data, input))
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
  /** `iss` as a JSON string: the same for every token. */
  readonly #issuerJson: string
  readonly #ttlS: number
  readonly #clock: Clock
  readonly #users: UserNames | undefined

  constructor (opts: { keys: SigningKeys, issuer: string, ttlS: number, clock: Clock, users?: UserNames }) {
    if (!Number.isInteger(opts.ttlS) || opts.ttlS <= 0) throw new TypeError('ttlS must be a positive integer')
    this.#keys = opts.keys
    this.#issuerJson = JSON.stringify(opts.issuer)
    this.#ttlS = opts.ttlS
    this.#clock = opts.clock
    this.#users = opts.users
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

  /** Synchronous, as node:crypto's sign() is: a caller on the hot path need not wait a tick for it. */
  issue (claims: AccessTokenClaims): IssuedAccessToken {
    this.#follow()
    const iat = Math.floor(this.#clock.now() / 1000)
    const exp = claims.notAfter === undefined ? iat + this.#ttlS : Math.min(iat + this.#ttlS, claims.notAfter)
    // RFC 9068 §2.2: the claims set as one template, which costs fewer instructions than an
    // object built for JSON.stringify; every string in it still goes through JSON.stringify,
    // so the escaping is JSON's own (RFC 8259 §7).
    let payload = `{"iss":${this.#issuerJson},"sub":${JSON.stringify(claims.sub)},"aud":${JSON.stringify(claims.aud)},"exp":${exp},"iat":${iat},"jti":"${randomUUID()}","client_id":${JSON.stringify(claims.client_id)},"scope":${JSON.stringify(claims.scope)}`
    if (claims.sid !== undefined) {
      payload += `,"sid":${JSON.stringify(claims.sid)}`
      // RFC 9068 §2.2.3.1 allows OpenID Connect identity claims: the user's name, so that a
      // service (and a person reading /api/me) sees "alice" rather than an opaque `sub`.
      const name = this.#users?.getById(claims.sub)?.username
      if (name !== undefined) payload += `,"preferred_username":${JSON.stringify(name)}`
    }
    if (claims.act !== undefined) payload += `,"act":${JSON.stringify(claims.act)}`
    const signingInput = `${this.#encodedHeader}.${Buffer.from(`${payload}}`).toString('base64url')}`
    // ASCII only (base64url and a dot): latin1 copies it without a UTF-8 pass.
    const signature = this.#sign(Buffer.from(signingInput, 'latin1')).toString('base64url')
    return { token: `${signingInput}.${signature}`, expiresIn: exp - iat }
  }
}
