/**
 * Brute-force limits for password checks (POST /auth/login and the password grant): one
 * failure counter per client IP and one per username, in Redis when the gateway has Redis
 * (so the limit holds across replicas) and in process otherwise.
 *
 * They count failures, not sign-ins (docs/contract.md "Browser flow": a success clears the user's
 * count; successes never lock anyone out). Each attempt is counted *before* its password
 * is checked, so parallel guesses cannot all slip under the limit, and a success then takes
 * its own count back: the user's counter is cleared, the IP's decremented. A success
 * therefore never resets another address's failures, and a sprayer with one valid account
 * cannot launder the per-IP count. Unknown and known usernames are counted alike, so the
 * answer does not say whether a user exists.
 *
 * @fastify/rate-limit counts every request and offers no way to take one back, hence this
 * small counter. When Redis cannot answer, the limit cannot be checked: the attempt is
 * refused with 503 rather than let through, so an outage never opens an unthrottled
 * password oracle.
 */
import type { FastifyRequest } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import { createHash } from 'node:crypto'
import type { Clock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import type { GatewayEvents } from '../ops/events.js'

export interface LoginLimits {
  readonly perUsername: number
  readonly perIp: number
  readonly windowS: number
}

export interface LoginLimiter {
  /** Counts one attempt before its password is checked; throws 429 (with Retry-After) over a limit. */
  check (req: FastifyRequest, username: string): Promise<void>
  /** The attempt succeeded: clears the user's failures and takes this attempt off the IP's count. */
  succeeded (req: FastifyRequest, username: string): Promise<void>
}

/** Failure counters that live for one window from their first failure. */
export interface AttemptCounter {
  /** Add one to `key`; returns the count and the ms until the window ends. */
  add (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }>
  /** Take one off `key` (never below zero); the window is unchanged. */
  takeBack (key: string): Promise<void>
  clear (key: string): Promise<void>
}

const COUNTER_KEY_PREFIX = 'rl:'

const ADD_ATTEMPT = {
  numberOfKeys: 1,
  lua: `
-- KEYS[1]: the counter; ARGV[1]: the window (ms). Every key has a TTL: the window starts at the first failure.
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
`
}

const TAKE_BACK_ATTEMPT = {
  numberOfKeys: 1,
  lua: `
-- KEYS[1]: the counter. DECR keeps the TTL; a counter that expired meanwhile stays gone.
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return n
`
}

type CountingClient = (Redis | Cluster) & {
  lkAddAttempt (key: string, windowMs: number): Promise<[number, number]>
  lkTakeBackAttempt (key: string): Promise<number>
}

export class RedisAttemptCounter implements AttemptCounter {
  readonly #client: CountingClient

  constructor (client: Redis | Cluster) {
    const c = client as CountingClient
    if (typeof c.lkAddAttempt !== 'function') c.defineCommand('lkAddAttempt', ADD_ATTEMPT)
    if (typeof c.lkTakeBackAttempt !== 'function') c.defineCommand('lkTakeBackAttempt', TAKE_BACK_ATTEMPT)
    this.#client = c
  }

  async add (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }> {
    const [count, ttlMs] = await this.#client.lkAddAttempt(COUNTER_KEY_PREFIX + key, windowMs)
    return { count, ttlMs }
  }

  async takeBack (key: string): Promise<void> {
    await this.#client.lkTakeBackAttempt(COUNTER_KEY_PREFIX + key)
  }

  async clear (key: string): Promise<void> {
    await this.#client.del(COUNTER_KEY_PREFIX + key)
  }
}

/** The in-process twin: the same rules, swept once per window so it holds one window's worth. */
export class MemoryAttemptCounter implements AttemptCounter {
  readonly #counts = new Map<string, { count: number, until: number }>()
  readonly #clock: Clock
  readonly #timer: NodeJS.Timeout

  constructor (clock: Clock, sweepIntervalMs: number) {
    this.#clock = clock
    this.#timer = setInterval(() => { this.sweep() }, sweepIntervalMs)
    this.#timer.unref()
  }

  #live (key: string): { count: number, until: number } | undefined {
    const entry = this.#counts.get(key)
    if (entry === undefined || entry.until > this.#clock.now()) return entry
    this.#counts.delete(key)
    return undefined
  }

  async add (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }> {
    const entry = this.#live(key) ?? { count: 0, until: this.#clock.now() + windowMs }
    entry.count += 1
    this.#counts.set(key, entry)
    return { count: entry.count, ttlMs: entry.until - this.#clock.now() }
  }

  async takeBack (key: string): Promise<void> {
    const entry = this.#live(key)
    if (entry !== undefined && entry.count > 0) entry.count -= 1
  }

  async clear (key: string): Promise<void> {
    this.#counts.delete(key)
  }

  get size (): number { return this.#counts.size }

  sweep (): void {
    const now = this.#clock.now()
    for (const [key, entry] of this.#counts) if (entry.until <= now) this.#counts.delete(key)
  }

  close (): void { clearInterval(this.#timer) }
}

export function createLoginLimiter (limits: LoginLimits, counter: AttemptCounter, events: GatewayEvents): LoginLimiter {
  const windowMs = limits.windowS * 1000
  const ipKey = (req: FastifyRequest): string => `ip:${req.ip}`
  // Hashed: usernames are not secret, but Redis key names should not collect them either.
  const userKey = (username: string): string => `user:${createHash('sha256').update(username).digest('base64url').slice(0, 22)}`

  async function store<T> (op: () => Promise<T>): Promise<T> {
    try {
      return await op()
    } catch (err) {
      if (isLatchkeyError(err)) throw err
      throw gatewayError('GW_STORE_UNAVAILABLE', { cause: err })
    }
  }

  return {
    async check (req, username) {
      const [byIp, byUser] = await store(() => Promise.all([counter.add(ipKey(req), windowMs), counter.add(userKey(username), windowMs)]))
      const over = byIp.count > limits.perIp ? { limit: 'ip' as const, ttlMs: byIp.ttlMs } : byUser.count > limits.perUsername ? { limit: 'username' as const, ttlMs: byUser.ttlMs } : undefined
      if (over === undefined) return
      events.rateLimited(req, over.limit)
      throw gatewayError('GW_RATE_LIMITED', { headers: { 'Retry-After': String(Math.max(1, Math.ceil(over.ttlMs / 1000))) } })
    },
    async succeeded (req, username) {
      await store(() => Promise.all([counter.takeBack(ipKey(req)), counter.clear(userKey(username))]))
    }
  }
}
