/**
 * Opt-in revocation checks against a running gateway: the resource service called directly
 * (not through the proxy) with a user's access token. Without introspection a logged-out
 * session's token is still accepted until `exp` (what the README says plainly); with
 * INTROSPECTION_URL it is refused once the short cache runs out; an unreachable gateway
 * refuses with 503 instead of admitting unchecked.
 */
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { ManualClock } from '#shared/clock.js'
import { listeningGateway, testClients, type ListeningGateway } from '../../gateway/test/helpers/listening.js'
import { freePort } from '../../../test/helpers/redis.js'
import { buildResourceApp } from '../src/app.js'
import { loadResourceConfig } from '../src/config.js'
import { call } from './helpers/resource.js'

const clients = await testClients()
const CACHE_MS = 500

async function resource (t: Test, gw: ListeningGateway, clock: ManualClock, introspection: Record<string, string>): Promise<FastifyInstance> {
  const config = loadResourceConfig({ JWKS_URL: `${gw.base}/.well-known/jwks.json`, ISSUER: gw.base, LOG_LEVEL: 'silent', ...introspection })
  const app = await buildResourceApp(config, { clock })
  t.teardown(() => app.close())
  return app
}

async function loginAt (gw: ListeningGateway): Promise<{ access: string, cookie: string }> {
  const res = await fetch(`${gw.base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: gw.password }) })
  return { access: (await res.json() as { access_token: string }).access_token, cookie: (res.headers.get('set-cookie') ?? '').split(';')[0] as string }
}

function introspectionEnv (url: string): Record<string, string> {
  return { INTROSPECTION_URL: url, INTROSPECTION_CLIENT_ID: 'svc-b', INTROSPECTION_CLIENT_SECRET: clients.secrets.svc_b as string, INTROSPECTION_CACHE_MS: String(CACHE_MS) }
}

t.test('a logged-out session\'s token: accepted until exp without introspection, refused with it', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  const clock = new ManualClock(Date.now())
  const plain = await resource(t, gw, clock, {})
  const checked = await resource(t, gw, clock, introspectionEnv(`${gw.base}/oauth/introspect`))
  const { access, cookie } = await loginAt(gw)
  t.equal((await call(plain, 'GET', '/api/me', access)).statusCode, 200)
  t.equal((await call(checked, 'GET', '/api/me', access)).statusCode, 200, 'live: admitted with introspection')

  t.equal((await fetch(`${gw.base}/auth/logout`, { method: 'POST', headers: { cookie } })).status, 204)
  t.equal((await call(checked, 'GET', '/api/me', access)).statusCode, 200, 'within the cache period the earlier answer stands')
  clock.advance(CACHE_MS + 1)
  const refused = await call(checked, 'GET', '/api/me', access)
  t.equal(refused.statusCode, 401, 'after the cache period: refused')
  t.equal((refused.json() as { error: string }).error, 'invalid_token')
  t.equal(refused.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
  t.equal((await call(plain, 'GET', '/api/me', access)).statusCode, 200, 'JWKS only: still accepted until exp')

  const fresh = await loginAt(gw)
  t.equal((await call(checked, 'GET', '/api/notes', fresh.access)).statusCode, 200, 'another live session is unaffected')
})

t.test('introspection fails closed: no answer from the gateway → 503, never admitted unchecked', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  const clock = new ManualClock(Date.now())
  const { access } = await loginAt(gw)
  const nowhere = await resource(t, gw, clock, introspectionEnv(`http://127.0.0.1:${await freePort()}/oauth/introspect`))
  const res = await call(nowhere, 'GET', '/api/me', access)
  t.equal(res.statusCode, 503)
  t.equal((res.json() as { error: string }).error, 'temporarily_unavailable')
  const wrongSecret = await resource(t, gw, clock, { ...introspectionEnv(`${gw.base}/oauth/introspect`), INTROSPECTION_CLIENT_SECRET: 'wrong' })
  t.equal((await call(wrongSecret, 'GET', '/api/me', access)).statusCode, 503, 'refused client credentials: 503 too')
  t.equal((await call(wrongSecret, 'GET', '/api/me')).statusCode, 401, 'no token: still 401, nothing asked')
})
