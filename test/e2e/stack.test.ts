/**
 * The whole stack as real processes: Redis, one resource service, and gateway replicas
 * sharing keys, users and clients files. Edge revocation across replicas, key rotation,
 * JWKS fetch counting, and service-to-service tokens.
 */
import t from 'tap'
import { generateKeyPair, SignJWT } from 'jose'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ServiceTokenSource } from '#shared/service-token-source.js'
import { addClient } from '#gateway/identity/clients-file.js'
import { addUser } from '#gateway/identity/users-file.js'
import { freePort, redisForTest, type TestRedis } from '../helpers/redis.js'
import { latchkey, type Proc } from '../helpers/processes.js'

const dir = mkdtempSync(join(tmpdir(), 'lk-e2e-'))
const files = { keys: join(dir, 'keys.json'), users: join(dir, 'users.json'), clients: join(dir, 'clients.json') }
const PASSWORD = 'e2e passphrase'
const ISSUER = 'http://latchkey.test'

interface Gateway { proc: Proc, base: string }

let redis: TestRedis
let svcSecret: string
let resourcePort: number
let resourceBase: string
let a: Gateway
let b: Gateway

async function startGateway (fixedPort?: number): Promise<Gateway> {
  const port = fixedPort ?? await freePort()
  const proc = latchkey(t, ['gateway'], {
    PORT: String(port), HOST: '127.0.0.1', ISSUER, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
    SIGNING_KEYS_FILE: files.keys, USERS_FILE: files.users, CLIENTS_FILE: files.clients,
    RESOURCE_URL: `http://127.0.0.1:${resourcePort}`, LOG_LEVEL: 'info'
  })
  await proc.waitFor(/Server listening/)
  return { proc, base: `http://127.0.0.1:${port}` }
}

async function loginAt (gw: Gateway): Promise<{ access: string, refresh: string }> {
  const res = await fetch(`${gw.base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: PASSWORD }) })
  if (res.status !== 200) throw new Error(`login answered ${res.status}`)
  const refresh = /lk_refresh=([^;]+)/.exec(res.headers.get('set-cookie') ?? '')?.[1] as string
  return { access: (await res.json() as { access_token: string }).access_token, refresh }
}

const get = async (url: string, token?: string): Promise<Response> => fetch(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })

t.before(async () => {
  await addUser(files.users, { username: 'alice', password: PASSWORD, scope: 'notes:read notes:write' })
  svcSecret = (await addClient(files.clients, { id: 'svc-reports', scope: 'internal:read', audiences: ['latchkey-api'], grants: ['client_credentials'] })).secret
  const gen = latchkey(t, ['keys', 'generate', '--out', files.keys])
  if (await gen.exited !== 0) throw new Error(`keys generate failed: ${gen.stderr}`)
  redis = await redisForTest(t)
  resourcePort = await freePort()
  a = await startGateway()
  const resource = latchkey(t, ['resource'], {
    PORT: String(resourcePort), HOST: '127.0.0.1', ISSUER, JWKS_URL: `${a.base}/.well-known/jwks.json`, LOG_LEVEL: 'info'
  })
  await resource.waitFor(/Server listening/)
  resourceBase = `http://127.0.0.1:${resourcePort}`
  b = await startGateway()
})

