/**
 * USERS_FILE, CLIENTS_FILE and SIGNING_KEYS_FILE reloaded by a running gateway (one
 * process, real files, no restart): a valid change takes effect within 2 s, a malformed
 * file is refused and the old one keeps serving, a users change that takes access away
 * ends the user's sessions (refresh refused, access token refused at the proxy).
 *
 * The proxy's upstream is not running: a token the proxy accepts gets 502, a refused one 401.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { ManualClock } from '#shared/clock.js'
import { buildGatewayApp } from '#gateway/app.js'
import { loadGatewayConfig } from '#gateway/config.js'
import { addClient, rotateClientSecret, setClientDisabled } from '#gateway/identity/clients-file.js'
import { addUser, removeUser, setUserDisabled, setUserPassword, setUserScope } from '#gateway/identity/users-file.js'
import { generatePrivateJwk } from '#gateway/keys/signing-keys.js'
import { login, refresh } from '../helpers/gateway.js'
import { freePort } from '../../../../test/helpers/redis.js'
import { within as pollWithin } from '../../../../test/helpers/within.js'

/** The promise under test: a change is in force within this long. */
const RELOAD_DEADLINE_MS = 2000
const PASSWORD = 'reload passphrase'

interface Setup {
  app: FastifyInstance
  files: { users: string, clients: string, keys: string }
  clock: ManualClock
  logs: Array<Record<string, unknown>>
  secret: string
}

async function setup (t: Test): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'lk-reload-'))
  const files = { users: join(dir, 'users.json'), clients: join(dir, 'clients.json'), keys: join(dir, 'keys.json') }
  await addUser(files.users, { username: 'alice', password: PASSWORD, scope: 'notes:read notes:write' })
  await addUser(files.users, { username: 'bob', password: PASSWORD, scope: 'notes:read' })
  const { secret } = await addClient(files.clients, { id: 'svc', scope: 'internal:read', audiences: ['latchkey-api'] })
  writeFileSync(files.keys, JSON.stringify({ keys: [await generatePrivateJwk('ES256')] }), { mode: 0o600 })
  const config = loadGatewayConfig({
    USERS_FILE: files.users, CLIENTS_FILE: files.clients, SIGNING_KEYS_FILE: files.keys, LOG_LEVEL: 'info',
    RESOURCE_URL: `http://127.0.0.1:${await freePort()}`, LOGIN_MAX_ATTEMPTS_PER_USER: '1000', LOGIN_MAX_ATTEMPTS_PER_IP: '1000'
  })
  const logs: Array<Record<string, unknown>> = []
  const clock = new ManualClock(Date.now())
  const app = await buildGatewayApp(config, {
    deps: { clock },
    logStream: { write (line: string) { logs.push(JSON.parse(line) as Record<string, unknown>) } }
  })
  t.teardown(() => app.close())
  await app.ready()
  return { app, files, clock, logs, secret }
}

/** Poll `check` until it holds, within the reload promise. */
async function within (t: Test, what: string, check: () => Promise<boolean>): Promise<number> {
  return await pollWithin(t, what, check, RELOAD_DEADLINE_MS, 20)
}

async function proxied (app: FastifyInstance, token: unknown): Promise<number> {
  return (await app.inject({ method: 'GET', url: '/api/me', headers: { authorization: `Bearer ${String(token)}` } })).statusCode
}

async function clientToken (app: FastifyInstance, secret: string): Promise<number> {
  return (await app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { authorization: `Basic ${Buffer.from(`svc:${secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    payload: 'grant_type=client_credentials'
  })).statusCode
}

async function reloads (app: FastifyInstance, file: string, result: string): Promise<number> {
  const body = (await app.inject({ method: 'GET', url: '/metrics' })).body
  return Number(new RegExp(`^latchkey_config_reload_total\\{file="${file}",result="${result}"\\} (\\d+)$`, 'm').exec(body)?.[1] ?? 0)
}

