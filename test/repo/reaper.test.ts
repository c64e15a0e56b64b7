/**
 * A test process that ends early (tap's timeout sends SIGTERM) takes the servers it spawned
 * with it (test/helpers/reaper.ts): no redis-server is left holding a port on the machine.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { ROOT } from '../helpers/processes.js'
import { hasRedisServerBinary, waitForRedis } from '../helpers/redis.js'

async function answers (port: number): Promise<boolean> {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  r.on('error', () => {})
  try {
    await r.connect()
    return await r.ping() === 'PONG'
  } catch {
    return false
  } finally {
    r.disconnect()
  }
}

t.test('SIGTERM to a test process kills the redis-server it spawned', { skip: hasRedisServerBinary() ? false : 'no redis-server on PATH' }, async (t) => {
  const child = spawn(process.execPath, ['--import=tsx', '--conditions=latchkey-source', join(ROOT, 'test/repo/fixtures/spawns-redis.ts')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => { resolve(Number(d.toString().trim())) })
    child.once('exit', () => { reject(new Error('the fixture ended before spawning')) })
  })
  await waitForRedis(`redis://127.0.0.1:${port}`)
  t.ok(await answers(port), `its redis-server answers on ${port}`)
  const exited = new Promise(resolve => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
  let gone = false
  for (let i = 0; i < 40 && !gone; i++) {
    gone = !(await answers(port))
    if (!gone) await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.ok(gone, 'and is gone once the test process is')
})
