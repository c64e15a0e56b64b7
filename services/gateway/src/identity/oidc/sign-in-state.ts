/**
 * Short-lived sign-in state for the OIDC relying party, shared by every replica (a sign-in
 * may start on one and come back to another):
 * - a pending authorization request (PKCE verifier, nonce, return_to) keyed by its `state`,
 *   taken exactly once: a replayed or second callback finds nothing (RFC 9700 §4.7);
 * - logout-token `jti`s seen, so a replayed back-channel logout token is refused
 *   (OIDC Back-Channel Logout 1.0 §2.6 step 8 allows it; we do it).
 *
 * Redis when the gateway has Redis (GETDEL and SET NX PX, one key each, so Cluster-safe;
 * every key has a TTL), this process otherwise.
 */
import { createHash } from 'node:crypto'
import type { Clock } from '#shared/clock.js'
import { gatewayError } from '../../errors.js'
import type { RedisClient } from '../../sessions/redis-connection.js'

export interface SignInStateStore {
  /** Keep `value` under `key` for `ttlMs`. */
  put (key: string, value: string, ttlMs: number): Promise<void>
  /** The value under `key`, deleted in the same step; null when absent, expired or already taken. */
  take (key: string): Promise<string | null>
  /** True the first time `key` is seen within `ttlMs`, false after. */
  once (key: string, ttlMs: number): Promise<boolean>
}

/** Keys are hashed: a state or jti is a bearer secret for its few minutes. */
function keyOf (key: string): string {
  return `oidc:st:{${createHash('sha256').update(key).digest('base64url').slice(0, 32)}}`
}

function unavailable (err: unknown): Error {
  return gatewayError('GW_STORE_UNAVAILABLE', { cause: err instanceof Error ? new Error(err.message) : undefined })
}

export class RedisSignInStateStore implements SignInStateStore {
  readonly #client: RedisClient
  constructor (client: RedisClient) { this.#client = client }

  async put (key: string, value: string, ttlMs: number): Promise<void> {
    try { await this.#client.set(keyOf(key), value, 'PX', ttlMs) } catch (err) { throw unavailable(err) }
  }

  async take (key: string): Promise<string | null> {
    try { return await this.#client.getdel(keyOf(key)) } catch (err) { throw unavailable(err) }
  }

  async once (key: string, ttlMs: number): Promise<boolean> {
    try { return (await this.#client.set(keyOf(key), '1', 'PX', ttlMs, 'NX')) === 'OK' } catch (err) { throw unavailable(err) }
  }
}

/** Bounded: a flood of unfinished sign-ins drops the oldest, as Redis eviction would. */
export const MEMORY_SIGN_IN_STATE_MAX = 10_000

export class MemorySignInStateStore implements SignInStateStore {
  readonly #entries = new Map<string, { value: string, expiresAt: number }>()
  readonly #clock: Clock
  constructor (clock: Clock) { this.#clock = clock }

  #live (key: string): { value: string, expiresAt: number } | undefined {
    const k = keyOf(key)
    const e = this.#entries.get(k)
    if (e !== undefined && e.expiresAt <= this.#clock.now()) this.#entries.delete(k)
    return e !== undefined && e.expiresAt > this.#clock.now() ? e : undefined
  }

  async put (key: string, value: string, ttlMs: number): Promise<void> {
    while (this.#entries.size >= MEMORY_SIGN_IN_STATE_MAX) this.#entries.delete(this.#entries.keys().next().value as string)
    this.#entries.set(keyOf(key), { value, expiresAt: this.#clock.now() + ttlMs })
  }

  async take (key: string): Promise<string | null> {
    const e = this.#live(key)
    this.#entries.delete(keyOf(key))
    return e?.value ?? null
  }

  async once (key: string, ttlMs: number): Promise<boolean> {
    if (this.#live(key) !== undefined) return false
    await this.put(key, '1', ttlMs)
    return true
  }
}
