/**
 * RFC 7662 introspection driven by oauth4webapi's introspectionRequest: live → active with
 * the §2.2 members; logout at replica A → inactive at replica B within 1 s (two gateways
 * sharing one real redis-server); expired, forged and foreign tokens → inactive; tokens
 * for another audience or another client's refresh token → inactive; no or bad client
 * credentials → 401 invalid_client; `Cache-Control: no-store`.
 */
import t from 'tap'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import { ManualClock } from '#shared/clock.js'
import { CLOCK_TOLERANCE_S as DEFAULT_CLOCK_TOLERANCE_S } from '#shared/access-token-verifier.js'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { listeningGateway, testClients, type ListeningGateway } from '../helpers/listening.js'
import { generateKeyFile, tempDir } from '../keys/helpers.js'

const redis = await redisForTest(t)
const clients = await testClients()
const insecure = { [oauth.allowInsecureRequests]: true }
const keysFile = join(tempDir(t), 'keys.json')
await generateKeyFile(keysFile, 'ES256')
const shared = { CLIENTS_FILE: clients.file, SIGNING_KEYS_FILE: keysFile, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix }

async function discover (base: string): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(base)
  return await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
}

/** Introspect `token` at `gw` as client `id` (HTTP Basic), through oauth4webapi. */
async function introspect (gw: ListeningGateway, token: string, id = 'svc-a', auth?: oauth.ClientAuth): Promise<oauth.IntrospectionResponse> {
  // A replica behind a shared ISSUER is reached at its own address.
  const as = gw.config.issuer === gw.base ? await discover(gw.base) : { issuer: gw.config.issuer, introspection_endpoint: `${gw.base}/oauth/introspect` }
  const client: oauth.Client = { client_id: id }
  const secret = clients.secrets[id === 'svc-b' ? 'svc_b' : id] as string
  const res = await oauth.introspectionRequest(as, client, auth ?? oauth.ClientSecretBasic(secret), token, insecure)
  t.equal(res.headers.get('cache-control'), 'no-store', 'introspection answers are not cached')
  return await oauth.processIntrospectionResponse(as, client, res)
}

async function login (gw: ListeningGateway): Promise<{ access: string, cookie: string }> {
  const res = await fetch(`${gw.base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: gw.password }) })
  const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0] as string
  return { access: (await res.json() as { access_token: string }).access_token, cookie }
}

async function tokenFor (gw: ListeningGateway, id: 'svc-a' | 'svc-b', audience: string): Promise<string> {
  const res = await fetch(`${gw.base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: id, client_secret: clients.secrets[id === 'svc-b' ? 'svc_b' : id] as string, audience })
  })
  return (await res.json() as { access_token: string }).access_token
}

