/**
 * /metrics: the counters move when their events happen.
 */
import t from 'tap'
import { ManualClock } from '#shared/clock.js'
import { buildTestGateway, login, refresh } from '../helpers/gateway.js'
import { testClients } from '../helpers/listening.js'

function value (body: string, series: string): number {
  const line = body.split('\n').find(l => l.startsWith(`${series} `))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

t.test('counters follow logins, refreshes, reuse, revocations and issued tokens', async (t) => {
  const clients = await testClients()
  const clock = new ManualClock(Date.now())
  const gw = await buildTestGateway(t, { CLIENTS_FILE: clients.file }, { clock })
  const scrape = async (): Promise<string> => {
    const res = await gw.app.inject({ method: 'GET', url: '/metrics' })
    t.equal(res.statusCode, 200)
    t.match(res.headers['content-type'], /^text\/plain/)
    return res.body
  }
  const before = await scrape()
  const ok = await login(gw.app)
  await login(gw.app, 'alice', 'wrong')
  const r1 = await refresh(gw.app, ok.refresh)
  await refresh(gw.app, ok.refresh) // inside grace
  clock.advance(60_000)
  await refresh(gw.app, ok.refresh) // reuse: revokes the family
  await refresh(gw.app, 'garbage')
  const other = await login(gw.app)
  await gw.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: `lk_refresh=${other.refresh as string}` } })
  await gw.app.inject({
    method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: `grant_type=client_credentials&client_id=svc-a&client_secret=${encodeURIComponent(clients.secrets['svc-a'] as string)}`
  })
  t.ok(r1.refresh)
  const after = await scrape()
  const delta = (s: string): number => value(after, s) - value(before, s)
  const expected: Record<string, number> = {
    'latchkey_logins_total{outcome="success"}': 2,
    'latchkey_logins_total{outcome="failure"}': 1,
    'latchkey_refreshes_total{outcome="rotated"}': 1,
    'latchkey_refreshes_total{outcome="grace"}': 1,
    'latchkey_refreshes_total{outcome="reuse"}': 1,
    'latchkey_refreshes_total{outcome="invalid"}': 1,
    'latchkey_refresh_reuse_detected_total': 1,
    'latchkey_revocations_total{reason="reuse"}': 1,
    'latchkey_revocations_total{reason="logout"}': 1,
    'latchkey_tokens_issued_total{grant="login"}': 2,
    'latchkey_tokens_issued_total{grant="refresh_token"}': 2,
    'latchkey_tokens_issued_total{grant="client_credentials"}': 1
  }
  t.same(Object.fromEntries(Object.keys(expected).map(name => [name, delta(name)])), expected, 'each counter moved by what the requests above did')
  t.match(after, /latchkey_http_request_duration_seconds_bucket\{le="[^"]+",method="POST",route="\/auth\/login",status_code="200"\}/)
  t.match(after, /latchkey_redis_errors_total 0/)
  t.match(after, /latchkey_gateway_process_resident_memory_bytes/)
})

t.test('readyz: 200 when ready, 503 while draining; healthz stays 200', async (t) => {
  const gw = await buildTestGateway(t)
  t.same((await gw.app.inject({ method: 'GET', url: '/readyz' })).json(), { status: 'ready' })
  gw.app.latchkey.readiness.draining = true
  const draining = await gw.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(draining.statusCode, 503)
  t.same(draining.json(), { status: 'draining' })
  t.equal((await gw.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200)
})
