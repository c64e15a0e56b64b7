/**
 * Assertion ids in Redis, shared by every replica: one key per claim,
 * `<prefix>jti:{<digest>}`, written with `SET NX PX` so that the first claim wins
 * atomically and the key dies with the assertion. One key per command, so any slot.
 */
import type { Clock } from '#shared/clock.js'
import { gatewayError } from '../errors.js'
import type { RedisClient } from '../sessions/redis-connection.js'
import { jtiDigest, type JtiReplayStore } from './jti-replay-store.js'

/** Kept at least this long, so a claim never expires before it is written. */
const MIN_TTL_MS = 1000

export class RedisJtiReplayStore implements JtiReplayStore {
  readonly #client: RedisClient
  readonly #clock: Clock
  readonly #prefix: string

  /**
   * `keyPrefix` as for RedisFamilyStore: the part of it the client already prepends
   * (ioredis `keyPrefix`) is not added twice.
   */
  constructor (options: { client: RedisClient, clock: Clock, keyPrefix: string }) {
    if (/[{}]/.test(options.keyPrefix)) throw new RangeError('keyPrefix must not contain { or }')
    const clientPrefix = options.client.options.keyPrefix ?? ''
    this.#prefix = clientPrefix !== '' && options.keyPrefix.startsWith(clientPrefix) ? options.keyPrefix.slice(clientPrefix.length) : options.keyPrefix
    this.#client = options.client
    this.#clock = options.clock
  }

  key (issuer: string, jti: string): string {
    return `${this.#prefix}jti:{${jtiDigest(issuer, jti)}}`
  }

  async claim (issuer: string, jti: string, expiresAtMs: number): Promise<boolean> {
    const ttlMs = Math.max(MIN_TTL_MS, Math.ceil(expiresAtMs - this.#clock.now()))
    try {
      return await this.#client.set(this.key(issuer, jti), '1', 'PX', ttlMs, 'NX') === 'OK'
    } catch (err) {
      // The cause keeps name and message only: ioredis attaches the command's arguments.
      const cause = new Error(err instanceof Error ? err.message : String(err))
      throw gatewayError('GW_STORE_UNAVAILABLE', { cause })
    }
  }

  /** The connection belongs to the gateway (shared with the family store). */
  async close (): Promise<void> {}
}
