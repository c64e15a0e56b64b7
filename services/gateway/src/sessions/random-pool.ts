/**
 * Random bytes for the rotation hot path, drawn from the CSPRNG in batches: one
 * `randomFillSync` per RANDOM_POOL_BYTES instead of one OpenSSL call per rotation
 * (measured 3.1 µs for `randomBytes(32)`, 0.25 µs from the pool). Node's own `randomUUID`
 * batches the same way. Every byte is handed out once and copied out; none is reused.
 */
import { randomBytes, randomFillSync } from 'node:crypto'

/** Bytes drawn per refill: 128 nonces of 32 bytes. */
export const RANDOM_POOL_BYTES = 4096

export class RandomPool {
  readonly #pool: Buffer
  #offset: number

  constructor (size = RANDOM_POOL_BYTES) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError('size must be a positive integer')
    this.#pool = Buffer.allocUnsafe(size)
    // Empty: the first call fills it.
    this.#offset = size
  }

  /** `n` fresh random bytes, in a buffer of their own. */
  take (n: number): Buffer {
    if (!Number.isInteger(n) || n < 0) throw new RangeError('n must be a non-negative integer')
    if (n > this.#pool.length) return randomBytes(n)
    if (this.#offset + n > this.#pool.length) {
      // The unused tail is dropped, never handed out after the refill.
      randomFillSync(this.#pool)
      this.#offset = 0
    }
    const out = Buffer.from(this.#pool.subarray(this.#offset, this.#offset + n))
    this.#offset += n
    return out
  }
}

/**
 * Random hex for ids sent as text (a W3C `traceparent` per proxied request): the pool is
 * converted to hex once per refill, and each call hands out a slice of that string, so an
 * id costs a substring instead of a buffer copy and two hex encodings per call.
 * Every character is handed out once.
 */
export class RandomHexPool {
  readonly #bytes: Buffer
  #hex = ''
  #offset = 0

  constructor (size = RANDOM_POOL_BYTES) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError('size must be a positive integer')
    this.#bytes = Buffer.allocUnsafe(size)
  }

  /** `n` fresh random bytes as `2n` lowercase hex characters. */
  take (n: number): string {
    if (!Number.isInteger(n) || n < 0) throw new RangeError('n must be a non-negative integer')
    const chars = 2 * n
    if (n > this.#bytes.length) return randomBytes(n).toString('hex')
    if (this.#offset + chars > this.#hex.length) {
      randomFillSync(this.#bytes)
      this.#hex = this.#bytes.toString('hex')
      this.#offset = 0
    }
    const out = this.#hex.slice(this.#offset, this.#offset + chars)
    this.#offset += chars
    return out
  }
}
