/**
 * The gateway's Redis connection, tuned so that Redis trouble becomes a fast error
 * (SPEC "Refresh-token families" 7: 503 within 2 s, never a hang, automatic recovery):
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
 *  - auto-pipelining: concurrent refreshes share one socket write.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { RedisConfig } from '../config.js'

/** TCP connect (and, for Sentinel, master lookup) gives up after this. */
export const REDIS_CONNECT_TIMEOUT_MS = 1000
/** A sent command that has no reply after this fails (the request answers 503). */
export const REDIS_COMMAND_TIMEOUT_MS = 1000
/** Commands in flight when a connection drops are failed, never replayed (see above). */
export const REDIS_MAX_RETRIES_PER_REQUEST = 0
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
        enableAutoPipelining: true,
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
  return client
}

/**
 * Start connecting. Never rejects: if Redis is down at boot the gateway still starts,
 * requests that need Redis answer 503, and the client keeps reconnecting in the
 * background. Resolves true once connected, false if the first attempt failed.
 */
export async function connectRedis (client: RedisClient): Promise<boolean> {
  if (client.status !== 'wait') return client.status === 'ready'
  try {
    await client.connect()
    return true
  } catch {
    return false
  }
}
