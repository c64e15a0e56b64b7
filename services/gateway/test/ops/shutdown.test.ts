/**
 * SIGTERM during 200 in-flight requests: every request completes with 2xx, then the
 * process exits 0 (a real gateway process, real sockets).
 */
import t from 'tap'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addUser } from '#gateway/identity/users-file.js'
import { freePort } from '../../../../test/helpers/redis.js'
import { latchkey } from '../../../../test/helpers/processes.js'

t.test('SIGTERM drains in-flight requests and exits 0', async (t) => {
  const users = join(mkdtempSync(join(tmpdir(), 'lk-drain-')), 'users.json')
  await addUser(users, { username: 'alice', password: 'pw for draining', scope: 'notes:read' })
  const port = await freePort()
  const gw = latchkey(t, ['gateway'], {
    PORT: String(port), HOST: '127.0.0.1', USERS_FILE: users, LOG_LEVEL: 'info',
    LOGIN_MAX_ATTEMPTS_PER_USER: '10000', LOGIN_MAX_ATTEMPTS_PER_IP: '10000'
  })
  await gw.waitFor(/Server listening/)
  const url = `http://127.0.0.1:${port}/auth/login`
  let done = 0
  // Each login runs one argon2id verify (~15 ms on a thread pool of 4): 200 of them keep
  // the process busy for well over a second, so SIGTERM lands mid-flight.
  const requests = Array.from({ length: 200 }, async () => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'pw for draining' }) })
    await res.arrayBuffer()
    done += 1
    return res.status
  })
  // Signal as soon as the first answer is back: the rest are still queued on argon2.
  while (done === 0) await new Promise(resolve => setTimeout(resolve, 1))
  gw.child.kill('SIGTERM')
  const inFlightAtSignal = 200 - done
  const statuses = await Promise.all(requests)
  const code = await gw.exited
  t.ok(inFlightAtSignal >= 100, `${inFlightAtSignal} requests were in flight at SIGTERM`)
  t.same([...new Set(statuses)], [200], 'all completed with 200')
  t.equal(code, 0, 'exit code 0')
  t.match(gw.stdout, /shutting down: draining in-flight requests/)
})
