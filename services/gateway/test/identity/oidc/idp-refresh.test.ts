/**
 * Families bound to the IdP's refresh token (a provider's `idp_refresh`), against a real
 * OpenID Provider (oidc-provider, started here): sign-in asks for offline_access and keeps
 * the IdP's refresh token; within the check interval a refresh does not call the IdP; past
 * it, the IdP is asked and its rotated token kept; once the IdP disables the account the
 * next refresh is refused, the family revoked and its access token dead at the proxy; an
 * unreachable IdP answers 503 and the family survives; a provider without `idp_refresh`
 * is not affected. Time is the gateway's ManualClock: no test waits for an interval. The
 * families live in Redis (the store's scripts carry the binding and take the rotation back).
 */
import t from 'tap'
import { createServer } from 'node:http'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, redisForTest } from '../../../../../test/helpers/redis.js'
import { buildTestGateway, manualClock } from '../../helpers/gateway.js'
import { BrowserJar, startTestIdp } from './test-idp.js'

const BOUND = { clientId: 'latchkey-bound', clientSecret: 'a-test-client-secret-of-decent-length-1', refreshTokens: true }
const PLAIN = { clientId: 'latchkey-plain', clientSecret: 'a-test-client-secret-of-decent-length-2' }
const INTERVAL_S = 60

const upstream = createServer((_req, res) => { res.end('{}') })
await new Promise<void>(resolve => upstream.listen(0, '127.0.0.1', resolve))
t.teardown(() => new Promise(resolve => upstream.close(resolve)))

const port = await freePort()
const gw = `http://127.0.0.1:${port}`
const idp = await startTestIdp(t, [
  { ...BOUND, redirectUris: [`${gw}/auth/oidc/bound/callback`] },
  { ...PLAIN, redirectUris: [`${gw}/auth/oidc/plain/callback`] }
], {
  alice: { email: 'alice@example.com', name: 'Alice', groups: ['eng'] },
  bob: { email: 'bob@example.com', name: 'Bob', groups: ['eng'] },
  carol: { email: 'carol@example.com', name: 'Carol', groups: ['eng'] },
  dave: { email: 'dave@example.com', name: 'Dave', groups: ['eng'] }
})

const dir = mkdtempSync(join(tmpdir(), 'lk-idp-refresh-'))
const routesFile = join(dir, 'routes.json')
writeFileSync(routesFile, JSON.stringify([{ prefix: '/api/', upstream: `http://127.0.0.1:${(upstream.address() as { port: number }).port}`, audience: 'latchkey-api', scopes: ['notes:read'] }]))
const entry = (id: string, client: { clientId: string, clientSecret: string }): Record<string, unknown> => ({
  id,
  issuer: idp.issuer,
  client_id: client.clientId,
  client_secret: client.clientSecret,
  scopes: ['openid', 'email', 'profile', 'groups'],
  allow: [{ group: 'eng', scopes: ['notes:read'] }]
})
const clock = manualClock()
// The Redis store (the native-app test runs the memory one): rotate, bind and undo as scripts.
const redis = await redisForTest(t)
const gateway = await buildTestGateway(t, {
  ISSUER: gw,
  REDIS_URL: redis.url,
  REDIS_KEY_PREFIX: redis.prefix,
  COOKIE_SECURE: 'false',
  ROUTES_FILE: routesFile,
  IDP_TOKEN_KEY: randomBytes(32).toString('base64url'),
  PROVIDERS_JSON: JSON.stringify({
    providers: [
      { ...entry('bound', BOUND), idp_refresh: { check_interval_seconds: INTERVAL_S } },
      entry('plain', PLAIN)
    ]
  })
}, { clock })
await gateway.app.listen({ port, host: '127.0.0.1' })

async function signIn (provider: string, login: string): Promise<BrowserJar> {
  const jar = new BrowserJar()
  const res = await jar.fetch(await jar.signInAtIdp(`${gw}/auth/oidc/${provider}/start`, `${gw}/auth/oidc/${provider}/callback`, login))
  if (res.status !== 303) throw new Error(`sign-in answered ${res.status}: ${await res.text()}`)
  return jar
}

