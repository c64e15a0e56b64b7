/**
 * Access tokens for service-to-service calls: the OAuth 2.0 client credentials grant
 * (RFC 6749 §4.4) against the gateway's token endpoint. The token is cached until
 * `SERVICE_TOKEN_REFRESH_MARGIN_S` before it expires, and concurrent callers share one
 * request. Failures are `LatchkeyError`s (ST_*); neither the secret nor a token ever
 * appears in an error message.
 */
import { type Clock, systemClock } from './clock.js'
import { sharedError } from './http-errors.js'

/** Fetch a new token this long before the current one expires, so it never expires in flight. */
export const SERVICE_TOKEN_REFRESH_MARGIN_S = 30
export const SERVICE_TOKEN_TIMEOUT_MS = 5_000
/** A token response is a few KB at most. */
const MAX_RESPONSE_BYTES = 64 * 1024
const ERROR_CODE = /^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$/

export type TokenFetch = (url: string, init: RequestInit) => Promise<Response>

export interface ServiceTokenSourceOptions {
  readonly tokenUrl: string
  readonly clientId: string
  readonly clientSecret: string
  readonly audience: string
  /** Space-separated; omitted → the client's registered scopes. */
  readonly scope?: string
  readonly clock?: Clock
  readonly fetch?: TokenFetch
  readonly timeoutMs?: number
}

interface CachedToken { readonly token: string, readonly refreshAtMs: number }

/** RFC 6749 §2.3.1: id and secret are form-urlencoded before being joined for HTTP Basic. */
export function basicCredentials (clientId: string, clientSecret: string): string {
  const encode = (v: string): string => new URLSearchParams({ v }).toString().slice(2)
  return `Basic ${Buffer.from(`${encode(clientId)}:${encode(clientSecret)}`).toString('base64')}`
}

export class ServiceTokenSource {
  readonly #tokenUrl: string
  readonly #authorization: string
  readonly #body: string
  readonly #clock: Clock
  readonly #fetch: TokenFetch
  readonly #timeoutMs: number
  #cached: CachedToken | undefined
  #pending: Promise<string> | undefined

  constructor (options: ServiceTokenSourceOptions) {
    this.#tokenUrl = new URL(options.tokenUrl).href
    this.#authorization = basicCredentials(options.clientId, options.clientSecret)
    const form = new URLSearchParams({ grant_type: 'client_credentials', audience: options.audience })
    if (options.scope !== undefined && options.scope !== '') form.set('scope', options.scope)
    this.#body = form.toString()
    this.#clock = options.clock ?? systemClock
    this.#fetch = options.fetch ?? ((u, init) => fetch(u, init))
    this.#timeoutMs = options.timeoutMs ?? SERVICE_TOKEN_TIMEOUT_MS
  }

  /** A token valid for at least the refresh margin (or half its lifetime, if shorter). */
  async getToken (): Promise<string> {
    const cached = this.#cached
    if (cached !== undefined && this.#clock.now() < cached.refreshAtMs) return cached.token
    this.#pending ??= this.#request().finally(() => { this.#pending = undefined })
    return await this.#pending
  }

  /** Forget the cached token (e.g. after a resource answered 401 with it). */
  invalidate (): void {
    this.#cached = undefined
  }

  async #request (): Promise<string> {
    const startedAt = this.#clock.now()
    let response: Response
    let text: string
    try {
      response = await this.#fetch(this.#tokenUrl, {
        method: 'POST',
        headers: { authorization: this.#authorization, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: this.#body,
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
    this.#cached = { token: token.accessToken, refreshAtMs: startedAt + lifetimeMs - marginMs }
    return token.accessToken
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
