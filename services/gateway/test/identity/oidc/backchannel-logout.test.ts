/**
 * OIDC Back-Channel Logout 1.0 from a real IdP (oidc-provider issues and delivers the logout
 * token itself) to one of two gateway replicas sharing a real redis-server: the family dies
 * and its access token is refused at the proxy of the *other* replica within 1 s. Then the
 * logout-token checks (§2.6): replay (jti), nonce, missing event, wrong audience, foreign key.
 */
import t from 'tap'
import { createServer } from 'node:http'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { generateKeyPair, SignJWT } from 'jose'
import { freePort, redisForTest } from '../../../../../test/helpers/redis.js'
import { buildTestGateway } from '../../helpers/gateway.js'
import { BrowserJar, startTestIdp } from './test-idp.js'

const CLIENT = { clientId: 'latchkey', clientSecret: 'a-test-client-secret-of-decent-length' }
const EVENT = { 'http://schemas.openid.net/event/backchannel-logout': {} }
/** The promise under test (docs/contract.md: revoked at every replica within 1 s). */
const REVOCATION_PROMISE_MS = 1000

const redis = await redisForTest(t)
const upstream = createServer((_req, res) => { res.end('{}') })
await new Promise<void>(resolve => upstream.listen(0, '127.0.0.1', resolve))
t.teardown(() => new Promise(resolve => upstream.close(resolve)))
const upstreamPort = (upstream.address() as { port: number }).port

const [portA, portB] = [await freePort(), await freePort()]
const gwA = `http://127.0.0.1:${portA}`
const gwB = `http://127.0.0.1:${portB}`
const callback = `${gwA}/auth/oidc/test/callback`
const logoutUri = `${gwA}/auth/oidc/test/backchannel-logout`
const idp = await startTestIdp(t, [{ ...CLIENT, redirectUris: [callback], backchannelLogoutUri: logoutUri }], {
  alice: { email: 'alice@example.com', name: 'Alice', groups: ['eng'] }
})

const dir = mkdtempSync(join(tmpdir(), 'lk-oidc-bcl-'))
const routesFile = join(dir, 'routes.json')
writeFileSync(routesFile, JSON.stringify([{ prefix: '/api/', upstream: `http://127.0.0.1:${upstreamPort}`, audience: 'latchkey-api', scopes: [] }]))
const env = {
  ISSUER: gwA,
  COOKIE_SECURE: 'false',
  ROUTES_FILE: routesFile,
  REDIS_URL: redis.url,
  REDIS_KEY_PREFIX: redis.prefix,
  PROVIDERS_JSON: JSON.stringify({
    providers: [{
      id: 'test', issuer: idp.issuer, client_id: CLIENT.clientId, client_secret: CLIENT.clientSecret,
      scopes: ['openid', 'email', 'groups'], allow: [{ group: 'eng', scopes: ['notes:read'] }]
    }]
  })
}
const a = await buildTestGateway(t, env)
// Two replicas of one deployment: same issuer, same signing keys, same Redis.
const b = await buildTestGateway(t, env, { keys: a.app.latchkey.deps.keys })
await a.app.listen({ port: portA, host: '127.0.0.1' })
await b.app.listen({ port: portB, host: '127.0.0.1' })

async function signIn (): Promise<{ jar: BrowserJar, accessToken: string, idpSid: string, sub: string }> {
  const jar = new BrowserJar()
  const res = await jar.fetch(await jar.signInAtIdp(`${gwA}/auth/oidc/test/start`, callback, 'alice'))
  if (res.status !== 303) throw new Error(`callback answered ${res.status}: ${await res.text()}`)
  const refreshed = await jar.fetch(`${gwA}/auth/refresh`, { method: 'POST' })
  const { access_token: accessToken } = await refreshed.json() as { access_token: string }
  const idToken = idp.idTokens.at(-1) as { sid: string, sub: string }
  return { jar, accessToken, idpSid: idToken.sid, sub: idToken.sub }
}

