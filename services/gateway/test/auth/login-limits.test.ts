/**
 * Brute-force limits on password checks, per username and per client IP, in Redis and in
 * process: the 429 arrives with Retry-After, the counter expires, and one attacker's
 * failures lock out neither a different user nor a different address. They count failures,
 * not sign-ins: a success clears the user's count, and successes never fill the IP's.
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

  t.test(`${name}: 15 successful sign-ins in a row are all 200; 11 wrong passwords → 429 (default limits)`, async (t) => {
    // Its own key prefix: the default window is 5 minutes, and alice ends this test locked out.
    const gw = await buildTestGateway(t, name === 'redis' ? { ...env, REDIS_KEY_PREFIX: `${redis.prefix}defaults:` } : env)
    const attempt = (password: string) => gw.app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password }, remoteAddress: '10.3.3.3' })
    for (let i = 0; i < 15; i++) t.equal((await attempt(TEST_PASSWORD)).statusCode, 200, `sign-in ${i + 1}`)
    for (let i = 0; i < 10; i++) t.equal((await attempt('guess')).statusCode, 401, `wrong password ${i + 1}`)
    const limited = await attempt('guess')
    t.equal(limited.statusCode, 429, 'the 11th wrong password')
    t.ok(Number(limited.headers['retry-after']) >= 1)
  })

  t.test(`${name}: a success clears the user's failures; the IP counts only failures`, async (t) => {
    // A window long enough that nothing expires on a slow machine, under its own key prefix.
    const own = name === 'redis' ? { REDIS_KEY_PREFIX: `${redis.prefix}successes:` } : {}
    const gw = await buildTestGateway(t, { ...env, ...LIMITS, LOGIN_ATTEMPT_WINDOW: '60', ...own })
    const attempt = (username: string, password: string, ip = '10.4.4.4') =>
      gw.app.inject({ method: 'POST', url: '/auth/login', payload: { username, password }, remoteAddress: ip })
    // Per user 3: two failures, a success, two failures, a success... never limited.
    for (let round = 0; round < 3; round++) {
      t.equal((await attempt('alice', 'guess', '10.5.5.5')).statusCode, 401)
      t.equal((await attempt('alice', 'guess', '10.5.5.6')).statusCode, 401)
      t.equal((await attempt('alice', TEST_PASSWORD, '10.5.5.7')).statusCode, 200, `round ${round + 1}: the success is not limited`)
    }
    // Per IP 6: ten successes from one address fill nothing...
    for (let i = 0; i < 10; i++) t.equal((await attempt(i % 2 === 0 ? 'alice' : 'bob', TEST_PASSWORD)).statusCode, 200)
    // ...so six failures from it are still allowed, and the seventh attempt is refused.
    for (let i = 0; i < 6; i++) t.equal((await attempt(`user${i}`, 'guess')).statusCode, 401)
    t.equal((await attempt('alice', TEST_PASSWORD)).statusCode, 429, 'the IP limit counts the failures')
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
