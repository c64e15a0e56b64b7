/**
 * WORKERS=2: the gateway as a node:cluster pool on one port, as real processes. Both
 * workers serve; sessions, reuse detection and metrics are the pool's, not a worker's; a
 * worker that dies is replaced; SIGTERM drains every worker and exits 0.
 */
import t from 'tap'
import http from 'node:http'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addClient } from '#gateway/identity/clients-file.js'
import { addUser } from '#gateway/identity/users-file.js'
import { freePort, redisForTest } from '../helpers/redis.js'
import { latchkey, type Proc } from '../helpers/processes.js'
import { writeKeysFile } from '../helpers/keys-file.js'
import { readAnswer, request, type Answer } from '../helpers/http.js'

const dir = mkdtempSync(join(tmpdir(), 'lk-pool-'))
const files = { keys: join(dir, 'keys.json'), users: join(dir, 'users.json'), clients: join(dir, 'clients.json') }
const PASSWORD = 'pool passphrase'

let port: number
let pool: Proc
let clientAuth: string

function workerPids (): number[] {
  const pids = new Set<number>()
  for (const line of pool.stdout.split('\n')) {
    if (line.includes('Server listening')) pids.add(Number(/"pid":(\d+)/.exec(line)?.[1]))
  }
  return [...pids]
}

/**
 * Pids of the workers that logged a completed request for `url`. A worker's log lines reach
 * us through the primary's pipe, possibly after its answer did: wait (up to 2 s) for both.
 */
async function servedBy (url: string): Promise<Set<number>> {
  const deadline = Date.now() + 2000
  let pids = servedBySoFar(url)
  while (pids.size < 2 && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 50))
    pids = servedBySoFar(url)
  }
  return pids
}

function servedBySoFar (url: string): Set<number> {
  const reqIds = new Set<string>()
  const pids = new Set<number>()
  for (const line of pool.stdout.split('\n')) {
    if (line.includes(`"url":"${url}"`)) reqIds.add(/"reqId":"([^"]+)"/.exec(line)?.[1] ?? '')
  }
  for (const line of pool.stdout.split('\n')) {
    const id = /"reqId":"([^"]+)"/.exec(line)?.[1]
    if (id !== undefined && reqIds.has(id) && line.includes('request completed')) pids.add(Number(/"pid":(\d+)/.exec(line)?.[1]))
  }
  return pids
}

async function clientToken (): Promise<Answer> {
  return await request(port, 'POST', '/oauth/token',
    { authorization: `Basic ${clientAuth}`, 'content-type': 'application/x-www-form-urlencoded' }, 'grant_type=client_credentials')
}

async function tokensIssued (): Promise<number> {
  const metrics = await request(port, 'GET', '/metrics')
  return Number(/^latchkey_tokens_issued_total\{grant="client_credentials"\} (\d+)$/m.exec(metrics.body)?.[1] ?? -1)
}

t.before(async () => {
  await addUser(files.users, { username: 'alice', password: PASSWORD, scope: 'notes:read' })
  const secret = (await addClient(files.clients, { id: 'svc', scope: 'internal:read', audiences: ['latchkey-api'], grants: ['client_credentials'] })).secret
  clientAuth = Buffer.from(`svc:${secret}`).toString('base64')
  await writeKeysFile(files.keys)
  const redis = await redisForTest(t)
  port = await freePort()
  pool = latchkey(t, ['gateway'], {
    PORT: String(port), HOST: '127.0.0.1', ISSUER: `http://127.0.0.1:${port}`, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
    SIGNING_KEYS_FILE: files.keys, USERS_FILE: files.users, CLIENTS_FILE: files.clients, LOG_LEVEL: 'info', COOKIE_SECURE: 'false', WORKERS: '2'
  })
  // Start-up only: a loaded CI machine may take a while to fork three processes (main saw 20 s run out).
  await pool.waitFor(/gateway worker pool listening/, 60_000)
})

t.test('two workers share the port and both serve', async (t) => {
  // Workers' own log lines reach us through the primary, after it says the pool listens;
  // on a loaded machine that took more than a second (a CI run saw one of two).
  for (const deadline = Date.now() + 10_000; workerPids().length < 2 && Date.now() < deadline;) await new Promise(resolve => setTimeout(resolve, 50))
  const pids = workerPids()
  t.equal(pids.length, 2, `two worker processes (${pids.join(', ')})`)
  t.notOk(pids.includes(pool.child.pid as number), 'the primary serves nothing itself')
  const answers = await Promise.all(Array.from({ length: 20 }, clientToken))
  t.same([...new Set(answers.map(a => a.status))], [200], '20 tokens, each on its own connection')
  t.same([...await servedBy('/oauth/token')].sort(), [...pids].sort(), 'both workers issued some')
})

t.test('GET /metrics answers for the whole pool, whichever worker serves it', async (t) => {
  const before = await tokensIssued()
  await Promise.all(Array.from({ length: 10 }, clientToken))
  const seen = await Promise.all(Array.from({ length: 6 }, tokensIssued))
  t.same([...new Set(seen)], [before + 10], `every scrape counts all ${before + 10} tokens`)
  t.equal((await servedBy('/metrics')).size, 2, 'scrapes were answered by both workers')
})

