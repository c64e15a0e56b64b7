/**
 * Edge revocation (docs/contract.md "Proxy"): a revoked session's access tokens are refused at every
 * replica within a second, while resource services stay stateless.
 *
 * Each replica keeps the revoked sids in memory, each for one access-token lifetime (after
 * that every token of the session has expired anyway), so the proxy asks a Map, never
 * Redis. Replicas learn of revocations over pub/sub; a sorted set with the same lifetime
 * lets a replica that (re)connects, or starts after the fact, load what it missed.
 *
 * Faults:
 *  - `publish` resolves only once the revocation is in the set (on a majority of its
 *    copies, each replicated to REDIS_WAIT_REPLICAS) and published; otherwise it rejects
 *    with GW_STORE_UNAVAILABLE (→ 503), after one retry, and within
 *    REVOCATION_PUBLISH_DEADLINE_MS whatever Redis does. The set is kept in
 *    REVOKED_SET_COPIES keys whose hash tags fall in different thirds of the slot space, so
 *    on a Redis Cluster no single master's loss hides a revocation.
 *  - Liveness of the subscription is proven end to end: every
 *    REVOCATION_HEARTBEAT_INTERVAL_MS each replica publishes its own id on a heartbeat
 *    channel and expects to hear it back on its subscriber. Until it has heard one within
 *    REVOCATION_HEARTBEAT_MISSES intervals, or after its Cluster node left ("not live"), the
 *    replica reads the set at once and then every heartbeat interval instead.
 *    The 1 s promise while a subscriber is silent (no FIN/RST): a revocation published
 *    after the subscriber's last heartbeat came back is missed by pub/sub, but the first
 *    tick more than MISSES intervals after that heartbeat distrusts pub/sub and reads the
 *    set, i.e. at most (MISSES + 1) × interval = 600 ms after it, plus one read — under
 *    1 s while the main connection works. The price is a heartbeat PUBLISH per replica
 *    five times a second; the proxy still asks only the in-memory map, never Redis, per
 *    request. The subscriber is also health-checked like every connection
 *    (redis-connection.ts): a silent one is rebuilt within a few seconds, and every
 *    (re)subscription reloads the set.
 */
import { randomUUID } from 'node:crypto'
import { Command, type Cluster, type Redis } from 'ioredis'
import type { Clock } from '#shared/clock.js'
import { gatewayError } from '../errors.js'
import { REDIS_HEALTH_INTERVAL_MS, superviseConnections } from './redis-connection.js'
import { ReplicaWait } from './replica-wait.js'

/** Sweep expired sids this often, so the map never holds more than one access TTL's worth. */
export const REVOCATION_SWEEP_INTERVAL_MS = 10_000
/**
 * A starting replica waits this long for the revoked set before it serves, so that it never
 * accepts a token revoked before it started; with Redis down it starts anyway (and loads on reconnect).
 */
export const REVOCATION_INITIAL_LOAD_TIMEOUT_MS = 2000
/** Access tokens are accepted up to this long after exp (verifier clock tolerance), so keep sids a little longer. */
export const REVOCATION_SLACK_MS = 10_000
/**
 * How often (ms) a replica publishes its pub/sub heartbeat, checks that the previous ones
 * came back and, while pub/sub is not trusted, reads the revoked set. Short because it
 * bounds how long a silent subscriber is trusted: (MISSES + 1) × this must stay well
 * under the 1 s revocation promise (see the file comment).
 */
export const REVOCATION_HEARTBEAT_INTERVAL_MS = 200
/** Heartbeat intervals without hearing our own heartbeat after which pub/sub is not trusted. */
export const REVOCATION_HEARTBEAT_MISSES = 2
/** Copies of the revoked set (see the file comment); a publish needs a majority of them. */
export const REVOKED_SET_COPIES = 3
/** A publish that missed its majority is retried once after this. */
export const REVOCATION_RETRY_DELAY_MS = 200
/**
 * The longest a publish may take before it rejects (→ 503): a logout, or a refresh that
 * found reuse, must not hang on a Redis that neither answers nor fails (contract rule 7:
 * answers within 2 s). A first attempt that times out (REDIS_COMMAND_TIMEOUT_MS, 1 s)
 * leaves no room for the retry, which is for fast failures (a Cluster master gone, MOVED).
 */
export const REVOCATION_PUBLISH_DEADLINE_MS = 1500

/** CRC16/XMODEM mod 16384: the Redis Cluster slot of a hash tag (cluster spec, "Keys distribution model"). */
function slotOf (tag: string): number {
  return new Command('exists', [`{${tag}}`]).getSlot() ?? 0
}

/** Hash tags `r<n>` whose slots fall in successive equal parts of the slot space. */
function spreadTags (copies: number): string[] {
  const tags: string[] = []
  for (let part = 0; part < copies; part++) {
    const lo = Math.floor(16384 * part / copies)
    const hi = Math.floor(16384 * (part + 1) / copies)
    for (let n = 0; ; n++) {
      const slot = slotOf(`r${n}`)
      if (slot >= lo && slot < hi && !tags.includes(`r${n}`)) { tags.push(`r${n}`); break }
    }
  }
  return tags
}

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

