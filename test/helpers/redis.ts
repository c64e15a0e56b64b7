/**
 * Where tests get Redis, in the order docs/contract.md gives: `REDIS_URL` if set; testcontainers when a Docker
 * engine answers; a `redis-server` on PATH spawned on a free port per test file.
 * With none of them the test fails with one line saying how to get Redis.
 *
 * `own: true` asks for a server this test may kill and restart (fault tests): it skips
 * `REDIS_URL`, which belongs to someone else.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { reapOnExit } from './reaper.js'

export interface TestRedis {
  readonly url: string
  readonly port: number
  /** A key prefix unique to this test file, so files sharing one `REDIS_URL` never collide. */
  readonly prefix: string
  /** Stop the server abruptly (owned servers only). */
  kill (): Promise<void>
  /** Start it again on the same port (owned servers only). */
  restart (): Promise<void>
  /** Send the server process a signal, e.g. SIGSTOP / SIGCONT to freeze it (owned servers only). */
  signal (signal: NodeJS.Signals): void
  stop (): Promise<void>
}

interface Teardown { teardown (fn: () => unknown): void }

const HOW_TO_GET_REDIS = 'No Redis for tests: set REDIS_URL=redis://host:6379, start a Docker engine, or install redis-server (apt-get install redis-server).'

export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      srv.close(() => { resolve(typeof addr === 'object' && addr !== null ? addr.port : 0) })
    })
  })
}

let uniq = 0
function uniquePrefix (): string {
  uniq += 1
  return `lkt${process.pid.toString(36)}${uniq}:`
}

export function hasRedisServerBinary (): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0
}

function dockerEngineAnswers (): boolean {
  if (process.env.DOCKER_HOST === undefined && !existsSync('/var/run/docker.sock')) return false
  return spawnSync('docker', ['info'], { stdio: 'ignore', timeout: 5000 }).status === 0
}

/** One raw PING over TCP: no client library, so no reconnect logic to get in the way. */
function pingOnce (url: string): Promise<boolean> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port || 6379) })
    let reply = ''
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.setTimeout(500, () => { done(false) })
    socket.on('error', () => { done(false) })
    socket.on('connect', () => { socket.write('PING\r\n') })
    socket.on('data', (d: Buffer) => {
      reply += d.toString()
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'))
    })
  })
}

export async function waitForRedis (url: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await pingOnce(url))) {
    if (Date.now() > deadline) throw new Error(`Redis at ${new URL(url).host} did not answer PING within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** Spawn `redis-server` with the given extra arguments on `port` (no persistence). */
export function spawnRedisServer (port: number, dir: string, extra: string[] = []): ChildProcess {
  const child = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--protected-mode', 'no', ...extra
  ], { stdio: 'ignore' })
  child.unref()
  return reapOnExit(child)
}

async function ownedServer (t: Teardown): Promise<TestRedis> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'lk-redis-'))
  let child: ChildProcess | undefined = spawnRedisServer(port, dir)
  const url = `redis://127.0.0.1:${port}`
  const killChild = async (): Promise<void> => {
    const c = child
    child = undefined
    if (c === undefined || c.exitCode !== null) return
    // ref() while waiting: the child is unref'd so it never holds a test open, but here the
    // test must wait for it, or the loop empties and tap reports the teardown unfinished.
    c.ref()
    await new Promise<void>((resolve) => { c.once('exit', () => { resolve() }); c.kill('SIGKILL') })
  }
  const handle: TestRedis = {
    url,
    port,
    prefix: uniquePrefix(),
    kill: killChild,
    async restart () {
      await killChild()
      child = spawnRedisServer(port, dir)
      await waitForRedis(url)
    },
    signal (signal) {
      if (child === undefined || child.exitCode !== null) throw new Error('the Redis server is not running')
      child.kill(signal)
    },
    async stop () {
      await killChild()
      rmSync(dir, { recursive: true, force: true })
    }
  }
  t.teardown(() => handle.stop())
  await waitForRedis(url)
  return handle
}

async function containerServer (t: Teardown): Promise<TestRedis> {
  const { GenericContainer } = await import('testcontainers')
  const container = await new GenericContainer('redis:7-alpine').withExposedPorts(6379).start()
  const port = container.getMappedPort(6379)
  const url = `redis://${container.getHost()}:${port}`
  const handle: TestRedis = {
    url,
    port,
    prefix: uniquePrefix(),
    async kill () { await container.stop({ timeout: 0 }) },
    signal () { throw new Error('a container Redis is not frozen by signals; fault tests use a spawned redis-server') },
    async restart () {
      // A restarted container gets a new mapped port; fault tests that need the same
      // address run on a spawned redis-server (see `redisForTest({ own: true })`).
      await container.restart()
    },
    async stop () { await container.stop({ timeout: 0 }).catch(() => {}) }
  }
  t.teardown(() => handle.stop())
  return handle
}

export async function redisForTest (t: Teardown, options: { own?: boolean } = {}): Promise<TestRedis> {
  const shared = process.env.REDIS_URL
  if (shared !== undefined && shared !== '' && options.own !== true) {
    const port = Number(new URL(shared).port || 6379)
    const notOwned = async (): Promise<void> => { throw new Error('this Redis comes from REDIS_URL and is not the test\'s to stop') }
    return { url: shared, port, prefix: uniquePrefix(), kill: notOwned, restart: notOwned, signal: () => { throw new Error('this Redis comes from REDIS_URL and is not the test\'s to signal') }, stop: async () => {} }
  }
  // A fault test needs the same address after a restart, which a spawned server gives.
  if (options.own === true && hasRedisServerBinary()) return ownedServer(t)
  if (dockerEngineAnswers()) return containerServer(t)
  if (hasRedisServerBinary()) return ownedServer(t)
  throw new Error(HOW_TO_GET_REDIS)
}
