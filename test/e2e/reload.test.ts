/**
 * Config changes reach running gateways without a restart, as real processes: replica A
 * (one process) and replica P (a WORKERS=2 pool) share one redis-server and the same
 * files; a resource service verifies through A's JWKS. The clients file sits in a
 * Kubernetes-style Secret mount and changes by the kubelet's `..data` symlink swap.
 *
 * Latencies (file written → new behaviour seen) are printed as comments; the assertions
 * are the promises: 2 s for a reload, 1 s for an offboarded user's token at the edge.
 */
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addClient, parseClientsText } from '#gateway/identity/clients-file.js'
import { addUser, removeUser } from '#gateway/identity/users-file.js'
import { request } from '../helpers/http.js'
import { within as pollWithin } from '../helpers/within.js'
import { freePort, redisForTest } from '../helpers/redis.js'
import { ROOT, cliCommand, latchkey, type Proc } from '../helpers/processes.js'
import { writeKeysFile } from '../helpers/keys-file.js'

const RELOAD_DEADLINE_MS = 2000
const EDGE_DEADLINE_MS = 1000
const PASSWORD = 'reload e2e passphrase'
const ISSUER = 'http://latchkey.test'

const dir = mkdtempSync(join(tmpdir(), 'lk-reload-e2e-'))
const secretMount = join(dir, 'secret')
const files = { keys: join(dir, 'keys.json'), users: join(dir, 'users.json'), clients: join(secretMount, 'clients.json') }

interface Gateway { readonly proc: Proc, readonly port: number }

let a: Gateway
let p: Gateway
let resourcePort: number
let svcAuth: string
let stamp = 0

async function login (gw: Gateway, username = 'alice', password = PASSWORD): Promise<{ status: number, access: string, refresh: string }> {
  const res = await request(gw.port, 'POST', '/auth/login', { 'content-type': 'application/json' }, JSON.stringify({ username, password }))
  const access = res.status === 200 ? (JSON.parse(res.body) as { access_token: string }).access_token : ''
  return { status: res.status, access, refresh: /lk_refresh=([^;]+)/.exec(String(res.headers['set-cookie']))?.[1] ?? '' }
}

async function refreshAt (gw: Gateway, token: string): Promise<number> {
  return (await request(gw.port, 'POST', '/auth/refresh', { cookie: `lk_refresh=${token}`, origin: ISSUER })).status
}

async function clientToken (gw: Gateway): Promise<number> {
  return (await request(gw.port, 'POST', '/oauth/token', { authorization: `Basic ${svcAuth}`, 'content-type': 'application/x-www-form-urlencoded' }, 'grant_type=client_credentials')).status
}

async function me (port: number, token: string): Promise<number> {
  return (await request(port, 'GET', '/api/me', { authorization: `Bearer ${token}` })).status
}

async function jwksKids (gw: Gateway): Promise<string[]> {
  return (JSON.parse((await request(gw.port, 'GET', '/.well-known/jwks.json')).body) as { keys: Array<{ kid: string }> }).keys.map(k => k.kid)
}

function kidOf (jwt: string): string {
  return (JSON.parse(Buffer.from(jwt.split('.')[0] as string, 'base64url').toString()) as { kid: string }).kid
}

/** Poll until `check` holds (each try a fresh connection), within the reload promise unless told. */
async function within (t: Test, what: string, check: () => Promise<boolean>, deadlineMs = RELOAD_DEADLINE_MS): Promise<number> {
  return await pollWithin(t, what, check, deadlineMs)
}

/** `n` answers in a row, each on a new connection: with two workers dealt connections in turn, both answered. */
async function allOf (n: number, ask: () => Promise<number>): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push(await ask())
  return out
}

/** What the kubelet does to a mounted Secret on update (atomic_writer.go). */
function kubeletSwap (clientsText: string): void {
  const previous = stamp === 0 ? undefined : `..2026_12_04_06_00_00.${stamp}`
  stamp++
  const next = `..2026_12_04_06_00_00.${stamp}`
  mkdirSync(join(secretMount, next))
  writeFileSync(join(secretMount, next, 'clients.json'), clientsText, { mode: 0o600 })
  symlinkSync(next, join(secretMount, '..data_tmp'))
  renameSync(join(secretMount, '..data_tmp'), join(secretMount, '..data'))
  if (previous !== undefined) rmSync(join(secretMount, previous), { recursive: true })
}