export interface RedisRevocationBusOptions {
  readonly client: Redis | Cluster
  readonly keyPrefix: string
  readonly clock: Clock
  readonly ttlMs: number
  readonly log: RevocationLog
  /** REDIS_WAIT_REPLICAS: replicas that must hold a revocation before `publish` resolves. */
  readonly waitReplicas?: number
  /** Health-check period of the subscriber connection (default REDIS_HEALTH_INTERVAL_MS). */
  readonly healthIntervalMs?: number
  /** Heartbeat period (default REVOCATION_HEARTBEAT_INTERVAL_MS). */
  readonly heartbeatIntervalMs?: number
  /** How long `publish` may take in all (default REVOCATION_PUBLISH_DEADLINE_MS); fault tests shorten it. */
  readonly publishDeadlineMs?: number
}

/**
 * The Redis side: publishes revocations, and feeds the local set from the channel and
 * from the sorted set on every (re)connect of its subscriber connection.
 */
export class RedisRevocationBus {
  readonly local: LocalRevokedSessions
  readonly #client: PublishingClient
  readonly #subscriber: Redis | Cluster
  readonly #keys = spreadTags(REVOKED_SET_COPIES).map(tag => `revoked:{${tag}}`)
  /** The single set of earlier versions: still read, so an upgrade forgets no recent revocation. */
  readonly #legacyKey = 'revoked'
  readonly #channel: string
  readonly #clock: Clock
  readonly #ttlMs: number
  readonly #log: RevocationLog
  readonly #replicaWait: ReplicaWait | undefined
  readonly #stopSupervising: () => void
  readonly #poll: NodeJS.Timeout
  #live = false
  /** This bus' heartbeat message, and when (monotonic ms) it was last heard back. */
  readonly #heartbeatId = randomUUID()
  readonly #heartbeatChannel: string
  #heardAt = -Infinity
  readonly #intervalMs: number
  readonly #publishDeadlineMs: number
  #loaded: () => void = () => {}
  readonly #firstLoad = new Promise<void>((resolve) => { this.#loaded = resolve })

