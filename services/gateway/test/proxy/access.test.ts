/**
 * Who gets through a proxy route: RFC 6750 answers for missing, bad, wrong-audience,
 * under-scoped and revoked tokens; the upstream never sees a refused request.
 */
import t from 'tap'
import { ManualClock } from '#shared/clock.js'
import { AUDIENCE, echoUpstream, histogramCount, proxyGateway, route, send } from './harness.js'

t.test('access to proxy routes', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await proxyGateway(t, {
    routes: [
      route(upstream.url),
      route(upstream.url, { prefix: '/notes/', scopes: ['notes:read', 'notes:write'] }),
      route(upstream.url, { prefix: '/billing/', audience: 'billing' })
    ]
  })

  await t.test('a valid token reaches the upstream, which answers with its body', async (t) => {
    const token = await gw.token()
    const res = await send(gw.port, { path: '/api/hello?x=1&y=%2F&z=a//b', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.status, 200)
    const echoed = res.json<{ method: string, url: string }>()
    t.equal(echoed.method, 'GET')
    t.equal(echoed.url, '/api/hello?x=1&y=%2F&z=a//b', 'the path and the query, verbatim')
    t.equal(await histogramCount(gw.metrics, { route: '/api/', status_code: '200' }), 1, 'proxy latency observed per route prefix')
    const head = await send(gw.port, { method: 'HEAD', path: '/api/hello', headers: { authorization: `Bearer ${token}` } })
    t.equal(head.status, 200)
    t.equal(head.body, '', 'HEAD: no body')
    t.equal(upstream.received.at(-1)?.method, 'HEAD')
  })

  await t.test('upstream connections are kept alive and reused', async (t) => {
    let connections = 0
    const count = (): void => { connections++ }
    upstream.server.on('connection', count)
    const token = await gw.token()
    for (let i = 0; i < 5; i++) t.equal((await send(gw.port, { path: `/api/n${i}`, headers: { authorization: `Bearer ${token}` } })).status, 200)
    upstream.server.off('connection', count)
    t.ok(connections <= 1, `5 sequential requests, ${connections} new upstream connection(s)`)
  })

  await t.test('no credentials: 401 with a bare challenge (RFC 6750 §3.1)', async (t) => {
    const before = upstream.received.length
    const res = await send(gw.port, { path: '/api/hello' })
    t.equal(res.status, 401)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey"')
    t.same(res.json(), { error: 'unauthorized', error_description: 'An access token is required.' })
    const other = await send(gw.port, { path: '/api/hello', headers: { authorization: 'Basic YWxpY2U6cHc=' } })
    t.equal(other.status, 401)
    t.equal(other.headers['www-authenticate'], 'Bearer realm="latchkey"', 'another scheme is no bearer credentials')
    t.equal(upstream.received.length, before, 'nothing reached the upstream')
  })

  await t.test('a bad token: 401 invalid_token', async (t) => {
    const token = await gw.token()
    const tampered = token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA')
    for (const authorization of ['Bearer not-a-jwt', `Bearer ${tampered}`, `Bearer  ${token}`, 'Bearer']) {
      const res = await send(gw.port, { path: '/api/hello', headers: { authorization } })
      t.equal(res.status, 401, authorization.slice(0, 20))
      t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
      t.equal(res.json<{ error: string }>().error, 'invalid_token')
    }
  })

  await t.test('an expired token: 401 invalid_token', async (t) => {
    const past = new ManualClock(Date.now() - 3600_000)
    const token = await gw.token({}, past)
    const res = await send(gw.port, { path: '/api/hello', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.status, 401)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
  })

  await t.test('a token for another audience: 401 invalid_token', async (t) => {
    const before = upstream.received.length
    const foreign = await gw.token({ aud: 'somebody-else' })
    const res = await send(gw.port, { path: '/api/hello', headers: { authorization: `Bearer ${foreign}` } })
    t.equal(res.status, 401)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
    // A token for one route's audience does not open another route.
    const billing = await gw.token({ aud: 'billing' })
    const cross = await send(gw.port, { path: '/api/hello', headers: { authorization: `Bearer ${billing}` } })
    t.equal(cross.status, 401)
    t.equal(cross.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
    t.equal(upstream.received.length, before, 'nothing reached the upstream')
    const own = await send(gw.port, { path: '/billing/invoices', headers: { authorization: `Bearer ${billing}` } })
    t.equal(own.status, 200, 'the same token opens its own route')
    const both = await gw.token({ aud: [AUDIENCE, 'billing'] })
    t.equal((await send(gw.port, { path: '/api/x', headers: { authorization: `Bearer ${both}` } })).status, 200, 'an aud array naming the route passes')
  })

  await t.test('a token without a route scope: 403 insufficient_scope naming the scopes', async (t) => {
    const before = upstream.received.length
    const token = await gw.token({ scope: 'notes:read' })
    const res = await send(gw.port, { method: 'POST', path: '/notes/1', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' })
    t.equal(res.status, 403)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey", error="insufficient_scope", scope="notes:read notes:write"')
    t.same(res.json(), { error: 'insufficient_scope', error_description: 'The access token lacks a required scope.' })
    t.equal(upstream.received.length, before)
    const enough = await gw.token({ scope: 'notes:write notes:read' })
    t.equal((await send(gw.port, { method: 'POST', path: '/notes/1', headers: { authorization: `Bearer ${enough}` }, body: '{}' })).status, 200)
  })

  await t.test('a revoked session: 401 invalid_token, even for a token already verified', async (t) => {
    const token = await gw.token({ sid: 'sid-revoke-me' })
    const headers = { authorization: `Bearer ${token}` }
    t.equal((await send(gw.port, { path: '/api/me', headers })).status, 200, 'accepted (and cached) first')
    gw.revoked.add('sid-revoke-me')
    const res = await send(gw.port, { path: '/api/me', headers })
    t.equal(res.status, 401)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
    t.equal(res.json<{ error: string }>().error, 'invalid_token')
    const other = await gw.token({ sid: 'sid-other' })
    t.equal((await send(gw.port, { path: '/api/me', headers: { authorization: `Bearer ${other}` } })).status, 200, 'other sessions unaffected')
    const service = await gw.token({ sub: 'svc-a', client_id: 'svc-a', sid: undefined })
    t.equal((await send(gw.port, { path: '/api/me', headers: { authorization: `Bearer ${service}` } })).status, 200, 'service tokens have no sid')
  })

  await t.test('refused answers are never cached by intermediaries', async (t) => {
    const res = await send(gw.port, { path: '/api/hello' })
    t.equal(res.headers['cache-control'], 'no-store')
  })
})