t.test('a session rotates across workers, and a replayed token revokes it there too', async (t) => {
  const login = await request(port, 'POST', '/auth/login', { 'content-type': 'application/json' }, JSON.stringify({ username: 'alice', password: PASSWORD }))
  t.equal(login.status, 200)
  const cookieOf = (a: Answer): string => /lk_refresh=([^;]+)/.exec(String(a.headers['set-cookie']))?.[1] ?? ''
  const first = cookieOf(login)
  let current = first
  const refresh = async (token: string): Promise<Answer> => await request(port, 'POST', '/auth/refresh', { cookie: `lk_refresh=${token}` })
  for (let i = 0; i < 6; i++) {
    const r = await refresh(current)
    t.equal(r.status, 200, `rotation ${i + 1}`)
    current = cookieOf(r)
  }
  t.ok((await servedBy('/auth/refresh')).size === 2, 'rotations were served by both workers')
  // Six generations old: grace covers only the immediate predecessor, so this is reuse (rule 2).
  t.equal((await refresh(first)).status, 401, 'an old token is reuse')
  t.equal((await refresh(current)).status, 401, 'and the live successor died with the family')
})

t.test('a worker that dies is replaced, and the port keeps answering', async (t) => {
  const [victim] = workerPids()
  process.kill(victim as number, 'SIGKILL')
  await pool.waitFor(/gateway worker died; starting another/)
  await t.resolves(async () => {
    for (let i = 0; workerPids().length < 3; i++) {
      if (i > 200) throw new Error('no replacement worker listened')
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  })
  const answers = await Promise.all(Array.from({ length: 10 }, clientToken))
  t.same([...new Set(answers.map(a => a.status))], [200])
})

t.test('SIGTERM: every worker drains its in-flight requests and the pool exits 0', async (t) => {
  const N = 40
  const body = 'grant_type=client_credentials'
  const incoming = (): number => pool.stdout.split('\n').filter(l => l.includes('"msg":"incoming request"') && l.includes('"url":"/oauth/token"')).length
  const before = incoming()
  // Each request sends its headers and half its body, so it is in a worker (routed, reading
  // its body) when the signal comes; the rest of the body follows the signal.
  const pending = Array.from({ length: N }, () => {
    let req!: http.ClientRequest
    const answer = new Promise<Answer>((resolve, reject) => {
      req = http.request({
        host: '127.0.0.1', port, method: 'POST', path: '/oauth/token', agent: false,
        headers: { authorization: `Basic ${clientAuth}`, 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(body.length) }
      }, (res) => { readAnswer(res).then(resolve, reject) })
      req.on('error', reject)
      req.write(body.slice(0, 10))
    })
    return { req, answer }
  })
  await t.resolves(async () => {
    for (let i = 0; incoming() - before < N; i++) {
      if (i > 400) throw new Error(`only ${incoming() - before} of ${N} requests reached a worker`)
      await new Promise(resolve => setTimeout(resolve, 25))
    }
  }, `all ${N} requests are inside workers`)
  pool.child.kill('SIGTERM')
  await pool.waitFor(/stopping the worker pool/)
  for (const { req } of pending) req.end(body.slice(10))
  const answers = await Promise.all(pending.map(async p => await p.answer))
  t.same([...new Set(answers.map(a => a.status))], [200], `all ${N} answered`)
  t.equal(await pool.exited, 0, 'exit 0')
  t.match(pool.stdout, /worker pool stopped/)
  for (const pid of workerPids()) {
    t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `worker ${pid} is gone`)
  }
})

t.test('a pool whose workers cannot listen exits 1 at once, leaving no worker behind', async (t) => {
  const redis = await redisForTest(t)
  const blocker = http.createServer()
  const taken = await freePort()
  await new Promise<void>(resolve => blocker.listen(taken, '127.0.0.1', resolve))
  t.teardown(() => { blocker.close() })
  const started = Date.now()
  const doomed = latchkey(t, ['gateway'], {
    PORT: String(taken), HOST: '127.0.0.1', REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
    SIGNING_KEYS_FILE: files.keys, USERS_FILE: files.users, CLIENTS_FILE: files.clients, LOG_LEVEL: 'info', WORKERS: '2'
  })
  t.equal(await doomed.exited, 1, 'the primary exits 1')
  const tookMs = Date.now() - started
  t.ok(tookMs < 15_000, `within ${tookMs} ms, not after a shutdown grace or a signal`)
  t.match(doomed.stderr, /port already in use/)
  t.match(doomed.stdout, /a gateway worker exited before it listened/)
  t.notMatch(doomed.stdout, /gateway worker died; starting another/, 'no replacement is forked for a worker that never listened')
  const forked = new Set([...doomed.stdout.matchAll(/"worker":(\d+)/g)].map(m => Number(m[1])))
  for (const pid of forked) t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `worker ${pid} is gone`)
})