  constructor (options: RedisRevocationBusOptions) {
    this.#clock = options.clock
    this.#ttlMs = options.ttlMs
    this.#log = options.log
    this.#publishDeadlineMs = options.publishDeadlineMs ?? REVOCATION_PUBLISH_DEADLINE_MS
    this.local = new LocalRevokedSessions({ clock: options.clock, ttlMs: options.ttlMs })
    // Channels are not keys: ioredis does not prefix them, so the prefix is added here.
    this.#channel = `${options.keyPrefix}revoked`
    this.#heartbeatChannel = `${options.keyPrefix}revoked:heartbeat`
    const client = options.client as PublishingClient
    if (typeof client.lkPublishRevoked !== 'function') client.defineCommand('lkPublishRevoked', PUBLISH_REVOKED)
    this.#client = client
    const waitReplicas = options.waitReplicas ?? 0
    this.#replicaWait = waitReplicas === 0 ? undefined : new ReplicaWait(options.client, waitReplicas)
    // A subscribed connection can run nothing else, so it is a second connection.
    this.#subscriber = options.client.duplicate()
    this.#subscriber.on('error', () => { /* reconnects by itself; outages are logged by the main connection */ })
    this.#subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.#heartbeatChannel && message === this.#heartbeatId) this.#heard()
      if (channel !== this.#channel) return
      const until = this.#clock.now() + this.#ttlMs
      for (const sid of message.split(' ')) if (sid !== '') this.local.add(sid, until)
    })
    this.#subscriber.on('ready', () => { void this.#subscribeAndLoad() })
    this.#subscriber.on('close', () => { this.#live = false })
    // A Cluster moves its subscription to another node when that node leaves ('-node'),
    // without a 'ready': messages published during the move are lost, so distrust pub/sub
    // until a heartbeat comes back over the new subscription (which then reloads the set).
    this.#subscriber.on('-node', () => { this.#live = false })
    this.#intervalMs = options.heartbeatIntervalMs ?? REVOCATION_HEARTBEAT_INTERVAL_MS
    this.#stopSupervising = superviseConnections(this.#subscriber, options.healthIntervalMs ?? REDIS_HEALTH_INTERVAL_MS)
    this.#poll = setInterval(() => { this.#tick() }, this.#intervalMs)
    this.#poll.unref()
  }

  /**
   * True while this replica hears its own heartbeats over pub/sub and the set was loaded
   * since it last did not. While false, the set is read every heartbeat interval instead.
   */
  get live (): boolean {
    return this.#live
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

  /** Heartbeat out; pub/sub distrusted when our heartbeats stop coming back; the set read while it is. */
  #tick (): void {
    this.#client.publish(this.#heartbeatChannel, this.#heartbeatId).catch(() => { /* the main connection is down: nothing to do */ })
    const silentMs = performance.now() - this.#heardAt
    if (this.#live && silentMs > REVOCATION_HEARTBEAT_MISSES * this.#intervalMs) this.#live = false
    // Every tick, even while an earlier read is outstanding: each is bounded by the command
    // timeout, and a read stuck on one dead node must not hold back the next one.
    if (!this.#live) this.#load().catch(() => { /* Redis unreachable: next tick */ })
  }

  /** Our heartbeat came back: pub/sub works; trust it again once the set has been read. */
  #heard (): void {
    this.#heardAt = performance.now()
    if (!this.#live) this.#load().then(() => { this.#live = true }, () => {})
  }

  /**
   * Every live entry of every copy of the set into the local set; fails only if no copy
   * answers. Each copy's entries are taken as it answers: a copy whose Cluster master is
   * down may take its redirections and timeouts to fail, and must not hold back the others.
   */
  async #load (): Promise<void> {
    const now = this.#clock.now()
    const copies = await Promise.allSettled([...this.#keys, this.#legacyKey].map(async (key) => {
      const entries = await this.#client.zrangebyscore(key, now, '+inf', 'WITHSCORES')
      for (let i = 0; i + 1 < entries.length; i += 2) this.local.add(entries[i] as string, Number(entries[i + 1]))
    }))
    if (copies.every(copy => copy.status === 'rejected')) throw (copies[0] as PromiseRejectedResult).reason
  }

  async #subscribeAndLoad (): Promise<void> {
    try {
      await this.#subscriber.subscribe(this.#channel, this.#heartbeatChannel)
      // Subscribed first, loaded second: a revocation between the two is seen by both, never by neither.
      await this.#load()
      this.#heardAt = performance.now() // subscribed just now: give the first heartbeat its intervals
      this.#live = true
      this.#loaded()
    } catch (err) {
      this.#log.warn({ err: { code: (err as { code?: string }).code, message: (err as Error).message } }, 'could not load revoked sessions; will retry on reconnect')
    }
  }

  has (sid: string): boolean {
    return this.local.has(sid)
  }

  /** One copy: add, publish, and (with REDIS_WAIT_REPLICAS) wait for its replicas. */
  async #publishTo (key: string, now: number, until: number, sids: readonly string[]): Promise<void> {
    await this.#client.lkPublishRevoked(key, now, until, this.#ttlMs, this.#channel, ...sids)
    await this.#replicaWait?.after(key)
  }

  /**
   * Revoke at this replica at once, then make it durable and tell the others. Resolves once
   * a majority of the set's copies hold it (each replicated as REDIS_WAIT_REPLICAS asks)
   * and it was published; rejects with GW_STORE_UNAVAILABLE otherwise.
   */
  async publish (sids: readonly string[]): Promise<void> {
    if (sids.length === 0) return
    const now = this.#clock.now()
    const until = now + this.#ttlMs
    for (const sid of sids) this.local.add(sid, until)
    // Real time, not the injected clock: this bounds how long a caller waits on Redis.
    const started = performance.now()
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<'deadline'>((resolve) => { timer = setTimeout(() => { resolve('deadline') }, this.#publishDeadlineMs) })
    const needed = Math.floor(this.#keys.length / 2) + 1
    let pending = [...this.#keys]
    let lastError: unknown
    try {
      for (let attempt = 0; attempt < 2 && this.#keys.length - pending.length < needed; attempt++) {
        if (attempt > 0) {
          // No retry that could not finish in time: answer now rather than at the deadline.
          if (performance.now() - started + REVOCATION_RETRY_DELAY_MS >= this.#publishDeadlineMs) break
          await new Promise(resolve => setTimeout(resolve, REVOCATION_RETRY_DELAY_MS))
        }
        const settled = Promise.allSettled(pending.map(key => this.#publishTo(key, now, until, sids)))
        const results = await Promise.race([settled, deadline])
        if (results === 'deadline') {
          lastError = new Error(`revocation broadcast took longer than ${this.#publishDeadlineMs} ms`)
          break
        }
        pending = pending.filter((_key, i) => {
          const r = results[i] as PromiseSettledResult<void>
          if (r.status === 'rejected') lastError = r.reason
          return r.status === 'rejected'
        })
      }
    } finally {
      clearTimeout(timer)
    }
    if (this.#keys.length - pending.length >= needed) return
    // The families are revoked in Redis already; only the edge broadcast is not certain.
    this.#log.warn({ sids, err: { code: (lastError as { code?: string } | undefined)?.code } }, 'revocation broadcast failed')
    const cause = new Error((lastError as Error | undefined)?.message ?? 'revocation broadcast failed')
    throw gatewayError('GW_STORE_UNAVAILABLE', { cause })
  }

  async close (): Promise<void> {
    clearInterval(this.#poll)
    this.#stopSupervising()
    this.local.close()
    this.#subscriber.disconnect()
  }
}