async function proxiedAtB (token: string): Promise<number> {
  return (await fetch(`${gwB}/api/x`, { headers: { authorization: `Bearer ${token}` } })).status
}

t.test('the IdP signs the user out: the family dies, and replica B refuses its access token within 1 s', async (t) => {
  const one = await signIn()
  const other = await signIn()
  t.ok(one.idpSid, 'the IdP put a sid in its ID token')
  t.not(one.idpSid, other.idpSid, 'two browsers, two IdP sessions')
  t.equal(await proxiedAtB(one.accessToken), 200, 'B accepts the token before the logout')

  await idp.backchannelLogout(one.sub, one.idpSid)
  const deadline = Date.now() + REVOCATION_PROMISE_MS
  let status = await proxiedAtB(one.accessToken)
  while (status === 200 && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 20))
    status = await proxiedAtB(one.accessToken)
  }
  t.equal(status, 401, 'refused at the other replica within 1 s')
  const refreshed = await one.jar.fetch(`${gwA}/auth/refresh`, { method: 'POST' })
  t.equal(refreshed.status, 401, 'the family is dead')
  t.equal(await proxiedAtB(other.accessToken), 200, 'the other IdP session is untouched')
  t.equal((await other.jar.fetch(`${gwA}/auth/refresh`, { method: 'POST' })).status, 200)
})

t.test('logout token by sub alone revokes every federated family of that subject', async (t) => {
  const one = await signIn()
  const two = await signIn()
  const token = await idp.sign({ iss: idp.issuer, aud: CLIENT.clientId, iat: Math.floor(Date.now() / 1000), jti: randomUUID(), events: EVENT, sub: one.sub }, 'logout+jwt')
  const res = await fetch(`${gwB}/auth/oidc/test/backchannel-logout`, { method: 'POST', body: new URLSearchParams({ logout_token: token }) })
  t.equal(res.status, 200)
  t.equal(res.headers.get('cache-control'), 'no-store')
  t.equal((await one.jar.fetch(`${gwA}/auth/refresh`, { method: 'POST' })).status, 401)
  t.equal((await two.jar.fetch(`${gwA}/auth/refresh`, { method: 'POST' })).status, 401)
})

t.test('logout tokens that must be refused (§2.6)', async (t) => {
  const victim = await signIn()
  const base = (): Record<string, unknown> => ({ iss: idp.issuer, aud: CLIENT.clientId, iat: Math.floor(Date.now() / 1000), jti: randomUUID(), events: EVENT, sid: victim.idpSid })
  const post = async (token: string): Promise<Response> =>
    await fetch(`${gwA}/auth/oidc/test/backchannel-logout`, { method: 'POST', body: new URLSearchParams({ logout_token: token }) })
  const { privateKey: foreign } = await generateKeyPair('RS256')
  const cases: Array<[string, Promise<string>]> = [
    ['with a nonce (an ID token)', idp.sign({ ...base(), nonce: 'n' })],
    ['without the logout event', idp.sign({ ...base(), events: {} })],
    ['without sub or sid', idp.sign({ ...base(), sid: undefined })],
    ['for another audience', idp.sign({ ...base(), aud: 'someone-else' })],
    ['from another issuer', idp.sign({ ...base(), iss: 'http://127.0.0.1:1' })],
    ['too old', idp.sign({ ...base(), iat: Math.floor(Date.now() / 1000) - 3600 })],
    ['signed by another key', new SignJWT(base()).setProtectedHeader({ alg: 'RS256', kid: 'idp-1' }).sign(foreign)]
  ]
  for (const [what, token] of cases) {
    const res = await post(await token)
    t.equal(res.status, 400, what)
    t.equal((await res.json() as { error: string }).error, 'invalid_request', what)
  }
  t.equal(await proxiedAtB(victim.accessToken), 200, 'none of them revoked anything')

  const good = await idp.sign(base(), 'logout+jwt')
  t.equal((await post(good)).status, 200)
  t.equal((await post(good)).status, 400, 'a replayed jti is refused')
})
