/**
 * A bounded LRU of tokens whose signature and claims already passed, so a token seen
 * again costs a map lookup instead of a signature check. Entries die at the token's
 * `exp`; after that the token goes back through full verification (and its clock
 * tolerance). Keys are canonical token strings (see token-format.ts); revocation is
 * never decided here — callers check `sid`/`jti` on every hit.
 */
import { type Clock, systemClock } from './clock.js'

/** ~1 KB per gateway token: about 10 MB at most. */
export const VERIFIED_TOKEN_CACHE_SIZE = 10_000
/** Expired entries dropped from the oldest end per insertion, so they do not wait for LRU pressure. */
const SWEEP_PER_SET = 2

interface Entry<V> { readonly value: V, readonly expiresAtMs: number }

export class VerifiedTokenCache<V> {
  readonly maxEntries: number
  readonly #clock: Clock
  // A Map iterates in insertion order: re-inserting on a hit makes the first key the least recently used.
  readonly #entries = new Map<string, Entry<V>>()

  constructor (options: { maxEntries?: number, clock?: Clock } = {}) {
    const maxEntries = options.maxEntries ?? VERIFIED_TOKEN_CACHE_SIZE
    if (!Number.isInteger(maxEntries) || maxEntries < 0) throw new TypeError('maxEntries must be a non-negative integer')
    this.maxEntries = maxEntries
    this.#clock = options.clock ?? systemClock
  }

  get size (): number { return this.#entries.size }

  get (key: string): V | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined) return undefined
    this.#entries.delete(key)
    if (this.#clock.now() >= entry.expiresAtMs) return undefined
    this.#entries.set(key, entry)
    return entry.value
  }

  set (key: string, value: V, expiresAtMs: number): void {
    if (this.maxEntries === 0 || this.#clock.now() >= expiresAtMs) return
    this.#entries.delete(key)
    this.#entries.set(key, { value, expiresAtMs })
    this.#sweep()
    while (this.#entries.size > this.maxEntries) {
      const oldest = this.#entries.keys().next()
      if (oldest.done === true) break
      this.#entries.delete(oldest.value)
    }
  }

  delete (key: string): boolean { return this.#entries.delete(key) }

  clear (): void { this.#entries.clear() }

  #sweep (): void {
    const now = this.#clock.now()
    let checked = 0
    for (const [key, entry] of this.#entries) {
      if (checked++ >= SWEEP_PER_SET) break
      if (now >= entry.expiresAtMs) this.#entries.delete(key)
    }
  }
}
