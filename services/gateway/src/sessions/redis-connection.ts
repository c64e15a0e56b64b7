/**
 * The gateway's Redis connection, tuned so that Redis trouble becomes a fast error
 * (docs/contract.md "Refresh-token families" 7: 503 within 2 s, never a hang, automatic recovery):
 *
 *  - no offline queue: while disconnected a command fails at once instead of waiting
 *    for a reconnect that may never come;
 *  - a per-command timeout: a stalled server (paused, swapping, partitioned) fails the
 *    command after REDIS_COMMAND_TIMEOUT_MS instead of holding the request;
 *  - no retries and no re-sending after a reconnect: a rotation whose reply was lost
 *    may already have happened, and replaying it would look like token reuse. The
 *    client retries instead, and the grace rule hands it the same successor;
 *  - reconnects forever in the background, backing off to at most one attempt per
 *    REDIS_RECONNECT_MAX_DELAY_MS, so recovery needs no restart;
 *  - auto-pipelining: concurrent refreshes share one socket write (standalone and
 *    Sentinel; not on a Cluster, where ioredis mixes replies up when a node fails);
 *  - a connection that dies without FIN/RST (a black-holed path, a crashed NAT) is found
 *    and replaced: TCP keepalive for the network's sake, and a health check that pings a
 *    connection that has carried no reply for REDIS_HEALTH_INTERVAL_MS and reconnects
 *    after REDIS_HEALTH_FAILURES_BEFORE_RECONNECT pings in a row go unanswered, so
 *    recovery takes a few seconds, not the ~15 minutes TCP takes to give up on its own.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { RedisConfig } from '../config.js'

/** TCP connect (and, for Sentinel, master lookup) gives up after this. */
export const REDIS_CONNECT_TIMEOUT_MS = 1000
/** A sent command that has no reply after this fails (the request answers 503). */
export const REDIS_COMMAND_TIMEOUT_MS = 1000
/** Commands in flight when a connection drops are failed, never replayed (see above). */
export const REDIS_MAX_RETRIES_PER_REQUEST = 0
/** TCP keepalive: first probe after this much silence (the kernel's interval and count apply after it). */
export const REDIS_TCP_KEEPALIVE_MS = 5000
/** A connection with no reply for this long is pinged (an idle connection once per interval). */
export const REDIS_HEALTH_INTERVAL_MS = 1000
/** Unanswered health pings in a row after which the connection is dropped and rebuilt. */
export const REDIS_HEALTH_FAILURES_BEFORE_RECONNECT = 2
/** Reconnect back-off: attempt n waits n × base, capped at the max. */
export const REDIS_RECONNECT_BASE_DELAY_MS = 50
export const REDIS_RECONNECT_MAX_DELAY_MS = 1000
/**
 * Cluster: MOVED/ASK/TRYAGAIN/CLUSTERDOWN follow-ups per command, and the pause before
 * each retry during a failover. 5 × 100 ms keeps a command under the 2 s budget.
 */
export const REDIS_CLUSTER_MAX_REDIRECTIONS = 5
export const REDIS_CLUSTER_RETRY_DELAY_MS = 100
/** Cluster: how long a slots refresh (CLUSTER SLOTS) may take. */
export const REDIS_CLUSTER_SLOTS_REFRESH_TIMEOUT_MS = 1000

export type RedisConnectionConfig = Exclude<RedisConfig, { readonly kind: 'none' }>
export type RedisClient = Redis | Cluster

export interface RedisConnectionLog {
  warn (obj: object, msg: string): void
  info? (obj: object, msg: string): void
}

export interface RedisConnectionOptions {
  /** ioredis `keyPrefix`: prepended to every key this client sends. */
  readonly keyPrefix?: string
  /** Outages are logged once (warn) and recoveries once (info), not on every reconnect attempt. */
  readonly log?: RedisConnectionLog
  /** Per-command timeout (default REDIS_COMMAND_TIMEOUT_MS); fault tests shorten it. */
  readonly commandTimeoutMs?: number
}