async function refresh (jar: BrowserJar): Promise<{ status: number, token?: string, error?: string }> {
  const res = await jar.fetch(`${gw}/auth/refresh`, { method: 'POST' })
  const body = await res.json() as { access_token?: string, error?: string }
  return { status: res.status, ...(body.access_token === undefined ? {} : { token: body.access_token }), ...(body.error === undefined ? {} : { error: body.error }) }
}

const refreshGrants = (): number => idp.tokenRequests.filter(g => g === 'refresh_token').length

t.test('a bound provider asks for offline_access with prompt=consent', async (t) => {
  const url = new URL((await new BrowserJar().fetch(`${gw}/auth/oidc/bound/start`)).headers.get('location') as string)
  t.match(url.searchParams.get('scope'), /\boffline_access\b/)
  t.equal(url.searchParams.get('prompt'), 'consent')
  const plain = new URL((await new BrowserJar().fetch(`${gw}/auth/oidc/plain/start`)).headers.get('location') as string)
  t.notMatch(plain.searchParams.get('scope'), /offline_access/, 'an unbound provider does not')
})

t.test('within the interval no IdP call; past it the IdP is asked and its rotated token kept; a disabled account is refused', async (t) => {
  const jar = await signIn('bound', 'alice')
  const before = refreshGrants()
  const first = await refresh(jar)
  t.equal(first.status, 200, 'a refresh right after sign-in')
  t.equal(refreshGrants(), before, 'inside the interval: the IdP is not asked')

  clock.advance((INTERVAL_S + 1) * 1000)
  t.equal((await refresh(jar)).status, 200, 'past the interval: the IdP vouches')
  t.equal(refreshGrants(), before + 1, 'one refresh_token grant at the IdP')
  clock.advance((INTERVAL_S + 1) * 1000)
  t.equal((await refresh(jar)).status, 200, 'again: the IdP accepts the rotated token latchkey kept (it rotates on every use)')
  t.equal(refreshGrants(), before + 2)

  idp.disable('alice')
  const live = await refresh(jar)
  t.equal(live.status, 200, 'disabled at the IdP, but inside the interval: still refreshes')
  const proxied = await fetch(`${gw}/api/notes`, { headers: { authorization: `Bearer ${live.token as string}` } })
  t.equal(proxied.status, 200, 'its access token passes the proxy')

  clock.advance((INTERVAL_S + 1) * 1000)
  const refused = await refresh(jar)
  t.equal(refused.status, 401, 'past the interval: refused like any dead family')
  t.equal(refused.error, 'invalid_grant')
  const dead = await fetch(`${gw}/api/notes`, { headers: { authorization: `Bearer ${live.token as string}` } })
  t.equal(dead.status, 401, 'and the access token issued before is refused at the proxy (edge revocation)')
  t.ok(gateway.logs.some(l => l.event === 'session_revoked' && l.reason === 'idp_refused'), 'audited as idp_refused')

  const logs = gateway.rawLogs.join('\n')
  t.ok(idp.refreshTokens.length >= 3)
  for (const token of idp.refreshTokens) t.notOk(logs.includes(token), 'no IdP refresh token reaches a log line')
})

t.test('an unreachable IdP: 503, the family is kept, and the retry with the same token succeeds', async (t) => {
  const jar = await signIn('bound', 'bob')
  const held = jar.cookie(gw, 'lk_refresh')
  clock.advance((INTERVAL_S + 1) * 1000)
  idp.unreachable = true
  const down = await refresh(jar)
  idp.unreachable = false
  t.equal(down.status, 503)
  t.equal(down.error, 'temporarily_unavailable')
  t.equal(jar.cookie(gw, 'lk_refresh'), held, 'no new cookie')
  // Past the reuse grace: were the rotation not taken back, this would be reuse.
  clock.advance(60_000)
  const retry = await refresh(jar)
  t.equal(retry.status, 200, 'the same token refreshes once the IdP is back')
})

t.test('an unbound provider is not affected: a disabled IdP account keeps refreshing until its family ends', async (t) => {
  const jar = await signIn('plain', 'carol')
  idp.disable('carol')
  const before = refreshGrants()
  clock.advance((INTERVAL_S + 1) * 1000)
  t.equal((await refresh(jar)).status, 200)
  t.equal(refreshGrants(), before, 'the IdP is never asked')
})
