/**
 * The issuer's public keys, fetched from its JWKS with jose's `createRemoteJWKSet`, which
 * already gives us: keys cached for `maxAgeMs`; an unknown `kid` refetches at most once per
 * `cooldownMs`; concurrent callers share one in-flight fetch. Around it, this adds what a
 * hostile or absent JWKS host needs:
 * - every answer is checked (200 only, no redirects followed, size cap, a real key set)
 *   and any failure becomes `JwksUnavailableError`;
 * - after a failure, no new fetch for `failureBackoffMs` (jose would otherwise refetch on
 *   every request while nothing is cached), and the last good key set keeps verifying,
 *   so a JWKS outage does not turn into a token outage once keys are known;
 * - nothing is fetched at construction: a service started while the issuer is down
 *   answers 503 and recovers on its own once the JWKS answers.
 */
import { type JSONWebKeySet, type JWTVerifyGetKey, createLocalJWKSet, createRemoteJWKSet, customFetch } from 'jose'
import { type Clock, systemClock } from './clock.js'

export const JWKS_COOLDOWN_MS = 30_000
export const JWKS_MAX_AGE_MS = 10 * 60_000
export const JWKS_TIMEOUT_MS = 3_000
export const JWKS_FAILURE_BACKOFF_MS = 2_000
/** A key set of a few public keys is a few KB. */
export const JWKS_MAX_BYTES = 64 * 1024

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>

export interface JwksTuning {
  readonly cooldownMs?: number
  readonly maxAgeMs?: number
  readonly timeoutMs?: number
  readonly failureBackoffMs?: number
}

export interface RemoteJwksOptions extends JwksTuning {
  readonly clock?: Clock
  readonly fetch?: FetchLike
  /** Called once per JWKS fetch attempt (for metrics). */
  readonly onFetch?: (ok: boolean) => void
}

export class JwksUnavailableError extends Error {
  constructor (reason: string, options?: { cause?: unknown }) {
    super(reason, options)
    this.name = 'JwksUnavailableError'
  }
}

function isPlainObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype
}

function isKeySet (v: unknown): v is JSONWebKeySet {
  return isPlainObject(v) && Array.isArray(v.keys) && v.keys.every(isPlainObject)
}

async function readCapped (response: Response, maxBytes: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? '0')
  if (declared > maxBytes) throw new JwksUnavailableError('JWKS answer too large')
  if (response.body === null) return ''
  const chunks: Uint8Array[] = []
  let total = 0
  const reader = response.body.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    total += value.byteLength
    if (total > maxBytes) {
      await reader.cancel()
      throw new JwksUnavailableError('JWKS answer too large')
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}

export class RemoteJwks {
  readonly #fetchImpl: FetchLike
  readonly #clock: Clock
  readonly #failureBackoffMs: number
  readonly #onFetch: ((ok: boolean) => void) | undefined
  readonly #remote: ReturnType<typeof createRemoteJWKSet>
  #lastGood: JSONWebKeySet | undefined
  #fallback: JWTVerifyGetKey | undefined
  #failedUntil = Number.NEGATIVE_INFINITY
  #fetches = 0
  #failures = 0

  constructor (url: string | URL, options: RemoteJwksOptions = {}) {
    this.#fetchImpl = options.fetch ?? ((u, init) => fetch(u, init))
    this.#clock = options.clock ?? systemClock
    this.#failureBackoffMs = options.failureBackoffMs ?? JWKS_FAILURE_BACKOFF_MS
    this.#onFetch = options.onFetch
    this.#remote = createRemoteJWKSet(new URL(url), {
      cooldownDuration: options.cooldownMs ?? JWKS_COOLDOWN_MS,
      cacheMaxAge: options.maxAgeMs ?? JWKS_MAX_AGE_MS,
      timeoutDuration: options.timeoutMs ?? JWKS_TIMEOUT_MS,
      [customFetch]: (u, init) => this.#fetch(u, init)
    })
  }

  /** A `jwtVerify` key resolver. Throws `JwksUnavailableError` when no keys can be had. */
  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    if (this.#clock.now() < this.#failedUntil) return await this.#fromLastGood(header, token)
    try {
      return await this.#remote(header, token)
    } catch (err) {
      if (err instanceof JwksUnavailableError) return await this.#fromLastGood(header, token)
      throw err
    }
  }

  /** Keys are cached, or the JWKS answers now with a key set. */
  async ready (): Promise<boolean> {
    if (this.#lastGood !== undefined) return true
    if (this.#clock.now() < this.#failedUntil) return false
    try {
      await this.#remote.reload()
      return true
    } catch {
      return false
    }
  }

  stats (): { fetches: number, failures: number, keysCached: boolean } {
    return { fetches: this.#fetches, failures: this.#failures, keysCached: this.#lastGood !== undefined }
  }

  async #fromLastGood (...args: Parameters<JWTVerifyGetKey>): Promise<Awaited<ReturnType<JWTVerifyGetKey>>> {
    if (this.#lastGood === undefined) throw new JwksUnavailableError('no signing keys cached')
    this.#fallback ??= createLocalJWKSet(this.#lastGood)
    return await this.#fallback(...args)
  }

  async #fetch (url: string, init: RequestInit): Promise<Response> {
    this.#fetches++
    try {
      // Redirects are not followed: the JWKS lives where it was configured (RFC 8725 §3.10).
      const response = await this.#fetchImpl(url, { ...init, redirect: 'manual' })
      if (response.status !== 200) {
        await response.body?.cancel()
        throw new JwksUnavailableError(`JWKS answered HTTP ${response.status}`)
      }
      const text = await readCapped(response, JWKS_MAX_BYTES)
      let json: unknown
      try {
        json = JSON.parse(text)
      } catch {
        throw new JwksUnavailableError('JWKS answer is not JSON')
      }
      if (!isKeySet(json)) throw new JwksUnavailableError('JWKS answer is not a key set')
      this.#lastGood = json
      this.#fallback = undefined
      this.#failedUntil = Number.NEGATIVE_INFINITY
      this.#onFetch?.(true)
      return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } })
    } catch (err) {
      this.#failures++
      this.#failedUntil = this.#clock.now() + this.#failureBackoffMs
      this.#onFetch?.(false)
      throw err instanceof JwksUnavailableError ? err : new JwksUnavailableError('JWKS fetch failed', { cause: err })
    }
  }
}