async function startGateway (env: Record<string, string>, ready: RegExp): Promise<Gateway> {
  const port = await freePort()
  const proc = latchkey(t, ['gateway'], {
    PORT: String(port), HOST: '127.0.0.1', ISSUER, SIGNING_KEYS_FILE: files.keys, USERS_FILE: files.users, CLIENTS_FILE: files.clients,
    RESOURCE_URL: `http://127.0.0.1:${resourcePort}`, LOG_LEVEL: 'info', COOKIE_SECURE: 'false',
    LOGIN_MAX_ATTEMPTS_PER_USER: '1000', LOGIN_MAX_ATTEMPTS_PER_IP: '1000', ...env
  })
  // Start-up only: a loaded CI machine may take a while to compile and fork; the promises under test are timed below.
  await proc.waitFor(ready, 60_000)
  return { proc, port }
}

t.before(async () => {
  await addUser(files.users, { username: 'alice', password: PASSWORD, scope: 'notes:read' })
  mkdirSync(secretMount)
  const staging = join(dir, 'clients.staging.json')
  svcAuth = Buffer.from(`svc:${(await addClient(staging, { id: 'svc', scope: 'internal:read', audiences: ['latchkey-api'] })).secret}`).toString('base64')
  kubeletSwap(readFileSync(staging, 'utf8'))
  symlinkSync('..data/clients.json', files.clients)
  await writeKeysFile(files.keys)
  const redis = await redisForTest(t)
  resourcePort = await freePort()
  const shared = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix }
  ;[a, p] = await Promise.all([
    startGateway(shared, /Server listening/),
    startGateway({ ...shared, WORKERS: '2' }, /gateway worker pool listening/)
  ])
})

t.test('offboarding: a user removed from USERS_FILE is refused at the proxy of both replicas within 1 s, and cannot refresh', async (t) => {
  const session = await login(a)
  t.equal(session.status, 200)
  // The resource is not running yet: a token the proxy lets through gets 502, a refused one 401.
  t.same([await me(a.port, session.access), ...await allOf(2, async () => await me(p.port, session.access))], [502, 502, 502], 'both replicas pass her token')
  await removeUser(files.users, 'alice')
  await within(t, 'refused at replica A', async () => await me(a.port, session.access) === 401, EDGE_DEADLINE_MS)
  await within(t, 'refused at both workers of replica P', async () => (await allOf(2, async () => await me(p.port, session.access))).every(s => s === 401), EDGE_DEADLINE_MS)
  // Three processes reloaded the file and each ran the revocation; her one family was revoked once.
  const revocations = async (gw: Gateway): Promise<number> => {
    const body = (await request(gw.port, 'GET', '/metrics')).body
    return Number(/^latchkey_revocations_total\{reason="user_changed"\} (\d+)$/m.exec(body)?.[1] ?? 0)
  }
  t.equal(await revocations(a) + await revocations(p), 1, 'revoked once across the replicas and workers')
  t.equal(await refreshAt(a, session.refresh), 401, 'her next refresh is 401')
  t.equal(await refreshAt(p, session.refresh), 401, 'at the other replica too')
  // The edge heard of the revocation from whichever process got there first; sign-in waits for each process's own reload.
  await within(t, 'and she cannot sign in at either worker of P', async () => (await allOf(2, async () => (await login(p)).status)).every(s => s === 401))
})

t.test('a user added to USERS_FILE signs in within 2 s at a replica and at every worker of a pool', async (t) => {
  await addUser(files.users, { username: 'alice', password: PASSWORD, scope: 'notes:read' })
  await within(t, 'replica A', async () => (await login(a)).status === 200)
  await within(t, 'both workers of P', async () => (await allOf(2, async () => (await login(p)).status)).every(s => s === 200))
})

t.test('a malformed USERS_FILE is refused by every process; the old users keep serving; /readyz stays ready', async (t) => {
  const good = readFileSync(files.users, 'utf8')
  writeFileSync(files.users, '{"users": [')
  const refusals = async (gw: Gateway): Promise<number> => {
    const body = (await request(gw.port, 'GET', '/metrics')).body
    return Number(/^latchkey_config_reload_total\{file="USERS_FILE",result="failure"\} (\d+)$/m.exec(body)?.[1] ?? 0)
  }
  await within(t, 'refused by A and by both workers of P (the pool\'s metrics are summed)', async () => await refusals(a) === 1 && await refusals(p) === 2)
  t.same(await allOf(2, async () => (await login(p)).status), [200, 200], 'alice still signs in at both workers')
  t.equal((await login(a)).status, 200)
  t.same([(await request(a.port, 'GET', '/readyz')).status, ...await allOf(2, async () => (await request(p.port, 'GET', '/readyz')).status)], [200, 200, 200])
  writeFileSync(files.users, good)
})