t.test('users: an added user signs in; removed, disabled, re-passworded or scope-cut users lose every session; others keep theirs', async (t) => {
  const { app, files } = await setup(t)
  const alice = await login(app, 'alice', PASSWORD)
  const bob = await login(app, 'bob', PASSWORD)
  t.equal(alice.res.statusCode, 200)
  t.equal(await proxied(app, alice.body.access_token), 502, 'the proxy passes alice\'s token (to a closed upstream)')

  await addUser(files.users, { username: 'carol', password: PASSWORD, scope: '' })
  await within(t, 'a user added to the file signs in', async () => (await login(app, 'carol', PASSWORD)).res.statusCode === 200)

  await setUserScope(files.users, 'alice', 'notes:read')
  await within(t, 'a scope cut ends alice\'s session: her access token is refused at the proxy', async () => await proxied(app, alice.body.access_token) === 401)
  t.equal((await refresh(app, alice.refresh)).res.statusCode, 401, 'and her refresh token')
  const bobRefreshed = await refresh(app, bob.refresh)
  t.equal(bobRefreshed.res.statusCode, 200, 'bob, unchanged, keeps his session')
  t.equal((await login(app, 'alice', PASSWORD)).body.scope, 'notes:read', 'alice signs in again with the narrower scope')

  const widened = await login(app, 'alice', PASSWORD)
  await setUserScope(files.users, 'alice', 'notes:read notes:write')
  await within(t, 'a wider scope is in force', async () => (await login(app, 'alice', PASSWORD)).body.scope === 'notes:read notes:write')
  t.equal((await refresh(app, widened.refresh)).res.statusCode, 200, 'a wider scope ends no session')

  const cases: Array<[string, () => Promise<unknown>, string]> = [
    ['a new password', async () => await setUserPassword(files.users, 'alice', 'another passphrase'), 'another passphrase'],
    ['disabling', async () => await setUserDisabled(files.users, 'alice', true), 'another passphrase']
  ]
  for (const [what, change] of cases) {
    const session = await login(app, 'alice', what === 'disabling' ? 'another passphrase' : PASSWORD)
    t.equal(session.res.statusCode, 200)
    await change()
    await within(t, `${what} ends alice's session at the proxy`, async () => await proxied(app, session.body.access_token) === 401)
    t.equal((await refresh(app, session.refresh)).res.statusCode, 401, `${what}: refresh refused`)
  }
  t.equal((await login(app, 'alice', 'another passphrase')).res.statusCode, 401, 'a disabled user cannot sign in')
  await setUserDisabled(files.users, 'alice', false)
  await within(t, 'enabled again, she can', async () => (await login(app, 'alice', 'another passphrase')).res.statusCode === 200)

  await removeUser(files.users, 'bob')
  await within(t, 'removing bob ends his session at the proxy', async () => await proxied(app, bobRefreshed.body.access_token) === 401)
  t.equal((await refresh(app, bobRefreshed.refresh)).res.statusCode, 401, 'and his refresh')
  t.equal((await login(app, 'bob', PASSWORD)).res.statusCode, 401)
})

t.test('a malformed users file is refused: one error line, the metric, the old users serve, /readyz stays ready', async (t) => {
  const { app, files, logs } = await setup(t)
  const session = await login(app, 'alice', PASSWORD)
  writeFileSync(files.users, '{"users": [{"id": "usr_x", "username": "mallory", "password": "plain"}]}')
  await within(t, 'the refusal is counted', async () => await reloads(app, 'USERS_FILE', 'failure') === 1)
  const lines = logs.filter(l => l.event === 'config_reload_refused')
  t.equal(lines.length, 1, 'one error line')
  t.equal(lines[0]?.level, 50)
  t.match(lines[0]?.msg, /^USERS_FILE not reloaded, the previous one stays in force: USERS_FILE: .*users\[0\]/)
  t.notMatch(JSON.stringify(lines), /plain/, 'nothing from the file is echoed')
  t.equal((await login(app, 'bob', PASSWORD)).res.statusCode, 200, 'the old users still sign in')
  t.equal((await refresh(app, session.refresh)).res.statusCode, 200, 'and their sessions live')
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200, '/readyz stays ready')
  writeFileSync(files.users, 'not json')
  await within(t, 'a second bad file: counted again', async () => await reloads(app, 'USERS_FILE', 'failure') === 2)
  t.equal((await login(app, 'alice', PASSWORD)).res.statusCode, 200)
  t.equal(await reloads(app, 'USERS_FILE', 'success'), 0)
})

