/**
 * The proxy's fast lane (plugin.ts): a request whose token is already verified is forwarded
 * before Fastify's lifecycle, and admits exactly what the gate admits. "Taken" is seen from
 * outside: an app-level onRequest hook runs for every request Fastify handles and for none
 * the lane takes. Everything the lane does not take must be answered as the gate answers.
 */
import t from 'tap'
import { ManualClock } from '#shared/clock.js'
import { completionLogged, echoUpstream, proxyGateway, route, send, type ProxyAppOptions } from './harness.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

async function laneGateway (t: Parameters<typeof proxyGateway>[0], options: ProxyAppOptions) {
  const seenByFastify: string[] = []
  const gw = await proxyGateway(t, options, (app) => { app.addHook('onRequest', async (request) => { seenByFastify.push(request.url) }) })
  return { ...gw, seenByFastify }
}

t.test('a token seen before takes the lane, with the same forwarding as the gate', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await laneGateway(t, { routes: [route(upstream.url)] })
  const authorization = `Bearer ${await gw.token()}`
  const headers = { authorization, host: 'public.example', 'x-forwarded-for': '6.6.6.6', 'x-request-id': 'mine', connection: 'keep-alive, x-drop-me', 'x-drop-me': '1', cookie: 'lk_refresh=secret; theme=dark' }

  const first = await send(gw.port, { path: '/api/a/./b//c?q=%2F', headers })
  t.same(gw.seenByFastify, ['/api/a/./b//c?q=%2F'], 'a token not verified yet goes through Fastify and the gate')
  const second = await send(gw.port, { path: '/api/a/./b//c?q=%2F', headers })
  t.same(gw.seenByFastify, ['/api/a/./b//c?q=%2F'], 'the same token again: the lane took it, Fastify never saw it')

  t.equal(second.status, first.status)
  t.equal(second.status, 200)
  const [a, b] = upstream.received.slice(-2)
  t.equal(b?.url, a?.url, 'the same normalised target')
  t.equal(b?.url, '/api/a/b/c?q=%2F')
  const stable = (h: Record<string, unknown>): Record<string, unknown> => { const { 'x-request-id': _id, ...rest } = h; return rest }
  t.same(stable(b?.headers ?? {}), stable(a?.headers ?? {}), 'the same headers upstream, but for the request id')
  t.equal(b?.headers.traceparent, undefined, 'tracing off: no traceparent invented (trace-context.ts)')
  t.match(b?.headers['x-request-id'], UUID)
  t.not(b?.headers['x-request-id'], a?.headers['x-request-id'], 'a fresh request id per request')
  t.equal(b?.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(b?.headers.cookie, 'theme=dark', 'the refresh cookie stays at the gateway')
  t.notOk('x-drop-me' in (b?.headers ?? {}), 'headers named in Connection are dropped')
})

t.test('the lane logs the access line Fastify would, with the id the upstream saw', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await laneGateway(t, { routes: [route(upstream.url)] })
  const authorization = `Bearer ${await gw.token()}`
  await send(gw.port, { path: '/api/one', headers: { authorization } })
  const fromFastify = gw.logs.find(l => l.msg === 'incoming request' && (l.req as { url?: string } | undefined)?.url === '/api/one')
  await send(gw.port, { path: '/api/two', headers: { authorization } })
  t.same(gw.seenByFastify, ['/api/one'])
  const fromLane = gw.logs.find(l => l.msg === 'incoming request' && (l.req as { url?: string } | undefined)?.url === '/api/two')
  t.ok(fromFastify !== undefined && fromLane !== undefined, 'both requests logged')
  t.same(Object.keys((fromLane?.req ?? {}) as object).sort(), Object.keys((fromFastify?.req ?? {}) as object).sort(), 'the same req fields')
  t.match(fromLane?.req, { method: 'GET', url: '/api/two', remoteAddress: '127.0.0.1' })
  t.equal(fromLane?.reqId, upstream.received.at(-1)?.headers['x-request-id'], 'reqId is the X-Request-Id sent upstream')
  t.notOk(JSON.stringify(gw.logs).includes(authorization.slice(7)), 'no log line carries the token')
})

