/**
 * contract rule 7: Redis down → login and refresh answer 503 temporarily_unavailable within
 * 2 s, the process stays up, and everything works again once Redis is back.
 */
import t from 'tap'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { buildTestGateway, login, refresh } from '../helpers/gateway.js'
import { echoUpstream } from '../proxy/harness.js'

const BUDGET_MS = 2000

t.test('Redis killed mid-test: 503 within 2 s, then recovery without a restart', async (t) => {
  const redis = await redisForTest(t, { own: true })
  const upstream = await echoUpstream(t)
  const gw = await buildTestGateway(t, { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, RESOURCE_URL: upstream.url })
  const before = await login(gw.app)
  const bearer = { authorization: `Bearer ${before.body.access_token as string}` }
  t.equal(before.res.statusCode, 200)
  t.equal((await gw.app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)

  await redis.kill()

  for (const attempt of [1, 2, 3]) {
    let started = Date.now()
    const l = await login(gw.app)
    let took = Date.now() - started
    t.equal(l.res.statusCode, 503, `login ${attempt}`)
    t.same(l.body, { error: 'temporarily_unavailable', error_description: 'The session store is unavailable; retry shortly.' })
    t.ok(took < BUDGET_MS, `login answered in ${took} ms`)

    started = Date.now()
    const r = await refresh(gw.app, before.refresh)
    took = Date.now() - started
    t.equal(r.res.statusCode, 503, `refresh ${attempt}`)
    t.equal((r.body as { error: string }).error, 'temporarily_unavailable')
    t.ok(took < BUDGET_MS, `refresh answered in ${took} ms`)
    t.equal(r.cookie, undefined, 'a store error keeps the cookie: it is not a revocation')
  }
  const proxied = await gw.app.inject({ method: 'GET', url: '/api/me', headers: bearer })
  t.equal(proxied.statusCode, 200, 'proxied requests with a valid access token keep flowing')
  const ready = await gw.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503, 'not ready while Redis is down')
  t.equal((await gw.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'but alive')
  t.notOk(gw.logs.some(l => l.event === 'refresh_reuse_detected'), 'a store error never counts as reuse')

  await redis.restart()
  // Reconnection is automatic; give ioredis its retry interval, without restarting anything.
  const deadline = Date.now() + 10_000
  let status = 0
  while (Date.now() < deadline) {
    status = (await login(gw.app)).res.statusCode
    if (status === 200) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.equal(status, 200, 'login works again once Redis is back')
  t.equal((await gw.app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
})
