/**
 * Brute-force limits on password checks, per username and per client IP, in Redis and in
 * process: the 429 arrives with Retry-After, the counter expires, and one attacker's
 * failures lock out neither a different user nor a different address.
 */
import t from 'tap'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { buildTestGateway, TEST_PASSWORD } from '../helpers/gateway.js'
import { testClients } from '../helpers/listening.js'

const redis = await redisForTest(t)
const clients = await testClients()
const LIMITS = { LOGIN_MAX_ATTEMPTS_PER_USER: '3', LOGIN_MAX_ATTEMPTS_PER_IP: '6', LOGIN_ATTEMPT_WINDOW: '1' }

for (const [name, env] of [['memory', {}], ['redis', { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix }]] as const) {
  t.test(`${name}: per-username limit, Retry-After, expiry, other users unaffected`, async (t) => {
    const gw = await buildTestGateway(t, { ...env, ...LIMITS })
    const attempt = (username: string, password: string, ip: string) =>
      gw.app.inject({ method: 'POST', url: '/auth/login', payload: { username, password }, remoteAddress: ip })
    // Three wrong passwords for alice from three addresses: the username counter fills up.
    for (const ip of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) t.equal((await attempt('alice', 'guess', ip)).statusCode, 401)
    const limited = await attempt('alice', TEST_PASSWORD, '10.0.0.4')
    t.equal(limited.statusCode, 429, 'even the right password is refused while limited')
    t.same(limited.json(), { error: 'too_many_requests', error_description: 'Too many attempts; retry later.' })
    t.match(limited.headers['retry-after'], /^\d+$/)
    t.ok(Number(limited.headers['retry-after']) >= 1)
    t.equal((await attempt('bob', TEST_PASSWORD, '10.0.0.5')).statusCode, 200, 'bob is not locked out by attacks on alice')
    // The window is 1 s: the counter expires on its own.
    await new Promise(resolve => setTimeout(resolve, 1100))
    t.equal((await attempt('alice', TEST_PASSWORD, '10.0.0.6')).statusCode, 200, 'alice can sign in after the window')
    const m = await gw.app.inject({ method: 'GET', url: '/metrics' })
    t.match(m.body, /latchkey_rate_limited_total\{limit="username"\} [1-9]/)
  })

  t.test(`${name}: per-IP limit across usernames; other addresses unaffected`, async (t) => {
    const gw = await buildTestGateway(t, { ...env, ...LIMITS })
    const attempt = (username: string, ip: string) =>
      gw.app.inject({ method: 'POST', url: '/auth/login', payload: { username, password: 'guess' }, remoteAddress: ip })
    for (let i = 0; i < 6; i++) t.equal((await attempt(`user${i}`, '10.9.9.9')).statusCode, 401)
    const limited = await attempt('user7', '10.9.9.9')
    t.equal(limited.statusCode, 429, 'spraying usernames from one address hits the IP limit')
    t.ok(limited.headers['retry-after'])
    t.equal((await gw.app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: TEST_PASSWORD }, remoteAddress: '10.1.1.1' })).statusCode, 200)
  })

  t.test(`${name}: the password grant shares the limits`, async (t) => {
    const gw = await buildTestGateway(t, { ...env, ...LIMITS, CLIENTS_FILE: clients.file })
    const auth = `Basic ${Buffer.from(`web:${clients.secrets.web as string}`).toString('base64')}`
    const grant = () => gw.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth }, payload: 'grant_type=password&username=zed&password=guess', remoteAddress: '10.2.2.2' })
    for (let i = 0; i < 3; i++) t.equal((await grant()).statusCode, 400)
    const limited = await grant()
    t.equal(limited.statusCode, 429)
    t.ok(limited.headers['retry-after'])
    t.equal(limited.headers['cache-control'], 'no-store')
  })
}

t.test('Redis down: the limit cannot be checked, so the attempt is refused with 503 (no unthrottled oracle)', async (t) => {
  const own = await redisForTest(t, { own: true })
  const gw = await buildTestGateway(t, { REDIS_URL: own.url, REDIS_KEY_PREFIX: own.prefix })
  await own.kill()
  const res = await gw.app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'guess' } })
  t.equal(res.statusCode, 503)
  t.equal((res.json() as { error: string }).error, 'temporarily_unavailable')
})
