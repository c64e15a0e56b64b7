/**
 * A real Redis Sentinel setup for tests: one master, one replica and three sentinels
 * (`redis-server --sentinel`), all local processes on free ports, with helpers to kill the
 * master and wait for the failover. Detection is tuned down (down-after 1 s) so that a
 * failover takes seconds, not the production default of half a minute.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { freePort, spawnRedisServer, waitForRedis } from './redis.js'
import { killProcess, until, type HostPort } from './redis-cluster.js'
import { reapOnExit } from './reaper.js'

export interface TestRedisSentinel {
  /** The monitored master's name (REDIS_SENTINEL_NAME). */
  readonly name: string
  readonly sentinels: readonly HostPort[]
  /** REDIS_SENTINELS + REDIS_SENTINEL_NAME for a gateway. */
  readonly env: Readonly<Record<string, string>>
  /** A key prefix unique to this setup. */
  readonly prefix: string
  /** The master as a majority of the sentinels report it. */
  master (): Promise<HostPort>
  /**
   * Cut the replica off from the master without stopping it, as a partition or a lagging
   * link would: it misses every write from now on, yet still answers the sentinels and is
   * promoted by the next failover. (Its link is dropped, and its reconnection fails: a
   * wrong `masterauth` makes the master refuse its handshake.) Returns the replica.
   */
  detachReplica (): Promise<HostPort>
  /** SIGKILL the current master; returns its address and the time of the kill (ms, performance.now()). */
  killMaster (): Promise<{ killed: HostPort, at: number }>
  /**
   * `SENTINEL FAILOVER`: a planned failover, the master alive throughout. Sentinel promotes
   * the replica first and only then turns the old master into its replica, so for a moment
   * both accept writes (what an operator's maintenance does to a loaded gateway). Retried
   * until a sentinel accepts it (it refuses while it has not yet vetted the replica).
   * Returns the old master and when the failover was accepted (ms, performance.now()).
   */
  plannedFailover (timeoutMs?: number): Promise<{ from: HostPort, at: number }>
  /** Resolves once `node` is an online replica of the current master. */
  replicaOnline (node: HostPort, timeoutMs?: number): Promise<void>
  /** Resolves with the new master once every sentinel names a master other than `from` and it answers as one. */
  waitForFailover (from: HostPort, timeoutMs?: number): Promise<HostPort>
  /**
   * Start a killed data node again on its port as a replica of the current master, as a
   * Sentinel-aware supervisor would, and wait until the master counts it in sync.
   */
  restartAsReplica (node: HostPort, timeoutMs?: number): Promise<void>
  /** A plain connection to a data node (closed in teardown). */
  connect (node: HostPort): Promise<Redis>
  stop (): Promise<void>
}

interface Teardown { teardown (fn: () => unknown): void }

const HOST = '127.0.0.1'
const NAME = 'lkmaster'
/** How long the master must be silent before a sentinel calls it down. */
export const SENTINEL_DOWN_AFTER_MS = 1000
/** Short, so that a failover that stalls is retried quickly (and the whole run stays short). */
export const SENTINEL_FAILOVER_TIMEOUT_MS = 2000
const START_TIMEOUT_MS = 20_000
/**
 * Replication options for both data nodes: diskless full syncs without the default 5 s
 * delay, so a replica (or a restarted old master) is in sync in milliseconds.
 */
const REPLICATION = ['--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0']

function infoField (info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim()
}

let setups = 0