async function jwksFetchesAt (gw: Gateway): Promise<number> {
  const body = await (await fetch(`${gw.base}/metrics`)).text()
  return body.split('\n')
    .filter(l => l.startsWith('latchkey_http_request_duration_seconds_count{') && l.includes('route="/.well-known/jwks.json"'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
}

t.test('logout at replica A: the same access token is refused at replica B within 1 s, and at a replica started later', async (t) => {
  const { access, refresh } = await loginAt(a)
  t.equal((await get(`${b.base}/api/me`, access)).status, 200, 'B proxies the token before logout')
  const out = await fetch(`${a.base}/auth/logout`, { method: 'POST', headers: { cookie: `lk_refresh=${refresh}` } })
  t.equal(out.status, 204)
  const started = Date.now()
  let status = 200
  while (Date.now() - started < 3000) {
    status = (await get(`${b.base}/api/me`, access)).status
    if (status === 401) break
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  const took = Date.now() - started
  t.equal(status, 401, 'B refuses the revoked session')
  t.ok(took < 1000, `within 1 s (${took} ms)`)
  const refused = await get(`${b.base}/api/me`, access)
  t.match(refused.headers.get('www-authenticate'), /error="invalid_token"/)

  const c = await startGateway()
  t.equal((await get(`${c.base}/api/me`, access)).status, 401, 'a replica started after the logout refuses it too')
  // The resource service itself is stateless: it still accepts the (unexpired) token.
  t.equal((await get(`${resourceBase}/api/me`, access)).status, 200, 'the resource never talks to Redis')
  await c.proc.stop()
})

t.test('1,000 tokens with random unknown kids cause at most 2 JWKS fetches at the gateway', async (t) => {
  const { access } = await loginAt(a)
  t.equal((await get(`${resourceBase}/api/me`, access)).status, 200, 'keys cached')
  const before = await jwksFetchesAt(a)
  const { privateKey } = await generateKeyPair('EdDSA')
  const now = Math.floor(Date.now() / 1000)
  const forged = await Promise.all(Array.from({ length: 1000 }, (_, i) =>
    new SignJWT({ client_id: 'x', scope: 'notes:read' })
      .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: `random-${i}-${Math.random().toString(36).slice(2)}` })
      .setIssuer(ISSUER).setAudience('latchkey-api').setSubject('mallory').setIssuedAt(now).setExpirationTime(now + 60).setJti(String(i))
      .sign(privateKey)))
  const statuses = new Map<number, number>()
  for (let i = 0; i < forged.length; i += 50) {
    const batch = await Promise.all(forged.slice(i, i + 50).map(async tok => (await get(`${resourceBase}/api/me`, tok)).status))
    for (const s of batch) statuses.set(s, (statuses.get(s) ?? 0) + 1)
  }
  t.same([...statuses.keys()], [401], 'every forged token refused')
  const fetches = (await jwksFetchesAt(a)) - before
  t.ok(fetches <= 2, `${fetches} JWKS fetches for 1,000 unknown kids`)
  t.equal((await get(`${resourceBase}/api/me`, access)).status, 200, 'the genuine token still passes')
})

t.test('service-to-service: one token for 100 concurrent callers; /internal/stats takes it and refuses a user token', async (t) => {
  const issuedBefore = await tokensIssued(a, 'client_credentials')
  const source = new ServiceTokenSource({ tokenUrl: `${a.base}/oauth/token`, clientId: 'svc-reports', clientSecret: svcSecret, audience: 'latchkey-api', scope: 'internal:read' })
  const tokens = await Promise.all(Array.from({ length: 100 }, () => source.getToken()))
  t.equal(new Set(tokens).size, 1, 'one token shared by every caller')
  t.equal((await tokensIssued(a, 'client_credentials')) - issuedBefore, 1, 'the gateway issued exactly one')
  const stats = await get(`${resourceBase}/internal/stats`, tokens[0])
  t.equal(stats.status, 200)
  const { access } = await loginAt(a)
  const userTry = await get(`${resourceBase}/internal/stats`, access)
  t.equal(userTry.status, 403, 'a user token is refused')
})

async function tokensIssued (gw: Gateway, grant: string): Promise<number> {
  const body = await (await fetch(`${gw.base}/metrics`)).text()
  const line = body.split('\n').find(l => l.startsWith(`latchkey_tokens_issued_total{grant="${grant}"} `))
  return line === undefined ? 0 : Number(line.split(' ').pop())
}

t.test('key rotation: a new first key after a restart; old tokens still pass, new ones after one refetch', async (t) => {
  const before = await loginAt(a)
  t.equal((await get(`${resourceBase}/api/me`, before.access)).status, 200)
  const fetchesBefore = await jwksFetchesAt(a)
  const rotate = latchkey(t, ['keys', 'generate', '--out', files.keys, '--prepend'])
  t.equal(await rotate.exited, 0, rotate.stderr)
  // Restart A on the same address (the resource's JWKS_URL), as a rolling deploy would.
  const port = Number(new URL(a.base).port)
  t.equal(await a.proc.stop(), 0)
  const restarted = await startGateway(port)
  t.teardown(() => restarted.proc.stop())
  const fresh = await loginAt(restarted)
  const kidOf = (jwt: string): string => (JSON.parse(Buffer.from(jwt.split('.')[0] as string, 'base64url').toString()) as { kid: string }).kid
  t.not(kidOf(fresh.access), kidOf(before.access), 'the new first key signs')
  t.equal((await get(`${resourceBase}/api/me`, before.access)).status, 200, 'old tokens still pass at the resource (cached key)')
  // An unknown kid triggers a refetch, at most one per cooldown (30 s, jose's default): the
  // resource fetched keys moments ago, so the new token may wait out the cooldown once.
  const deadline = Date.now() + 45_000
  let status = 0
  while (Date.now() < deadline) {
    status = (await get(`${resourceBase}/api/me`, fresh.access)).status
    if (status === 200) break
    await new Promise(resolve => setTimeout(resolve, 1000))
  }
  t.equal(status, 200, 'new tokens pass after a refetch for the unknown kid')
  t.equal(await jwksFetchesAt(restarted), 1, 'exactly one JWKS fetch reached the restarted gateway')
  t.ok(fetchesBefore >= 0)
  t.equal((await get(`${restarted.base}/api/me`, before.access)).status, 200, 'the gateway still accepts old tokens (the old key is still published)')
  t.equal((await get(`${b.base}/api/me`, before.access)).status, 200, 'a replica still on the old key set accepts them too')
})
