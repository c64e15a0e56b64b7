/**
 * A real Redis Cluster for tests (docs/contract.md "Refresh-token families" 6: proven against a real
 * 3-master cluster): `redis-server` processes with `cluster-enabled yes` on free ports,
 * each in its own temp dir, joined by `redis-cli --cluster create`, and gone in teardown.
 * No replicas: the tests are about slots, not failover (Sentinel covers that).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { freePort, spawnRedisServer, waitForRedis } from './redis.js'

export interface HostPort {
  readonly host: string
  readonly port: number
}

export interface TestRedisCluster {
  /** The masters' addresses (what REDIS_CLUSTER_NODES lists). */
  readonly nodes: readonly HostPort[]
  /** `REDIS_CLUSTER_NODES` for a gateway. */
  readonly nodesEnv: string
  /** A key prefix unique to this test file. */
  readonly prefix: string
  /** A plain (non-cluster) connection to each master, for SCAN and INFO; closed in teardown. */
  readonly masters: readonly Redis[]
  /** Kill master `index` (SIGKILL); with `requireFullCoverage: false` the others keep serving their slots. */
  kill (index: number): Promise<void>
  stop (): Promise<void>
}

interface Teardown { teardown (fn: () => unknown): void }

const HOST = '127.0.0.1'
/** Longest wait for `redis-cli --cluster create` and for every node to report cluster_state:ok. */
const CLUSTER_START_TIMEOUT_MS = 20_000
/** Failure detection is not under test; 2 s keeps gossip quiet on a busy machine. */
const CLUSTER_NODE_TIMEOUT_MS = 2000

function binaryAnswers (name: string): boolean {
  return spawnSync(name, ['--version'], { stdio: 'ignore' }).status === 0
}

/**
 * Why the real-topology tests (Cluster, Sentinel) cannot run here, or undefined. They need
 * the binaries themselves: a `REDIS_URL` or a container cannot be turned into a topology.
 */
export function redisTopologySkipReason (): string | undefined {
  const missing = ['redis-server', 'redis-cli'].filter(b => !binaryAnswers(b))
  if (missing.length === 0) return undefined
  return `${missing.join(' and ')} not on PATH: Redis Cluster/Sentinel tests need the binaries (apt-get install redis-server)`
}

/** SIGKILL a spawned server and wait until it is gone. */
export async function killProcess (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  // ref() while waiting: servers are unref'd so they never hold a test open, but here the
  // test must wait for the exit, or the loop empties before teardown finishes.
  child.ref()
  await new Promise<void>((resolve) => { child.once('exit', () => { resolve() }); child.kill('SIGKILL') })
}

/** Poll `check` every 50 ms until it returns true; throws `what` after `timeoutMs`. */
export async function until (what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      if (await check()) return
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last === undefined ? '' : ` (last error: ${String(last)})`}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

function run (cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { out += d.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (code === 0) resolve(out)
      else reject(new Error(`${cmd} ${args.join(' ')} exited with ${String(code)}: ${out.slice(-800)}`))
    })
  })
}

function infoField (info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim()
}

let clusters = 0

/** Start a `masters`-node cluster (default 3), every slot assigned, no replicas. */
export async function redisClusterForTest (t: Teardown, options: { masters?: number, requireFullCoverage?: boolean } = {}): Promise<TestRedisCluster> {
  const count = options.masters ?? 3
  const dir = mkdtempSync(join(tmpdir(), 'lk-cluster-'))
  const children: ChildProcess[] = []
  const masters: Redis[] = []
  const stop = async (): Promise<void> => {
    for (const m of masters) m.disconnect()
    await Promise.all(children.map(killProcess))
    rmSync(dir, { recursive: true, force: true })
  }
  t.teardown(stop)

  const nodes: HostPort[] = []
  for (let i = 0; i < count; i++) {
    const port = await freePort()
    // Each node rewrites its own cluster state file (nodes.conf) in its own dir.
    const nodeDir = join(dir, String(port))
    mkdirSync(nodeDir)
    children.push(spawnRedisServer(port, nodeDir, [
      '--cluster-enabled', 'yes',
      '--cluster-config-file', 'nodes.conf',
      '--cluster-node-timeout', String(CLUSTER_NODE_TIMEOUT_MS),
      '--cluster-require-full-coverage', options.requireFullCoverage === false ? 'no' : 'yes'
    ]))
    nodes.push({ host: HOST, port })
  }
  await Promise.all(nodes.map(n => waitForRedis(`redis://${n.host}:${n.port}`)))
  await run('redis-cli', ['--cluster', 'create', ...nodes.map(n => `${n.host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], CLUSTER_START_TIMEOUT_MS)

  for (const n of nodes) {
    const client = new Redis({ host: n.host, port: n.port, lazyConnect: true, maxRetriesPerRequest: 1 })
    client.on('error', () => {})
    await client.connect()
    masters.push(client)
  }
  // `--cluster create` returns once the nodes agree on the configuration; wait until every
  // node also sees all slots served and all peers, so the first client gets a full map.
  await until('cluster_state:ok on every node', CLUSTER_START_TIMEOUT_MS, async () => {
    const infos = await Promise.all(masters.map(m => m.cluster('INFO')))
    return infos.every(info => infoField(info, 'cluster_state') === 'ok' &&
      infoField(info, 'cluster_slots_ok') === '16384' && infoField(info, 'cluster_known_nodes') === String(count))
  })

  clusters += 1
  return {
    nodes,
    nodesEnv: nodes.map(n => `${n.host}:${n.port}`).join(','),
    prefix: `lkc${process.pid.toString(36)}${clusters}:`,
    masters,
    async kill (index) {
      const child = children[index]
      if (child !== undefined) await killProcess(child)
    },
    stop
  }
}

/** Every key under `match*` on one node (SCAN, never KEYS). */
export async function scanNode (node: Redis, match: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await node.scan(cursor, 'MATCH', `${match}*`, 'COUNT', 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys.sort()
}
