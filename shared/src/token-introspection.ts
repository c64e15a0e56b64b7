/**
 * Revocation checks for a service called directly (not through the gateway's proxy): asks
 * the gateway's RFC 7662 introspection endpoint whether an already-verified access token
 * is still live. A JWT's signature stays valid after logout until its `exp`; only the
 * gateway knows the session was revoked, and introspection is how it tells.
 *
 * - Opt-in (the access-token plugin's `introspection` option): every admitted token costs
 *   at most one call per `cacheMs`; answers are cached per token, never past its `exp`.
 * - Fails closed: when the gateway cannot answer, the request is refused with 503
 *   (AT_INTROSPECTION_UNAVAILABLE) rather than admitted unchecked.
 * - Concurrent checks of one token share one call.
 * The client authenticates with HTTP Basic (client_secret_basic); the token and the
 * secret never appear in an error.
 */
import { type Clock, systemClock } from './clock.js'
import { sharedError } from './http-errors.js'
import { type TokenFetch, basicCredentials } from './service-token-source.js'

/** How long a "live" answer is trusted: the gateway's own revocation promise is 1 s. */
export const INTROSPECTION_CACHE_MS = 1000
export const INTROSPECTION_TIMEOUT_MS = 2000
export const INTROSPECTION_CACHE_MAX_ENTRIES = 10_000
const MAX_RESPONSE_BYTES = 64 * 1024

export interface TokenIntrospectionOptions {
  /** The gateway's `introspection_endpoint`, e.g. http://gateway:8080/oauth/introspect. */
  readonly url: string
  readonly clientId: string
  readonly clientSecret: string
  /** 0 asks on every request. */
  readonly cacheMs?: number
  readonly timeoutMs?: number
  readonly maxEntries?: number
  readonly clock?: Clock
  readonly fetch?: TokenFetch
}

interface Entry { readonly active: boolean, readonly untilMs: number }

export class TokenIntrospection {
  readonly #url: string
  readonly #authorization: string
  readonly #cacheMs: number
  readonly #timeoutMs: number
  readonly #maxEntries: number
  readonly #clock: Clock
  readonly #fetch: TokenFetch
  readonly #cache = new Map<string, Entry>()
  readonly #pending = new Map<string, Promise<boolean>>()

  constructor (options: TokenIntrospectionOptions) {
    this.#url = new URL(options.url).href
    this.#authorization = basicCredentials(options.clientId, options.clientSecret)
    this.#cacheMs = options.cacheMs ?? INTROSPECTION_CACHE_MS
    if (!Number.isSafeInteger(this.#cacheMs) || this.#cacheMs < 0) throw new TypeError('cacheMs must be a non-negative integer')
    this.#timeoutMs = options.timeoutMs ?? INTROSPECTION_TIMEOUT_MS
    this.#maxEntries = options.maxEntries ?? INTROSPECTION_CACHE_MAX_ENTRIES
    this.#clock = options.clock ?? systemClock
    this.#fetch = options.fetch ?? ((u, init) => fetch(u, init))
  }

  /**
   * Whether the gateway still considers `token` live. `expMs` (the verified token's exp)
   * bounds the cache. Throws AT_INTROSPECTION_UNAVAILABLE when there is no answer.
   */
  async isActive (token: string, expMs: number): Promise<boolean> {
    const now = this.#clock.now()
    const cached = this.#cache.get(token)
    if (cached !== undefined && now < cached.untilMs) return cached.active
    let pending = this.#pending.get(token)
    if (pending === undefined) {
      pending = this.#ask(token).finally(() => this.#pending.delete(token))
      this.#pending.set(token, pending)
    }
    const active = await pending
    if (this.#cacheMs > 0) {
      if (this.#cache.size >= this.#maxEntries) this.#cache.clear()
      this.#cache.set(token, { active, untilMs: Math.min(now + this.#cacheMs, expMs) })
    }
    return active
  }

  async #ask (token: string): Promise<boolean> {
    let response: Response
    let text: string
    try {
      response = await this.#fetch(this.#url, {
        method: 'POST',
        headers: { authorization: this.#authorization, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        redirect: 'manual',
        signal: AbortSignal.timeout(this.#timeoutMs)
      })
      text = await response.text()
    } catch (err) {
      throw sharedError('AT_INTROSPECTION_UNAVAILABLE', { cause: err })
    }
    if (response.status !== 200 || text.length > MAX_RESPONSE_BYTES) {
      throw sharedError('AT_INTROSPECTION_UNAVAILABLE', { cause: new Error(`introspection endpoint answered HTTP ${response.status}`) })
    }
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      body = undefined
    }
    const active = body !== null && typeof body === 'object' ? (body as { active?: unknown }).active : undefined
    // RFC 7662 §2.2: `active` is a boolean; anything else is not an answer.
    if (typeof active !== 'boolean') throw sharedError('AT_INTROSPECTION_UNAVAILABLE', { cause: new Error('introspection response without a boolean active') })
    return active
  }
}
