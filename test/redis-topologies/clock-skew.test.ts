/**
 * Two gateway processes on one Redis, one of them 15 s behind (libfaketime, Debian's
 * `faketime`): the grace window and the expiries are measured by Redis' clock, so which
 * replica answers makes no difference (issue: a replica's own clock used to decide).
 */
import t from 'tap'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addUser } from '#gateway/identity/users-file.js'
import { freePort, redisForTest, type TestRedis } from '../helpers/redis.js'
import { latchkey } from '../helpers/processes.js'

const LIBFAKETIME = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/faketime/libfaketime.so.1'].find(p => existsSync(p))
const SKEW = '-15s'
const GRACE_S = 1

if (LIBFAKETIME === undefined) {
  t.fail('libfaketime not found: apt-get install faketime')
} else {
  const dir = mkdtempSync(join(tmpdir(), 'lk-skew-'))
  const files = { keys: join(dir, 'keys.json'), users: join(dir, 'users.json'), clients: join(dir, 'clients.json') }
  const PASSWORD = 'skew passphrase'
  let redis: TestRedis

  const startGateway = async (extraEnv: Record<string, string> = {}): Promise<string> => {
    const port = await freePort()
    const proc = latchkey(t, ['gateway'], {
      PORT: String(port), HOST: '127.0.0.1', ISSUER: 'http://latchkey.test', REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
      SIGNING_KEYS_FILE: files.keys, USERS_FILE: files.users, CLIENTS_FILE: files.clients, REFRESH_REUSE_GRACE: String(GRACE_S), LOG_LEVEL: 'info', ...extraEnv
    })
    await proc.waitFor(/Server listening/, 45_000)
    return `http://127.0.0.1:${port}`
  }
  const login = async (base: string): Promise<string> => {
    const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: PASSWORD }) })
    if (res.status !== 200) throw new Error(`login answered ${res.status}`)
    return /lk_refresh=([^;]+)/.exec(res.headers.get('set-cookie') ?? '')?.[1] as string
  }
  const refresh = async (base: string, token: string): Promise<{ status: number, token: string | undefined }> => {
    const res = await fetch(`${base}/auth/refresh`, { method: 'POST', headers: { cookie: `lk_refresh=${token}` } })
    await res.arrayBuffer()
    return { status: res.status, token: /lk_refresh=([^;]+)/.exec(res.headers.get('set-cookie') ?? '')?.[1] }
  }

  let onTime: string
  let behind: string
  t.before(async () => {
    await addUser(files.users, { username: 'alice', password: PASSWORD, scope: 'notes:read' })
    writeFileSync(files.clients, '{"clients":[]}\n', { mode: 0o600 })
    const gen = latchkey(t, ['keys', 'generate', '--out', files.keys])
    if (await gen.exited !== 0) throw new Error(`keys generate failed: ${gen.stderr}`)
    redis = await redisForTest(t)
    ;[onTime, behind] = await Promise.all([
      startGateway(),
      // Only the wall clock is moved: timers (monotonic) run at their normal pace.
      startGateway({ LD_PRELOAD: LIBFAKETIME, FAKETIME: SKEW, FAKETIME_DONT_FAKE_MONOTONIC: '1' })
    ])
  })

  t.test('rotated at the replica that is behind, retried at once at the other: the same successor, not reuse', async (t) => {
    const t0 = await login(onTime)
    const first = await refresh(behind, t0)
    t.equal(first.status, 200)
    const retry = await refresh(onTime, t0)
    t.equal(retry.status, 200, 'the second tab\'s retry is inside grace')
    t.equal(retry.token, first.token, 'and gets the successor already issued')
    t.equal((await refresh(onTime, first.token as string)).status, 200, 'the family lives on')
  })

  t.test(`a replay ${GRACE_S} s after the rotation is reuse at the replica that is behind, too`, async (t) => {
    const t0 = await login(onTime)
    const first = await refresh(onTime, t0)
    t.equal(first.status, 200)
    await new Promise(resolve => setTimeout(resolve, GRACE_S * 1000 + 300)) // the grace window passes in real time
    t.equal((await refresh(behind, t0)).status, 401, 'the replay is refused')
    t.equal((await refresh(onTime, first.token as string)).status, 401, 'and the family is revoked, live successor included')
  })
}