export async function redisSentinelForTest (t: Teardown): Promise<TestRedisSentinel> {
  const dir = mkdtempSync(join(tmpdir(), 'lk-sentinel-'))
  const data = new Map<number, ChildProcess>()
  const sentinelProcs: ChildProcess[] = []
  const clients: Redis[] = []
  const plain = (port: number): Redis => {
    const c = new Redis({ host: HOST, port, lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 500, retryStrategy: () => null })
    c.on('error', () => {})
    clients.push(c)
    return c
  }
  const stop = async (): Promise<void> => {
    for (const c of clients) c.disconnect()
    await Promise.all([...data.values(), ...sentinelProcs].map(killProcess))
    rmSync(dir, { recursive: true, force: true })
  }
  t.teardown(stop)

  const startData = (port: number, extra: string[] = []): void => {
    const nodeDir = join(dir, `data-${port}`)
    mkdirSync(nodeDir, { recursive: true })
    data.set(port, spawnRedisServer(port, nodeDir, [...REPLICATION, ...extra]))
  }

  const masterPort = await freePort()
  const replicaPort = await freePort()
  startData(masterPort)
  startData(replicaPort, ['--replicaof', HOST, String(masterPort)])
  await Promise.all([masterPort, replicaPort].map(p => waitForRedis(`redis://${HOST}:${p}`)))
  // The replica must be attached before the sentinels start: they learn of replicas from
  // the master's INFO, which they re-read only every 10 s.
  const replica = plain(replicaPort)
  await replica.connect()
  await until('the replica to sync', START_TIMEOUT_MS, async () => infoField(await replica.info('replication'), 'master_link_status') === 'up')

  const sentinels: HostPort[] = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort()
    const sDir = join(dir, `sentinel-${port}`)
    mkdirSync(sDir)
    // Sentinel rewrites its config file (discovered peers, epochs), so each gets its own.
    const conf = join(sDir, 'sentinel.conf')
    writeFileSync(conf, [
      `port ${port}`,
      `bind ${HOST}`,
      'protected-mode no',
      `dir ${sDir}`,
      `sentinel monitor ${NAME} ${HOST} ${masterPort} 2`,
      `sentinel down-after-milliseconds ${NAME} ${SENTINEL_DOWN_AFTER_MS}`,
      `sentinel failover-timeout ${NAME} ${SENTINEL_FAILOVER_TIMEOUT_MS}`,
      `sentinel parallel-syncs ${NAME} 1`,
      ''
    ].join('\n'))
    const child = reapOnExit(spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' }))
    child.unref()
    sentinelProcs.push(child)
    sentinels.push({ host: HOST, port })
  }
  const sentinelClients = sentinels.map(s => plain(s.port))
  await Promise.all(sentinels.map(s => waitForRedis(`redis://${s.host}:${s.port}`)))
  await Promise.all(sentinelClients.map(c => c.connect()))
  // A failover needs a quorum (2) to agree the master is down and a majority to elect a
  // leader: wait until every sentinel knows the replica and both peers (hello messages
  // travel every 2 s).
  await until('every sentinel to know the replica and its two peers', START_TIMEOUT_MS, async () => {
    const views = await Promise.all(sentinelClients.map(c => c.call('SENTINEL', 'MASTER', NAME) as Promise<string[]>))
    return views.every((flat) => {
      const v = new Map<string, string>()
      for (let i = 0; i + 1 < flat.length; i += 2) v.set(String(flat[i]), String(flat[i + 1]))
      return v.get('num-slaves') === '1' && v.get('num-other-sentinels') === '2' && v.get('flags') === 'master'
    })
  })

  const askAll = async (): Promise<Array<HostPort | undefined>> => Promise.all(sentinelClients.map(async (c) => {
    try {
      const reply = await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', NAME) as [string, string] | null
      return reply === null ? undefined : { host: reply[0], port: Number(reply[1]) }
    } catch {
      return undefined
    }
  }))

  const handle: TestRedisSentinel = {
    name: NAME,
    sentinels,
    env: { REDIS_SENTINELS: sentinels.map(s => `${s.host}:${s.port}`).join(','), REDIS_SENTINEL_NAME: NAME },
    prefix: `lks${process.pid.toString(36)}${++setups}:`,
    async master () {
      const views = await askAll()
      const counts = new Map<number, number>()
      for (const v of views) if (v !== undefined) counts.set(v.port, (counts.get(v.port) ?? 0) + 1)
      const [port] = [...counts.entries()].find(([, n]) => n >= 2) ?? []
      if (port === undefined) throw new Error('the sentinels do not agree on a master')
      return { host: HOST, port }
    },
    async detachReplica () {
      const master = await handle.master()
      const [port] = [...data.keys()].filter(p => p !== master.port && data.get(p)?.exitCode === null)
      if (port === undefined) throw new Error('no live replica to detach')
      const r = plain(port)
      try {
        await r.connect()
        await r.config('SET', 'masterauth', `detached-${Date.now()}`)
        await r.client('KILL', 'TYPE', 'master')
        await until(`replica ${port} to lose its master link`, 5000, async () => infoField(await r.info('replication'), 'master_link_status') === 'down')
      } finally {
        r.disconnect()
      }
      return { host: HOST, port }
    },
    async killMaster () {
      const killed = await handle.master()
      const child = data.get(killed.port)
      if (child === undefined) throw new Error(`no process for the master on port ${killed.port}`)
      const at = performance.now()
      await killProcess(child)
      return { killed, at }
    },
    async plannedFailover (timeoutMs = 15_000) {
      const from = await handle.master()
      let at = 0
      await until('a sentinel to accept SENTINEL FAILOVER', timeoutMs, async () => {
        at = performance.now()
        await (sentinelClients[0] as Redis).call('SENTINEL', 'FAILOVER', NAME)
        return true
      })
      return { from, at }
    },
    async replicaOnline (node, timeoutMs = 10_000) {
      const master = await handle.master()
      const m = plain(master.port)
      try {
        await m.connect()
        await until(`port ${node.port} to be an online replica of ${master.port}`, timeoutMs, async () => {
          const info = await m.info('replication')
          return new RegExp(`^slave\\d+:ip=[^,]+,port=${node.port},state=online`, 'm').test(info)
        })
      } finally {
        m.disconnect()
      }
    },
    async waitForFailover (from, timeoutMs = 20_000) {
      let found: HostPort | undefined
      await until(`a failover away from port ${from.port}`, timeoutMs, async () => {
        const views = await askAll()
        const port = views[0]?.port
        if (port === undefined || port === from.port || !views.every(v => v?.port === port)) return false
        const node = plain(port)
        try {
          await node.connect()
          const role = await node.call('ROLE') as [string, ...unknown[]]
          if (role[0] !== 'master') return false
        } finally {
          node.disconnect()
        }
        found = { host: HOST, port }
        return true
      })
      return found as HostPort
    },
    async restartAsReplica (node, timeoutMs = 10_000) {
      const master = await handle.master()
      startData(node.port, ['--replicaof', master.host, String(master.port)])
      await waitForRedis(`redis://${node.host}:${node.port}`)
      await handle.replicaOnline(node, timeoutMs)
    },
    async connect (node) {
      const c = plain(node.port)
      await c.connect()
      return c
    },
    stop
  }
  return handle
}
