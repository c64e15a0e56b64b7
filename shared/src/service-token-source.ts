/**
 * Access tokens for service-to-service calls from the gateway's token endpoint:
 * - `getToken()`: the client credentials grant (RFC 6749 §4.4);
 * - `exchange(userToken, ...)`: token exchange (RFC 8693) of a user's access token for
 *   another audience, to call on downstream on the user's behalf.
 * The client authenticates with a secret (HTTP Basic, RFC 6749 §2.3.1), its own key
 * (`private_key_jwt`, RFC 7523: a fresh signed assertion per request), or a token from a
 * federated issuer it reads from a file (a Kubernetes projected service-account token,
 * read again for every request so the kubelet's rotations are picked up).
 * Tokens are cached until `SERVICE_TOKEN_REFRESH_MARGIN_S` before they expire, and
 * concurrent callers for one token share one request. Failures are `LatchkeyError`s
 * (ST_*); neither a secret, a key nor a token ever appears in an error message.
 */
import { createHash, randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { type CryptoKey, type KeyObject, SignJWT } from 'jose'
import { type Clock, systemClock } from './clock.js'
import { sharedError } from './http-errors.js'

/** Fetch a new token this long before the current one expires, so it never expires in flight. */
export const SERVICE_TOKEN_REFRESH_MARGIN_S = 30
export const SERVICE_TOKEN_TIMEOUT_MS = 5_000
/** A token response is a few KB at most. */
const MAX_RESPONSE_BYTES = 64 * 1024
const ERROR_CODE = /^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$/

/** A client assertion lives only as long as one request needs (the gateway allows ≤ 5 min). */
export const CLIENT_ASSERTION_LIFETIME_S = 60
/** Exchanged tokens kept at most (one per user token, audience and scope). */
export const EXCHANGE_CACHE_MAX_ENTRIES = 1000
export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'

export type TokenFetch = (url: string, init: RequestInit) => Promise<Response>

/** How the client proves itself at the token endpoint. */
export type ServiceClientAuth =
  | { readonly method: 'client_secret_basic', readonly clientSecret: string }
  | {
    readonly method: 'private_key_jwt'
    readonly privateKey: CryptoKey | KeyObject
    readonly alg: 'ES256' | 'RS256' | 'EdDSA'
    readonly kid?: string
    /** The assertion's `aud`; default the token URL (the gateway accepts it or its issuer). */
    readonly assertionAudience?: string
  }
  | { readonly method: 'federated', readonly tokenFile: string }

export interface ServiceTokenSourceOptions {
  readonly tokenUrl: string
  readonly clientId: string
  /** Shorthand for `auth: { method: 'client_secret_basic', clientSecret }`. */
  readonly clientSecret?: string
  readonly auth?: ServiceClientAuth
  readonly audience: string
  /** Space-separated; omitted → the client's registered scopes. */
  readonly scope?: string
  readonly clock?: Clock
  readonly fetch?: TokenFetch
  readonly timeoutMs?: number
}

interface CachedToken { readonly token: string, readonly refreshAtMs: number }

export interface ExchangeRequest {
  readonly audience: string
  /** Space-separated, at most the user token's; omitted → the user token's scope. */
  readonly scope?: string
}

/** RFC 6749 §2.3.1: id and secret are form-urlencoded before being joined for HTTP Basic. */
function basicCredentials (clientId: string, clientSecret: string): string {
  const encode = (v: string): string => new URLSearchParams({ v }).toString().slice(2)
  return `Basic ${Buffer.from(`${encode(clientId)}:${encode(clientSecret)}`).toString('base64')}`
}

export class ServiceTokenSource {
  readonly #tokenUrl: string
  readonly #clientId: string
  readonly #auth: ServiceClientAuth
  readonly #authorization: string | undefined
  readonly #params: Readonly<Record<string, string>>
  readonly #clock: Clock
  readonly #fetch: TokenFetch
  readonly #timeoutMs: number
  #cached: CachedToken | undefined
  #pending: Promise<string> | undefined
  /** Exchanged tokens by a digest of (user token, audience, scope); insertion-ordered for eviction. */
  readonly #exchanged = new Map<string, CachedToken>()
  readonly #exchanging = new Map<string, Promise<string>>()

  constructor (options: ServiceTokenSourceOptions) {
    this.#tokenUrl = new URL(options.tokenUrl).href
    this.#clientId = options.clientId
    const auth = options.auth ?? (options.clientSecret === undefined ? undefined : { method: 'client_secret_basic', clientSecret: options.clientSecret })
    if (auth === undefined) throw new TypeError('one of clientSecret or auth is required')
    this.#auth = auth
    this.#authorization = auth.method === 'client_secret_basic' ? basicCredentials(options.clientId, auth.clientSecret) : undefined
    const params: Record<string, string> = { grant_type: 'client_credentials', audience: options.audience }
    if (options.scope !== undefined && options.scope !== '') params.scope = options.scope
    this.#params = params
    this.#clock = options.clock ?? systemClock
    this.#fetch = options.fetch ?? ((u, init) => fetch(u, init))
    this.#timeoutMs = options.timeoutMs ?? SERVICE_TOKEN_TIMEOUT_MS
  }

  /** A token valid for at least the refresh margin (or half its lifetime, if shorter). */
  async getToken (): Promise<string> {
    const cached = this.#cached
    if (cached !== undefined && this.#clock.now() < cached.refreshAtMs) return cached.token
    this.#pending ??= this.#request(this.#params).then((got) => {
      this.#cached = got
      return got.token
    }).finally(() => { this.#pending = undefined })
    return await this.#pending
  }

  /**
   * A token for `request.audience` acting for the user of `subjectToken` (RFC 8693): same
   * user and session, `act` naming this client, never outliving `subjectToken`. Cached per
   * (user token, audience, scope), one request at a time for each.
   */
  async exchange (subjectToken: string, request: ExchangeRequest): Promise<string> {
    const key = createHash('sha256').update(subjectToken).update('\0').update(request.audience).update('\0').update(request.scope ?? '').digest('base64url')
    const cached = this.#exchanged.get(key)
    if (cached !== undefined && this.#clock.now() < cached.refreshAtMs) return cached.token
    let pending = this.#exchanging.get(key)
    if (pending === undefined) {
      const params: Record<string, string> = { grant_type: TOKEN_EXCHANGE_GRANT, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE, audience: request.audience }
      if (request.scope !== undefined && request.scope !== '') params.scope = request.scope
      pending = this.#request(params).then((got) => {
        this.#exchanged.delete(key)
        if (this.#exchanged.size >= EXCHANGE_CACHE_MAX_ENTRIES) this.#exchanged.delete(this.#exchanged.keys().next().value as string)
        this.#exchanged.set(key, got)
        return got.token
      }).finally(() => { this.#exchanging.delete(key) })
      this.#exchanging.set(key, pending)
    }
    return await pending
  }

  /** Forget cached tokens (e.g. after a resource answered 401 with one). */
  invalidate (): void {
    this.#cached = undefined
    this.#exchanged.clear()
  }

  /** The client authentication of one request: a header, or form parameters. */
  async #authenticate (): Promise<{ headers: Record<string, string>, params: Record<string, string> }> {
    switch (this.#auth.method) {
      case 'client_secret_basic':
        return { headers: { authorization: this.#authorization as string }, params: {} }
      case 'private_key_jwt': {
        const nowS = Math.floor(this.#clock.now() / 1000)
        const { privateKey, alg, kid, assertionAudience } = this.#auth
        // RFC 7523 §3: iss = sub = client id, our endpoint as aud, short exp, a fresh jti.
        const assertion = await new SignJWT({ jti: randomUUID() })
          .setProtectedHeader(kid === undefined ? { alg } : { alg, kid })
          .setIssuer(this.#clientId).setSubject(this.#clientId).setAudience(assertionAudience ?? this.#tokenUrl)
          .setIssuedAt(nowS).setExpirationTime(nowS + CLIENT_ASSERTION_LIFETIME_S)
          .sign(privateKey)
        return { headers: {}, params: { client_id: this.#clientId, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: assertion } }
      }
      case 'federated': {
        let token: string
        try {
          // Read for every request: the kubelet replaces the file when it rotates the token.
          token = (await readFile(this.#auth.tokenFile, 'utf8')).trim()
        } catch (err) {
          throw sharedError('ST_UNAVAILABLE', { description: 'The federated token file cannot be read.', cause: new Error((err as NodeJS.ErrnoException).code ?? 'read failed') })
        }
        if (token === '') throw sharedError('ST_UNAVAILABLE', { description: 'The federated token file is empty.' })
        return { headers: {}, params: { client_id: this.#clientId, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: token } }
      }
    }
  }

  async #request (grant: Readonly<Record<string, string>>): Promise<CachedToken> {
    const startedAt = this.#clock.now()
    const auth = await this.#authenticate()
    let response: Response
    let text: string
    try {
      response = await this.#fetch(this.#tokenUrl, {
        method: 'POST',
        headers: { ...auth.headers, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ ...grant, ...auth.params }).toString(),
        redirect: 'manual',
        signal: AbortSignal.timeout(this.#timeoutMs)
      })
      text = await response.text()
    } catch (err) {
      // The cause is a socket or timeout error: it names the host, never the credentials.
      throw sharedError('ST_UNAVAILABLE', { cause: err })
    }
    if (text.length > MAX_RESPONSE_BYTES) throw sharedError('ST_BAD_RESPONSE')
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      body = undefined
    }
    if (response.status !== 200) throw this.#failure(response.status, body)
    const token = this.#parse(body)
    // The token's own lifetime counts from when we asked, not from when the answer arrived.
    const lifetimeMs = token.expiresInS * 1000
    const marginMs = Math.min(SERVICE_TOKEN_REFRESH_MARGIN_S * 1000, lifetimeMs / 2)
    return { token: token.accessToken, refreshAtMs: startedAt + lifetimeMs - marginMs }
  }

  #failure (status: number, body: unknown): Error {
    // RFC 6749 §5.2: a 400/401 with `error` is the server refusing these credentials or this request.
    const code = body !== null && typeof body === 'object' ? (body as { error?: unknown }).error : undefined
    const rfcCode = typeof code === 'string' && ERROR_CODE.test(code) ? code : undefined
    if (status >= 400 && status < 500) {
      return sharedError('ST_REJECTED', { description: `The token endpoint refused the client credentials${rfcCode === undefined ? '' : ` (${rfcCode})`}; HTTP ${status}.` })
    }
    return sharedError(status >= 500 ? 'ST_UNAVAILABLE' : 'ST_BAD_RESPONSE', { description: `The token endpoint answered HTTP ${status}.` })
  }

  #parse (body: unknown): { accessToken: string, expiresInS: number } {
    const o = body !== null && typeof body === 'object' ? body as Record<string, unknown> : {}
    const { access_token: accessToken, token_type: tokenType, expires_in: expiresIn } = o
    // RFC 6749 §7.1: the token type is case-insensitive.
    if (typeof accessToken !== 'string' || accessToken === '' ||
      typeof tokenType !== 'string' || tokenType.toLowerCase() !== 'bearer' ||
      typeof expiresIn !== 'number' || !Number.isFinite(expiresIn) || expiresIn <= 0) {
      throw sharedError('ST_BAD_RESPONSE')
    }
    return { accessToken, expiresInS: expiresIn }
  }
}
