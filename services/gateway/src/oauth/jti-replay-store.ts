/**
 * Single use of client assertions (RFC 7523 §3 item 7, OIDC Core §9: "the authorization
 * server MUST only accept a jti once"): an assertion's `(iss, jti)` is claimed once and
 * kept until the assertion's `exp`; a second claim within that time is a replay. Past
 * `exp` the assertion is refused on its own, so nothing needs keeping longer.
 *
 * Two twins pass one contract (test/oauth/jti-replay-store.contract.ts): this in-process
 * one for the embedded store, and RedisJtiReplayStore for every replica at once.
 */
import { createHash } from 'node:crypto'
import type { Clock } from '#shared/clock.js'
import { gatewayError } from '../errors.js'

export interface JtiReplayStore {
  /**
   * Claim `jti` of `issuer` until `expiresAtMs`: true the first time, false for a replay.
   * Throws GW_STORE_UNAVAILABLE when the claim cannot be recorded (never "true" unrecorded).
   */
  claim (issuer: string, jti: string, expiresAtMs: number): Promise<boolean>
  close (): Promise<void>
}

/** Claims kept in one process; assertions live minutes, so this stays small. */
export const MEMORY_JTI_MAX_ENTRIES = 100_000
export const MEMORY_JTI_SWEEP_INTERVAL_MS = 30_000

/** A fixed-length id for `(issuer, jti)`: both are client-chosen text of any length. */
export function jtiDigest (issuer: string, jti: string): string {
  return createHash('sha256').update(issuer).update('\0').update(jti).digest('base64url').slice(0, 32)
}

export class MemoryJtiReplayStore implements JtiReplayStore {
  readonly #clock: Clock
  readonly #maxEntries: number
  readonly #until = new Map<string, number>()
  readonly #timer: NodeJS.Timeout

  constructor (options: { clock: Clock, maxEntries?: number, sweepIntervalMs?: number }) {
    this.#clock = options.clock
    this.#maxEntries = options.maxEntries ?? MEMORY_JTI_MAX_ENTRIES
    this.#timer = setInterval(() => { this.sweep() }, options.sweepIntervalMs ?? MEMORY_JTI_SWEEP_INTERVAL_MS)
    this.#timer.unref()
  }

  async claim (issuer: string, jti: string, expiresAtMs: number): Promise<boolean> {
    const key = jtiDigest(issuer, jti)
    const now = this.#clock.now()
    const held = this.#until.get(key)
    if (held !== undefined && held > now) return false
    if (this.#until.size >= this.#maxEntries) this.sweep()
    // Full of live claims: refuse rather than forget one (forgetting would allow a replay).
    if (this.#until.size >= this.#maxEntries) throw gatewayError('GW_STORE_UNAVAILABLE')
    this.#until.set(key, expiresAtMs)
    return true
  }

  get size (): number { return this.#until.size }

  sweep (): void {
    const now = this.#clock.now()
    for (const [key, until] of this.#until) if (until <= now) this.#until.delete(key)
  }

  async close (): Promise<void> { clearInterval(this.#timer) }
}