export function reconnectDelay (attempt: number): number {
  return Math.min(attempt * REDIS_RECONNECT_BASE_DELAY_MS, REDIS_RECONNECT_MAX_DELAY_MS)
}

/** Options shared by standalone, Sentinel and cluster-node connections. */
function baseOptions (commandTimeoutMs = REDIS_COMMAND_TIMEOUT_MS): RedisOptions {
  return {
    // connectRedis() starts the connection, so that building the app has no side effects.
    lazyConnect: true,
    connectTimeout: REDIS_CONNECT_TIMEOUT_MS,
    commandTimeout: commandTimeoutMs,
    keepAlive: REDIS_TCP_KEEPALIVE_MS,
    maxRetriesPerRequest: REDIS_MAX_RETRIES_PER_REQUEST,
    autoResendUnfulfilledCommands: false,
    enableOfflineQueue: false,
    enableAutoPipelining: true,
    retryStrategy: reconnectDelay
  }
}

/** Credentials, database and TLS from a `redis://` / `rediss://` URL (Sentinel and Cluster carry them there). */
function urlOptions (url: string | undefined): RedisOptions {
  if (url === undefined) return {}
  const u = new URL(url)
  const options: RedisOptions = {}
  if (u.username !== '') options.username = decodeURIComponent(u.username)
  if (u.password !== '') options.password = decodeURIComponent(u.password)
  const db = Number(u.pathname.slice(1))
  if (u.pathname.length > 1 && Number.isInteger(db)) options.db = db
  if (u.protocol === 'rediss:') options.tls = {}
  return options
}

function watch (client: RedisClient, log: RedisConnectionLog | undefined): void {
  // Always listen: an 'error' event without a listener is printed by ioredis on every
  // reconnect attempt. Log the first error of an outage only.
  let healthy = true
  const onError = (err: Error): void => {
    if (!healthy) return
    healthy = false
    log?.warn({ err: { name: err.name, message: err.message } }, 'redis unavailable; requests that need it answer 503 until it is back')
  }
  client.on('error', onError)
  if (client instanceof Cluster) client.on('node error', onError)
  client.on('ready', () => {
    if (!healthy) log?.info?.({}, 'redis connection restored')
    healthy = true
  })
}

/** Build (but do not connect) the gateway's Redis client; see `connectRedis`. */
export function createRedisClient (config: RedisConnectionConfig, options: RedisConnectionOptions = {}): RedisClient {
  const keyPrefix = options.keyPrefix === undefined || options.keyPrefix === '' ? {} : { keyPrefix: options.keyPrefix }
  let client: RedisClient
  switch (config.kind) {
    case 'url':
      // ioredis reads credentials, db and TLS (rediss:) from the URL itself.
      client = new Redis(config.url, { ...baseOptions(options.commandTimeoutMs), ...keyPrefix })
      break
    case 'sentinel':
      client = new Redis({
        ...baseOptions(options.commandTimeoutMs),
        ...urlOptions(config.url),
        ...keyPrefix,
        sentinels: config.sentinels.map(({ host, port }) => ({ host, port })),
        name: config.name,
        sentinelRetryStrategy: reconnectDelay,
        sentinelCommandTimeout: REDIS_COMMAND_TIMEOUT_MS,
        // Subscribe to +switch-master so a failover is followed at once, not on the next error.
        failoverDetector: true
      })
      break
    case 'cluster': {
      const clusterOptions: ClusterOptions = {
        lazyConnect: true,
        enableOfflineQueue: false,
        // Off on a Cluster: ioredis (5.11) handles a redirection or a closed connection per
        // auto-pipeline, not per command, and then settles commands with other commands'
        // replies (ioredis#1692, #2075, #2109). Seen with a master down: a write to the dead
        // master's copy of the revoked set reported "ok", so a logout answered 204 with two
        // of three copies lost, and reads answered with another slot's MOVED.
        enableAutoPipelining: false,
        clusterRetryStrategy: reconnectDelay,
        maxRedirections: REDIS_CLUSTER_MAX_REDIRECTIONS,
        retryDelayOnFailover: REDIS_CLUSTER_RETRY_DELAY_MS,
        retryDelayOnClusterDown: REDIS_CLUSTER_RETRY_DELAY_MS,
        retryDelayOnTryAgain: REDIS_CLUSTER_RETRY_DELAY_MS,
        slotsRefreshTimeout: REDIS_CLUSTER_SLOTS_REFRESH_TIMEOUT_MS,
        // The prefix belongs on the cluster: it builds the commands the nodes only carry.
        ...keyPrefix,
        redisOptions: { ...baseOptions(options.commandTimeoutMs), ...urlOptions(config.url) }
      }
      client = new Cluster(config.nodes.map(({ host, port }) => ({ host, port })), clusterOptions)
      break
    }
  }
  watch(client, options.log)
  const stop = superviseConnections(client)
  client.once('end', stop)
  return client
}

