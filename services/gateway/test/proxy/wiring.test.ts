/**
 * The proxy inside the real gateway app (`buildTestGateway`): the default `/api/` route to
 * RESOURCE_URL, tokens from the gateway's own login, refused after logout.
 */
import t from 'tap'
import { buildTestGateway, login } from '../helpers/gateway.js'
import { echoUpstream } from './harness.js'

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
