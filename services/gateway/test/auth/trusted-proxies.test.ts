/**
 * TRUSTED_PROXIES: X-Forwarded-For is believed only from the listed peers, and then the real
 * client address is what login limits, the session list, logs and the upstream see.
 */
import t from 'tap'
import { loadGatewayConfig } from '#gateway/config.js'
import { buildTestGateway, TEST_PASSWORD } from '../helpers/gateway.js'
import { echoUpstream } from '../proxy/harness.js'

const LIMITS = { LOGIN_MAX_ATTEMPTS_PER_USER: '100', LOGIN_MAX_ATTEMPTS_PER_IP: '3', LOGIN_ATTEMPT_WINDOW: '60' }
const INGRESS = '10.1.2.3'

t.test('config: addresses, CIDRs and proxy-addr range names; anything else stops start-up', async (t) => {
  t.same(loadGatewayConfig({}).trustedProxies, [], 'none by default')
  t.same(loadGatewayConfig({ TRUSTED_PROXIES: '10.0.0.0/8, ::1, 192.0.2.7, fd00::/8, loopback' }).trustedProxies, ['10.0.0.0/8', '::1', '192.0.2.7', 'fd00::/8', 'loopback'])
  for (const bad of ['10.0.0.0/33', 'example.com', '10.0.0/8', '::1/129', '*']) {
    t.throws(() => loadGatewayConfig({ TRUSTED_PROXIES: bad }), { name: 'ConfigError' }, bad)
  }
})

t.test('no trusted proxies: a spoofed X-Forwarded-For is ignored everywhere', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await buildTestGateway(t, { ...LIMITS, RESOURCE_URL: upstream.url })
  const attempt = (spoofed: string) => gw.app.inject({
    method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'guess' }, remoteAddress: '192.0.2.10', headers: { 'x-forwarded-for': spoofed }
  })
  for (const spoofed of ['1.1.1.1', '2.2.2.2', '3.3.3.3']) t.equal((await attempt(spoofed)).statusCode, 401)
  t.equal((await attempt('4.4.4.4')).statusCode, 429, 'one address, whatever it claims: the per-IP limit bites')

  const ok = await gw.app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: TEST_PASSWORD }, remoteAddress: '192.0.2.11', headers: { 'x-forwarded-for': '6.6.6.6' } })
  t.equal(ok.statusCode, 200)
  const bearer = { authorization: `Bearer ${ok.json<{ access_token: string }>().access_token}` }
  const sessions = await gw.app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer, remoteAddress: '192.0.2.11' })
  t.same(sessions.json<Array<{ ip: string }>>().map(s => s.ip), ['192.0.2.11'], 'the session keeps the peer address')
  const proxied = await gw.app.inject({ method: 'GET', url: '/api/me', headers: { ...bearer, 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example', host: 'gw.example' }, remoteAddress: '192.0.2.11' })
  t.equal(proxied.statusCode, 200)
  t.match(upstream.received.at(-1)?.headers, { 'x-forwarded-for': '192.0.2.11', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'gw.example' })
  t.ok(gw.logs.some(l => l.msg === 'incoming request' && (l.req as { remoteAddress?: string }).remoteAddress === '192.0.2.10'), 'logs show the peer')
})

t.test('behind a trusted ingress: each client is itself', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await buildTestGateway(t, { ...LIMITS, RESOURCE_URL: upstream.url, TRUSTED_PROXIES: '10.0.0.0/8' })
  const attempt = (client: string, password: string) => gw.app.inject({
    method: 'POST', url: '/auth/login', payload: { username: 'alice', password }, remoteAddress: INGRESS, headers: { 'x-forwarded-for': client }
  })
  // A client may prepend anything; the ingress appends the address it saw: the rightmost untrusted hop wins.
  for (let i = 0; i < 3; i++) t.equal((await attempt(`9.9.9.${i}, 203.0.113.1`, 'guess')).statusCode, 401)
  t.equal((await attempt('203.0.113.1', 'guess')).statusCode, 429, 'the attacker behind the ingress is limited')
  const other = await attempt('198.51.100.2', TEST_PASSWORD)
  t.equal(other.statusCode, 200, 'another client behind the same ingress is not')

  const bearer = { authorization: `Bearer ${other.json<{ access_token: string }>().access_token}` }
  const sessions = await gw.app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer, remoteAddress: INGRESS })
  t.same(sessions.json<Array<{ ip: string }>>().map(s => s.ip), ['198.51.100.2'], 'the session keeps the client address')
  const proxied = await gw.app.inject({ method: 'GET', url: '/api/me', headers: { ...bearer, 'x-forwarded-for': '198.51.100.2', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example', host: 'gateway.internal' }, remoteAddress: INGRESS })
  t.equal(proxied.statusCode, 200)
  t.match(upstream.received.at(-1)?.headers, { 'x-forwarded-for': '198.51.100.2', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example' })
  t.ok(gw.logs.some(l => l.msg === 'incoming request' && (l.req as { remoteAddress?: string }).remoteAddress === '198.51.100.2'), 'logs show the client')
})