t.test('lane or gate, a proxied request logs one "request completed" line with its status and duration', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await laneGateway(t, { routes: [route(upstream.url)] })
  const authorization = `Bearer ${await gw.token()}`
  await send(gw.port, { path: '/api/gate', headers: { authorization } })
  await send(gw.port, { path: '/api/lane', headers: { authorization } })
  t.same(gw.seenByFastify, ['/api/gate'])
  const [gate, lane] = upstream.received.map(r => r.headers['x-request-id'])
  await completionLogged(gw.logs, 2)
  for (const id of [gate, lane]) {
    const lines = gw.logs.filter(l => l.msg === 'request completed' && l.reqId === id)
    t.equal(lines.length, 1, 'exactly one line')
    t.match(lines[0], { res: { statusCode: 200 }, responseTime: Number })
  }
})

t.test('what the lane does not take is answered by the gate', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 5, 1))
  const upstream = await echoUpstream(t)
  const gw = await laneGateway(t, {
    clock,
    routes: [
      route(upstream.url),
      route(upstream.url, { prefix: '/notes/', scopes: ['notes:write'] }),
      route(upstream.url, { prefix: '/billing/', audience: 'billing' })
    ]
  })
  const token = await gw.token({ sid: 'sid-lane' }, clock)
  const authorization = `Bearer ${token}`
  t.equal((await send(gw.port, { path: '/api/warm', headers: { authorization } })).status, 200, 'verified once: cached')
  t.equal((await send(gw.port, { path: '/api/warm', headers: { authorization } })).status, 200)
  t.equal(gw.seenByFastify.length, 1)
  const before = upstream.received.length
  const refusedBefore = (): number => upstream.received.filter(r => r.url !== '/api/ws').length

  await t.test('another route\'s audience: 401 invalid_token', async (t) => {
    const res = await send(gw.port, { path: '/billing/x', headers: { authorization } })
    t.equal(res.status, 401)
    t.match(res.headers['www-authenticate'], /error="invalid_token"/)
  })
  await t.test('scopes the route needs and the token lacks: 403 insufficient_scope', async (t) => {
    const res = await send(gw.port, { path: '/notes/x', headers: { authorization } })
    t.equal(res.status, 403)
    t.match(res.headers['www-authenticate'], /error="insufficient_scope", scope="notes:write"/)
  })
  await t.test('a path that leaves its prefix once normalised: 400', async (t) => {
    for (const path of ['/api/../auth/login', '/api/%2e%2e/auth/login', '/api/..;/x']) {
      const res = await send(gw.port, { path, headers: { authorization } })
      t.equal(res.status, 400, path)
      t.equal(res.json().error, 'invalid_request')
    }
  })
  await t.test('a request with an Upgrade header is left to the gate (and served as plain)', async (t) => {
    const n = gw.seenByFastify.length
    t.equal((await send(gw.port, { path: '/api/ws', headers: { authorization, upgrade: 'h2c', connection: 'upgrade' } })).status, 200)
    t.equal(gw.seenByFastify.length, n + 1)
  })
  await t.test('a revoked session: 401 at once, although its token is cached', async (t) => {
    gw.revoked.add('sid-lane')
    const res = await send(gw.port, { path: '/api/warm', headers: { authorization } })
    t.equal(res.status, 401)
    t.match(res.headers['www-authenticate'], /error="invalid_token"/)
    gw.revoked.delete('sid-lane')
  })
  await t.test('past exp the cached entry is gone: 401, not the lane', async (t) => {
    clock.advance(301_000 + 5_000)
    const res = await send(gw.port, { path: '/api/warm', headers: { authorization } })
    t.equal(res.status, 401)
    t.match(res.headers['www-authenticate'], /error="invalid_token"/)
  })
  t.equal(refusedBefore(), before, 'none of the refused ones reached the upstream')
})

t.test('fastLane: false sends every request through Fastify', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await laneGateway(t, { routes: [route(upstream.url)], fastLane: false })
  const authorization = `Bearer ${await gw.token()}`
  for (let i = 0; i < 3; i++) t.equal((await send(gw.port, { path: '/api/x', headers: { authorization } })).status, 200)
  t.equal(gw.seenByFastify.length, 3)
})
