/**
 * A bounded cache of tokens whose signature and claims already passed, so a token seen
 * again costs a map lookup instead of a signature check. Eviction is LRU by second chance
 * (CLOCK): a hit only marks its entry, and a marked entry at the old end is moved to the
 * new end instead of being evicted. A hit therefore writes no key into the map: re-inserting
 * on every hit kept each request's copy of the token string alive past the young
 * generation, which cost the proxy hop more GC time than the lookup itself (profiled).
 * Entries die at the token's `exp`; after that the token goes back through full
 * verification (and its clock tolerance). Keys are canonical token strings (see
 * token-format.ts); revocation is never decided here — callers check `sid`/`jti` on every hit.
 */
import { type Clock, systemClock } from './clock.js'

/** ~1 KB per gateway token: about 10 MB at most. */
export const VERIFIED_TOKEN_CACHE_SIZE = 10_000
/** Expired entries dropped from the oldest end per insertion, so they do not wait for LRU pressure. */
const SWEEP_PER_SET = 2

interface Entry<V> { readonly value: V, readonly expiresAtMs: number, used: boolean }

export class VerifiedTokenCache<V> {
  readonly maxEntries: number
  readonly #clock: Clock
  // A Map iterates in insertion order: the first key is the oldest insertion (or second chance).
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
    if (this.#clock.now() >= entry.expiresAtMs) {
      this.#entries.delete(key)
      return undefined
    }
    entry.used = true
    return entry.value
  }

  set (key: string, value: V, expiresAtMs: number): void {
    if (this.maxEntries === 0 || this.#clock.now() >= expiresAtMs) return
    this.#entries.delete(key)
    this.#entries.set(key, { value, expiresAtMs, used: false })
    this.#sweep()
    // Ends: each pass clears a mark or evicts, and there are at most `size` marks.
    while (this.#entries.size > this.maxEntries) {
      const oldest = this.#entries.entries().next()
      if (oldest.done === true) break
      const [oldKey, entry] = oldest.value
      this.#entries.delete(oldKey)
      if (entry.used) {
        entry.used = false
        this.#entries.set(oldKey, entry)
      }
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