t.test('clients: a rotated secret overlaps the old one until its expiry; a disabled client is invalid_client at once', async (t) => {
  const { app, files, clock, secret } = await setup(t)
  t.equal(await clientToken(app, secret), 200)
  // The CLI stamps the expiry from the wall clock; the gateway's clock is moved past it below.
  const rotated = await rotateClientSecret(files.clients, 'svc', 3600_000, clock.now())
  await within(t, 'the new secret works', async () => await clientToken(app, rotated.secret) === 200)
  t.equal(await clientToken(app, secret), 200, 'the old one still does, inside the overlap')
  clock.advance(3600_000)
  t.equal(await clientToken(app, secret), 401, 'after the overlap the old secret is refused')
  t.equal(await clientToken(app, rotated.secret), 200)

  await setClientDisabled(files.clients, 'svc', true)
  await within(t, 'a disabled client is refused', async () => await clientToken(app, rotated.secret) === 401)
  const body = (await app.inject({
    method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: `grant_type=client_credentials&client_id=svc&client_secret=${rotated.secret}`
  })).json() as { error: string }
  t.equal(body.error, 'invalid_client')
  await setClientDisabled(files.clients, 'svc', false)
  await within(t, 'enabled again, it is accepted', async () => await clientToken(app, rotated.secret) === 200)
})

t.test('keys: a new first key is published and signs at once; tokens of the old key still pass; a bad key file is refused', async (t) => {
  const { app, files } = await setup(t)
  const kidOf = (jwt: unknown): string => (JSON.parse(Buffer.from(String(jwt).split('.')[0] as string, 'base64url').toString()) as { kid: string }).kid
  const jwks = async (): Promise<string[]> => ((await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json() as { keys: Array<{ kid: string }> }).keys.map(k => k.kid)
  const before = await login(app, 'alice', PASSWORD)
  const [oldKid] = await jwks()
  t.equal(kidOf(before.body.access_token), oldKid)

  const next = await generatePrivateJwk('ES256')
  const old = (JSON.parse((await import('node:fs')).readFileSync(files.keys, 'utf8')) as { keys: unknown[] }).keys
  writeFileSync(files.keys, JSON.stringify({ keys: [next, ...old] }))
  await within(t, 'the JWKS publishes the new key', async () => (await jwks()).join() === `${next.kid},${oldKid ?? ''}`)
  t.equal(kidOf((await login(app, 'bob', PASSWORD)).body.access_token), next.kid, 'new tokens are signed with the promoted key')
  t.equal(kidOf((await refresh(app, before.refresh)).body.access_token), next.kid, 'refreshed ones too')
  t.equal(await proxied(app, before.body.access_token), 502, 'a token of the old key still passes the proxy')

  writeFileSync(files.keys, JSON.stringify({ keys: [{ ...next, d: 'AAAA' }] }))
  await within(t, 'a key file whose key does not match is refused', async () => await reloads(app, 'SIGNING_KEYS_FILE', 'failure') === 1)
  t.same(await jwks(), [next.kid, oldKid], 'the JWKS is unchanged')
  t.equal(kidOf((await login(app, 'bob', PASSWORD)).body.access_token), next.kid, 'and the same key signs')
})
