/**
 * The proxy inside the real gateway app (`buildTestGateway`): the default `/api/` route to
 * RESOURCE_URL, tokens from the gateway's own login, refused after logout.
 */
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { buildTestGateway, login } from '../helpers/gateway.js'
import { completionLogged, echoUpstream, send } from './harness.js'

t.test('proxy wired into the gateway', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await buildTestGateway(t, { RESOURCE_URL: upstream.url })
  const probe = await gw.app.inject({ method: 'GET', url: '/api/me' })
  t.equal(probe.statusCode, 401)
  t.equal(probe.headers['www-authenticate'], 'Bearer realm="latchkey"')

  const { body, refresh } = await login(gw.app)
  const token = body.access_token as string
  t.type(token, 'string')
  const res = await gw.app.inject({ method: 'GET', url: '/api/me?x=1', headers: { authorization: `Bearer ${token}`, cookie: 'lk_refresh=secret' } })
  t.equal(res.statusCode, 200)
  const echoed = res.json<{ url: string, headers: Record<string, string> }>()
  t.equal(echoed.url, '/api/me?x=1')
  t.equal(echoed.headers.authorization, `Bearer ${token}`)
  t.notOk('cookie' in echoed.headers)

  // Logout revokes the session at the edge: the same access token is refused at once.
  const out = await gw.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: `lk_refresh=${String(refresh)}` } })
  t.equal(out.statusCode, 204)
  const after = await gw.app.inject({ method: 'GET', url: '/api/me', headers: { authorization: `Bearer ${token}` } })
  t.equal(after.statusCode, 401)
  t.equal(after.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
})

t.test('the gateway installs the fast lane (serverFactory) and every proxied request logs one completion line', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await buildTestGateway(t, { RESOURCE_URL: upstream.url, LOG_LEVEL: 'info' })
  const { body } = await login(gw.app)
  await gw.app.listen({ port: 0, host: '127.0.0.1' })
  const port = (gw.app.server.address() as AddressInfo).port
  const authorization = `Bearer ${body.access_token as string}`
  t.notOk(gw.app.server.listeners('request').includes(gw.app.routing), 'Fastify\'s router is not the server\'s listener: the lane is in front of it')
  for (let i = 0; i < 3; i++) t.equal((await send(port, { path: `/api/lane-${i}`, headers: { authorization } })).status, 200)
  t.equal((await send(port, { path: '/api/refused' })).status, 401)
  const ids = upstream.received.slice(-3).map(r => r.headers['x-request-id'])
  await completionLogged(gw.logs, 4)
  const completed = gw.logs.filter(l => l.msg === 'request completed')
  for (const id of ids) {
    const line = completed.filter(l => l.reqId === id)
    t.equal(line.length, 1, `one completion line for ${String(id)}`)
    t.match(line[0], { res: { statusCode: 200 }, responseTime: Number })
  }
  t.ok(completed.some(l => (l.res as { statusCode?: number } | undefined)?.statusCode === 401), 'a refusal logs its completion too')
  const incoming = gw.logs.filter(l => l.msg === 'incoming request' && /^\/api\/lane-/.test(String((l.req as { url?: string } | undefined)?.url)))
  t.equal(incoming.length, 3, 'one incoming line per request, lane or not')
})
