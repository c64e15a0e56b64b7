/**
 * SIGTERM during 200 in-flight requests: every request completes with 2xx, then the
 * process exits 0 (a real gateway process, real sockets).
 *
 * The requests are proxied to an upstream that holds every answer until the test lets go,
 * so they are in flight for as long as the test says, whatever the machine's load. (Logins
 * kept busy on argon2 were not: on a loaded machine 200 verifications outlasted the
 * gateway's 10 s socket inactivity timeout, CONNECTION_TIMEOUT_MS, which hung up on the
 * waiting ones; and signalling at the first answer caught requests not yet sent, whose
 * connections the closing server rightly drops as idle.)
 */
import t, { type Test } from 'tap'
import http from 'node:http'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addUser } from '#gateway/identity/users-file.js'
import { PROXY_MAX_IN_FLIGHT_PER_CALLER } from '#gateway/proxy/upstream.js'
import { freePort } from '../../../../test/helpers/redis.js'
import { latchkey } from '../../../../test/helpers/processes.js'

const N = 200
const PASSWORD = 'pw for draining'

/** An upstream that answers nothing until `release()`, then answers everything 200. */
async function holdingUpstream (t: Test): Promise<{ url: string, readonly held: number, release: () => void }> {
  const waiting: http.ServerResponse[] = []
  let released = false
  const answer = (res: http.ServerResponse): void => { res.writeHead(200, { 'content-type': 'text/plain' }).end('ok') }
  const server = http.createServer((req, res) => {
    req.resume()
    if (released) answer(res)
    else waiting.push(res)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) })
  const { port } = server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${port}`,
    get held () { return waiting.length },
    release () { released = true; for (const res of waiting.splice(0)) answer(res) }
  }
}

t.test('SIGTERM drains in-flight requests and exits 0', async (t) => {
  const users = join(mkdtempSync(join(tmpdir(), 'lk-drain-')), 'users.json')
  await addUser(users, { username: 'alice', password: PASSWORD, scope: 'notes:read' })
  const upstream = await holdingUpstream(t)
  const port = await freePort()
  const gw = latchkey(t, ['gateway'], {
    PORT: String(port), HOST: '127.0.0.1', USERS_FILE: users, RESOURCE_URL: upstream.url, LOG_LEVEL: 'info',
    LOGIN_MAX_ATTEMPTS_PER_USER: '10000', LOGIN_MAX_ATTEMPTS_PER_IP: '10000'
  })
  await gw.waitFor(/Server listening/)
  const base = `http://127.0.0.1:${port}`
  // One caller may have PROXY_MAX_IN_FLIGHT_PER_CALLER requests in progress: spread them over sessions.
  const sessions = Math.ceil(N / (PROXY_MAX_IN_FLIGHT_PER_CALLER - 1))
  const tokens: string[] = []
  for (let i = 0; i < sessions; i++) {
    const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: PASSWORD }) })
    tokens.push((await res.json() as { access_token: string }).access_token)
  }
  let done = 0
  const requests = Array.from({ length: N }, async (_, i) => {
    const res = await fetch(`${base}/api/drain/${i}`, { headers: { authorization: `Bearer ${tokens[i % sessions] as string}` } })
    await res.arrayBuffer()
    done += 1
    return res.status
  })
  // Every request has gone through the gateway and waits at the upstream: in flight.
  for (const deadline = Date.now() + 30_000; upstream.held < N && Date.now() < deadline;) await new Promise(resolve => setTimeout(resolve, 5))
  t.equal(upstream.held, N, `all ${N} requests reached the upstream`)
  gw.child.kill('SIGTERM')
  await gw.waitFor(/shutting down: draining in-flight requests/)
  const inFlightAtSignal = N - done
  upstream.release()
  const statuses = await Promise.all(requests)
  const code = await gw.exited
  t.equal(inFlightAtSignal, N, `${inFlightAtSignal} requests were in flight at SIGTERM`)
  t.same([...new Set(statuses)], [200], 'all completed with 200')
  t.equal(code, 0, 'exit code 0')
  t.match(gw.stdout, /shutting down: draining in-flight requests/)
})