t.test('CLIENTS_FILE in a Secret mount: a ..data swap that disables the client refuses it within 2 s everywhere; another swap restores it', async (t) => {
  t.equal(await clientToken(a), 200)
  const current = readFileSync(files.clients, 'utf8')
  const raw = JSON.parse(current) as { clients: Array<Record<string, unknown>> }
  kubeletSwap(JSON.stringify({ clients: raw.clients.map(c => ({ ...c, disabled: true })) }))
  t.ok(parseClientsText(readFileSync(files.clients, 'utf8'), files.clients)[0]?.disabled, 'the mount now shows the client disabled')
  await within(t, 'replica A: invalid_client', async () => await clientToken(a) === 401)
  await within(t, 'both workers of P: invalid_client', async () => (await allOf(2, async () => await clientToken(p))).every(s => s === 401))
  kubeletSwap(current)
  await within(t, 'enabled again by the next swap, at A', async () => await clientToken(a) === 200)
  await within(t, 'and at both workers of P', async () => (await allOf(2, async () => await clientToken(p))).every(s => s === 200))
})

t.test('SIGHUP re-reads the files in a single process and in every worker of a pool; nothing stops', async (t) => {
  const seen = (proc: Proc): number => proc.stdout.split('\n').filter(l => l.includes('SIGHUP: config files re-read')).length
  const [beforeA, beforeP] = [seen(a.proc), seen(p.proc)]
  a.proc.child.kill('SIGHUP')
  p.proc.child.kill('SIGHUP')
  await within(t, 'A re-read its files', async () => seen(a.proc) === beforeA + 1)
  await within(t, 'both workers of P re-read theirs', async () => seen(p.proc) === beforeP + 2)
  t.equal((await request(a.port, 'GET', '/healthz')).status, 200, 'A still serves')
  t.same(await allOf(2, async () => (await request(p.port, 'GET', '/healthz')).status), [200, 200], 'P still serves')
})

t.test('key rotation with scripts/rotate-signing-key.sh and no restart: tokens signed before and after verify at the resource service throughout', async (t) => {
  const cli = cliCommand()
  const step = async (name: string): Promise<void> => {
    const out = await new Promise<{ code: number, stderr: string }>((resolve) => {
      execFile('bash', [join(ROOT, 'scripts/rotate-signing-key.sh'), '--file', files.keys, '--step', name], {
        cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOME: dir, LATCHKEY: cli }, timeout: 30_000
      }, (err, _stdout, stderr) => { resolve({ code: err === null ? 0 : 1, stderr }) })
    })
    t.equal(out.code, 0, `--step ${name}: ${out.stderr}`)
  }
  const algs = (): string[] => (JSON.parse(readFileSync(files.keys, 'utf8')) as { keys: Array<{ alg: string }> }).keys.map(k => k.alg)
  const [alg] = algs()
  const before = await login(a)
  const [oldKid] = await jwksKids(a)
  t.equal(kidOf(before.access), oldKid)

  await step('publish')
  const newKid = (JSON.parse(readFileSync(files.keys, 'utf8')) as { keys: Array<{ kid: string }> }).keys[1]?.kid as string
  t.same(algs(), [alg, alg], 'the new key keeps the file\'s algorithm')
  await within(t, 'publish: both replicas serve the new key', async () => (await jwksKids(a)).includes(newKid) && (await allOf(2, async () => (await jwksKids(p)).includes(newKid) ? 1 : 0)).every(x => x === 1))
  // The resource starts now: its first JWKS fetch stands for a cache refreshed during the publish wait.
  const resource = latchkey(t, ['resource'], { PORT: String(resourcePort), HOST: '127.0.0.1', ISSUER, JWKS_URL: `http://127.0.0.1:${a.port}/.well-known/jwks.json`, LOG_LEVEL: 'info' })
  await resource.waitFor(/Server listening/, 60_000)
  t.equal(await me(resourcePort, before.access), 200, 'after publish: the token signed before verifies at the resource')
  t.equal(await me(a.port, before.access), 200, 'and through the proxy')

  await step('promote')
  await within(t, 'promote: A signs with the new key', async () => kidOf((await login(a)).access) === newKid)
  await within(t, 'promote: both workers of P sign with it', async () => (await allOf(2, async () => kidOf((await login(p)).access) === newKid ? 1 : 0)).every(x => x === 1))
  const after = await login(p)
  t.equal(await me(resourcePort, after.access), 200, 'after promote: a token signed with the new key verifies at the resource')
  t.equal(await me(resourcePort, before.access), 200, 'and the one signed before still does')

  await step('retire')
  await within(t, 'retire: the old key leaves the JWKS', async () => (await jwksKids(a)).join() === newKid)
  t.equal(await me(resourcePort, after.access), 200, 'after retire: the new key\'s token verifies')
  t.equal(await me(p.port, after.access), 200, 'through the pool\'s proxy too')
})