interface Health { stream: unknown, replied: boolean, failures: number, pinging: boolean }

/**
 * Health-check every connection of `client` (a Cluster's: each node's) until the returned
 * function is called. A connection that carried a reply since the last tick is healthy
 * without a ping, so busy connections carry no extra commands.
 */
export function superviseConnections (client: RedisClient, intervalMs = REDIS_HEALTH_INTERVAL_MS): () => void {
  const health = new WeakMap<Redis, Health>()
  const check = (connection: Redis): void => {
    let h = health.get(connection)
    if (h === undefined || h.stream !== connection.stream) {
      // A new socket (first tick or a reconnect): count its replies from now on.
      h = { stream: connection.stream, replied: true, failures: 0, pinging: false }
      health.set(connection, h)
      const state = h
      connection.stream?.on('data', () => { state.replied = true })
    }
    if (connection.status !== 'ready') return // connecting or reconnecting: ioredis' own timeouts apply
    if (h.replied) { h.replied = false; h.failures = 0; return }
    if (h.pinging) return
    h.pinging = true
    const state = h
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error('health ping timed out')) }, intervalMs) })
    Promise.race([connection.ping(), timedOut]).then(() => { state.failures = 0 }, () => {
      state.failures += 1
      if (state.failures < REDIS_HEALTH_FAILURES_BEFORE_RECONNECT || state.stream !== connection.stream) return
      state.failures = 0
      // Drop the silent socket; ioredis reconnects (retryStrategy) on a fresh one.
      connection.disconnect(true)
    }).finally(() => { clearTimeout(timer); state.pinging = false })
  }
  const timer = setInterval(() => {
    if (client instanceof Cluster) for (const node of client.nodes('all')) check(node)
    else check(client)
  }, intervalMs)
  timer.unref()
  return () => { clearInterval(timer) }
}

/**
 * How long `connectRedis` waits for a first connection before it lets the gateway start
 * without one (the client keeps connecting in the background).
 */
export const REDIS_FIRST_CONNECT_WAIT_MS = 5000

/**
 * Start connecting. Never rejects and never hangs: if Redis is down at boot the gateway
 * still starts, requests that need Redis answer 503, and the client keeps reconnecting in
 * the background. Resolves true once connected, false if the first attempt failed or
 * nothing was ready within `waitMs`.
 *
 * Why a deadline and the 'ready' event as well as connect()'s promise: ioredis' Cluster
 * (5.11) checks a new connection with CLUSTER INFO on a random node; when that node is a
 * dead master (still listed in CLUSTER SLOTS, so still picked), it reconnects without ever
 * settling the first connect() promise — the client does become ready, on a later attempt.
 * This hung a gateway (and a test) starting while one Cluster master was down.
 */
export async function connectRedis (client: RedisClient, waitMs = REDIS_FIRST_CONNECT_WAIT_MS): Promise<boolean> {
  if (client.status !== 'wait') return client.status === 'ready'
  return new Promise<boolean>((resolve) => {
    const done = (connected: boolean): void => {
      clearTimeout(timer)
      client.off('ready', onReady)
      resolve(connected)
    }
    const onReady = (): void => { done(true) }
    const timer = setTimeout(() => { done(client.status === 'ready') }, waitMs)
    client.once('ready', onReady)
    client.connect().then(() => { done(true) }, () => { done(false) })
  })
}
