/**
 * Failed client authentications at /oauth/token are throttled (issue 13 item 11), per
 * client id and per source IP, in Redis (two replicas share the counts): 429 with
 * Retry-After and an RFC 6749 §5.2-shaped body. Good credentials are never counted, and a
 * client id flooded with wrong secrets still works with its right one.
 */
import t from 'tap'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { buildTestGateway } from '../helpers/gateway.js'
import { testClients } from '../helpers/listening.js'

const redis = await redisForTest(t)
const clients = await testClients()
const env = {
  CLIENTS_FILE: clients.file, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
  CLIENT_AUTH_MAX_FAILURES_PER_CLIENT: '3', CLIENT_AUTH_MAX_FAILURES_PER_IP: '6', CLIENT_AUTH_FAILURE_WINDOW: '60'
}
const a = await buildTestGateway(t, env)
const b = await buildTestGateway(t, env)
const good = clients.secrets['svc-a'] as string

async function token (app: typeof a.app, id: string, secret: string, ip: string) {
  const res = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    remoteAddress: ip,
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` },
    payload: 'grant_type=client_credentials'
  })
  return { status: res.statusCode, body: res.json() as Record<string, unknown>, retryAfter: res.headers['retry-after'] }
}

t.test('successes are never counted', async (t) => {
  for (let i = 0; i < 12; i++) t.equal((await token(a.app, 'svc-a', good, '198.51.100.1')).status, 200)
})

t.test('per client id: past the limit, failures answer 429 from any IP and replica; the right secret still works', async (t) => {
  const statuses: number[] = []
  for (let i = 0; i < 3; i++) statuses.push((await token(a.app, 'svc-b', 'wrong', `198.51.100.${10 + i}`)).status)
  t.same(statuses, [401, 401, 401])
  const limited = await token(b.app, 'svc-b', 'wrong', '198.51.100.20')
  t.equal(limited.status, 429, 'the fourth failure, at the other replica, from another IP')
  t.equal(limited.body.error, 'too_many_requests')
  t.type(limited.body.error_description, 'string')
  t.ok(Number(limited.retryAfter) >= 1 && Number(limited.retryAfter) <= 60, `Retry-After ${String(limited.retryAfter)}`)
  t.equal((await token(a.app, 'svc-b', clients.secrets.svc_b as string, '198.51.100.21')).status, 200, 'not a lock-out of the real client')
})

t.test('per IP: past the limit, every client authentication from it answers 429, good ones too', async (t) => {
  const ip = '203.0.113.50'
  const statuses: number[] = []
  for (let i = 0; i < 7; i++) statuses.push((await token(a.app, `guess-${i}`, 'wrong', ip)).status)
  t.same(statuses, [401, 401, 401, 401, 401, 401, 429], 'six failures across six ids, then 429')
  t.equal((await token(a.app, 'svc-a', good, ip)).status, 429, 'no credential is checked from a blocked IP')
  t.equal((await token(b.app, 'guess-x', 'wrong', ip)).status, 429, 'the other replica counts the same IP')
  t.equal((await token(a.app, 'svc-a', good, '203.0.113.51')).status, 200, 'other IPs unaffected')
})

t.test('bad assertions count as failures too', async (t) => {
  const ip = '203.0.113.60'
  const statuses: number[] = []
  for (let i = 0; i < 7; i++) {
    const res = await a.app.inject({
      method: 'POST',
      url: '/oauth/token',
      remoteAddress: ip,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: 'e30.e30.AAAA' }).toString()
    })
    statuses.push(res.statusCode)
  }
  t.same(statuses, [401, 401, 401, 401, 401, 401, 429])
})