t.test('live user token → active with the RFC 7662 members; after logout at A, inactive at B within 1 s', async (t) => {
  const a = await listeningGateway(t, shared)
  // Replicas share one ISSUER (each test gateway would otherwise take its own address).
  const b = await listeningGateway(t, { ...shared, ISSUER: a.base })
  const { access, cookie } = await login(a)
  const claims = JSON.parse(Buffer.from(access.split('.')[1] as string, 'base64url').toString()) as Record<string, unknown>
  const live = await introspect(b, access)
  t.same(live, {
    active: true,
    scope: 'notes:read notes:write',
    client_id: 'latchkey-browser',
    sub: claims.sub,
    aud: 'latchkey-api',
    iss: a.base,
    exp: claims.exp,
    iat: claims.iat,
    jti: claims.jti,
    sid: claims.sid,
    token_type: 'Bearer'
  })
  t.equal((await introspect(a, access)).active, true, 'active at A too')

  const out = await fetch(`${a.base}/auth/logout`, { method: 'POST', headers: { cookie } })
  t.equal(out.status, 204)
  const loggedOutAt = Date.now()
  let inactiveAfterMs: number | undefined
  while (Date.now() - loggedOutAt < 2000) {
    if (!(await introspect(b, access)).active) {
      inactiveAfterMs = Date.now() - loggedOutAt
      break
    }
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  t.ok(inactiveAfterMs !== undefined && inactiveAfterMs <= 1000, `inactive at B ${inactiveAfterMs ?? 'never'} ms after the logout at A`)
  t.same(await introspect(a, access), { active: false }, 'nothing but active: false')
})

t.test('expired, forged and foreign tokens are inactive', async (t) => {
  const clock = new ManualClock(Date.now())
  const gw = await listeningGateway(t, { ...shared, ACCESS_TOKEN_TTL: '60' }, { clock })
  const token = await tokenFor(gw, 'svc-a', 'latchkey-api')
  t.equal((await introspect(gw, token)).active, true)
  clock.advance((60 + DEFAULT_CLOCK_TOLERANCE_S + 1) * 1000)
  t.same(await introspect(gw, token), { active: false }, 'expired (past exp and clock tolerance)')

  const fresh = await tokenFor(gw, 'svc-a', 'latchkey-api')
  const [h, p, s] = fresh.split('.') as [string, string, string]
  const forged = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()) as object, scope: 'latchkey:admin' })).toString('base64url')}.${s}`
  t.same(await introspect(gw, forged), { active: false }, 'bad signature')
  t.same(await introspect(gw, 'not-a-token'), { active: false }, 'garbage')

  // Another gateway with its own ephemeral key and another issuer: a foreign token.
  const foreign = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  t.same(await introspect(gw, await tokenFor(foreign, 'svc-a', 'latchkey-api')), { active: false }, 'foreign issuer and key')
})

t.test('a client introspects only tokens for its own audiences, and only its own refresh tokens', async (t) => {
  const gw = await listeningGateway(t, shared)
  const billing = await tokenFor(gw, 'svc-a', 'billing')
  t.equal((await introspect(gw, billing, 'svc-a')).active, true, 'svc-a may ask for billing')
  t.same(await introspect(gw, billing, 'svc-b'), { active: false }, 'svc-b (latchkey-api only) learns nothing of a billing token')
  t.equal((await introspect(gw, await tokenFor(gw, 'svc-a', 'latchkey-api'), 'svc-b')).active, true, 'svc-b may ask for latchkey-api tokens')

  const pw = await (await fetch(`${gw.base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: 'alice', password: gw.password, client_id: 'web', client_secret: clients.secrets.web as string })
  })).json() as { refresh_token: string, access_token: string }
  const sid = JSON.parse(Buffer.from(pw.access_token.split('.')[1] as string, 'base64url').toString()).sid as string
  const info = await introspect(gw, pw.refresh_token, 'web')
  t.match(info, { active: true, client_id: 'web', scope: 'notes:read notes:write', sid, iss: gw.base })
  t.type(info.exp, 'number')
  t.same(await introspect(gw, pw.refresh_token, 'svc-a'), { active: false }, 'another client\'s refresh token')

  const as = await discover(gw.base)
  const web: oauth.Client = { client_id: 'web' }
  const rotated = await oauth.processRefreshTokenResponse(as, web, await oauth.refreshTokenGrantRequest(as, web, oauth.ClientSecretBasic(clients.secrets.web as string), pw.refresh_token, insecure))
  t.same(await introspect(gw, pw.refresh_token, 'web'), { active: false }, 'a rotated-out refresh token')
  t.equal((await introspect(gw, rotated.refresh_token as string, 'web')).active, true, 'its successor')
  t.equal((await introspect(gw, rotated.refresh_token as string, 'web')).active, true, 'introspection did not rotate it')
  const revoke = await oauth.revocationRequest(as, web, oauth.ClientSecretBasic(clients.secrets.web as string), rotated.refresh_token as string, insecure)
  t.equal(revoke.status, 200)
  t.same(await introspect(gw, rotated.refresh_token as string, 'web'), { active: false }, 'revoked')
})

t.test('no or wrong client credentials → 401 invalid_client', async (t) => {
  const gw = await listeningGateway(t, shared)
  const token = await tokenFor(gw, 'svc-a', 'latchkey-api')
  const as = await discover(gw.base)
  const wrong = await oauth.introspectionRequest(as, { client_id: 'svc-a' }, oauth.ClientSecretPost('not-the-secret'), token, insecure)
  t.equal(wrong.status, 401)
  const err = await oauth.processIntrospectionResponse(as, { client_id: 'svc-a' }, wrong).catch((e: unknown) => e)
  t.ok(err instanceof oauth.ResponseBodyError, 'an OAuth error body oauth4webapi understands')
  t.equal((err as oauth.ResponseBodyError).error, 'invalid_client')
  const anonymous = await oauth.introspectionRequest(as, { client_id: 'svc-a' }, oauth.None(), token, insecure)
  t.equal(anonymous.status, 401)
  t.equal((await anonymous.json() as { error: string }).error, 'invalid_client')
  t.equal(anonymous.headers.get('cache-control'), 'no-store')
})
