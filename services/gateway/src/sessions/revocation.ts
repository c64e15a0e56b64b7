/**
 * Edge revocation (SPEC "Proxy"): a revoked session's access tokens are refused at every
 * replica within a second, while resource services stay stateless.
 *
 * Each replica keeps the revoked sids in memory, each for one access-token lifetime (after
 * that every token of the session has expired anyway), so the proxy asks a Map, never
 * Redis. Replicas learn of revocations over pub/sub; a sorted set with the same lifetime
 * lets a replica that (re)connects, or starts after the fact, load what it missed.
 */
import type { Cluster, Redis } from 'ioredis'
import type { Clock } from '#shared/clock.js'

/** Sweep expired sids this often, so the map never holds more than one access TTL's worth. */
export const REVOCATION_SWEEP_INTERVAL_MS = 10_000
/**
 * A starting replica waits this long for the revoked set before it serves, so that it never
 * accepts a token revoked before it started; with Redis down it starts anyway (and loads on reconnect).
 */
export const REVOCATION_INITIAL_LOAD_TIMEOUT_MS = 2000
/** Access tokens are accepted up to this long after exp (verifier clock tolerance), so keep sids a little longer. */
export const REVOCATION_SLACK_MS = 10_000

export interface RevokedSessions {
  has (sid: string): boolean
}

export interface RevocationLog {
  warn (obj: object, msg: string): void
}

/** The in-process set: enough on its own for a single in-memory gateway. */
export class LocalRevokedSessions implements RevokedSessions {
  readonly #until = new Map<string, number>()
  readonly #clock: Clock
  readonly #ttlMs: number
  readonly #timer: NodeJS.Timeout

  constructor (options: { clock: Clock, ttlMs: number }) {
    this.#clock = options.clock
    this.#ttlMs = options.ttlMs
    this.#timer = setInterval(() => { this.sweep() }, REVOCATION_SWEEP_INTERVAL_MS)
    this.#timer.unref()
  }

  has (sid: string): boolean {
    const until = this.#until.get(sid)
    if (until === undefined) return false
    if (until > this.#clock.now()) return true
    this.#until.delete(sid)
    return false
  }

  /** Remember `sid` until `until` (default: one access TTL from now). */
  add (sid: string, until = this.#clock.now() + this.#ttlMs): void {
    if (until > (this.#until.get(sid) ?? 0)) this.#until.set(sid, until)
  }

  get size (): number { return this.#until.size }

  sweep (): void {
    const now = this.#clock.now()
    for (const [sid, until] of this.#until) if (until <= now) this.#until.delete(sid)
  }

  close (): void { clearInterval(this.#timer) }
}

const PUBLISH_REVOKED = {
  numberOfKeys: 1,
  lua: `
-- KEYS[1]: the revoked-sid sorted set (member sid, score = ms until which it stays revoked)
-- ARGV[1]: now (ms); ARGV[2]: until (ms); ARGV[3]: key lifetime (ms); ARGV[4]: channel; ARGV[5..]: sids
for i = 5, #ARGV do
  -- GT: a later "until" wins, so a sid never leaves the set early (new members are added too)
  redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[i])
end
-- entries past their lifetime are dead weight: drop them while we are here
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
-- the whole set expires one lifetime after the last revocation (every key has a TTL)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
-- tell every replica now; the set covers those that are not listening
redis.call('PUBLISH', ARGV[4], table.concat(ARGV, ' ', 5))
return #ARGV - 4
`
}

type PublishingClient = (Redis | Cluster) & {
  lkPublishRevoked (key: string, now: number, until: number, lifetimeMs: number, channel: string, ...sids: string[]): Promise<number>
}

/**
 * The Redis side: publishes revocations, and feeds the local set from the channel and
 * from the sorted set on every (re)connect of its subscriber connection.
 */
export class RedisRevocationBus {
  readonly local: LocalRevokedSessions
  readonly #client: PublishingClient
  readonly #subscriber: Redis | Cluster
  readonly #key = 'revoked'
  readonly #channel: string
  readonly #clock: Clock
  readonly #ttlMs: number
  readonly #log: RevocationLog
  #loaded: () => void = () => {}
  readonly #firstLoad = new Promise<void>((resolve) => { this.#loaded = resolve })

  constructor (options: { client: Redis | Cluster, keyPrefix: string, clock: Clock, ttlMs: number, log: RevocationLog }) {
    this.#clock = options.clock
    this.#ttlMs = options.ttlMs
    this.#log = options.log
    this.local = new LocalRevokedSessions({ clock: options.clock, ttlMs: options.ttlMs })
    // Channels are not keys: ioredis does not prefix them, so the prefix is added here.
    this.#channel = `${options.keyPrefix}revoked`
    const client = options.client as PublishingClient
    if (typeof client.lkPublishRevoked !== 'function') client.defineCommand('lkPublishRevoked', PUBLISH_REVOKED)
    this.#client = client
    // A subscribed connection can run nothing else, so it is a second connection.
    this.#subscriber = options.client.duplicate()
    this.#subscriber.on('error', () => { /* reconnects by itself; outages are logged by the main connection */ })
    this.#subscriber.on('message', (channel: string, message: string) => {
      if (channel !== this.#channel) return
      const until = this.#clock.now() + this.#ttlMs
      for (const sid of message.split(' ')) if (sid !== '') this.local.add(sid, until)
    })
    this.#subscriber.on('ready', () => { void this.#subscribeAndLoad() })
  }

  /**
   * Start listening (the subscriber connects lazily like the main client). Resolves once the
   * revoked set has been loaded, or after `timeoutMs` if Redis does not answer.
   */
  async start (timeoutMs = REVOCATION_INITIAL_LOAD_TIMEOUT_MS): Promise<boolean> {
    this.#subscriber.connect().catch(() => { /* retried by ioredis */ })
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => { resolve(false) }, timeoutMs) })
    const loaded = await Promise.race([this.#firstLoad.then(() => true), timedOut])
    clearTimeout(timer)
    return loaded
  }

  async #subscribeAndLoad (): Promise<void> {
    try {
      await this.#subscriber.subscribe(this.#channel)
      // Subscribed first, loaded second: a revocation between the two is seen by both, never by neither.
      const entries = await this.#client.zrangebyscore(this.#key, this.#clock.now(), '+inf', 'WITHSCORES')
      for (let i = 0; i + 1 < entries.length; i += 2) this.local.add(entries[i] as string, Number(entries[i + 1]))
      this.#loaded()
    } catch (err) {
      this.#log.warn({ err: { code: (err as { code?: string }).code, message: (err as Error).message } }, 'could not load revoked sessions; will retry on reconnect')
    }
  }

  has (sid: string): boolean {
    return this.local.has(sid)
  }

  /** Revoke at this replica at once, then tell the others. */
  async publish (sids: readonly string[]): Promise<void> {
    if (sids.length === 0) return
    const now = this.#clock.now()
    const until = now + this.#ttlMs
    for (const sid of sids) this.local.add(sid, until)
    try {
      await this.#client.lkPublishRevoked(this.#key, now, until, this.#ttlMs, this.#channel, ...sids)
    } catch (err) {
      // The family is revoked in Redis already; only the edge broadcast failed. Other
      // replicas keep accepting that session's access tokens until they expire (≤ one access TTL).
      this.#log.warn({ sids, err: { code: (err as { code?: string }).code } }, 'revocation broadcast failed')
    }
  }

  async close (): Promise<void> {
    this.local.close()
    this.#subscriber.disconnect()
  }
}
