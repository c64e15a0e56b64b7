/**
 * Cookie tossing (docs/contract.md "Browser flow"): an attacker who can set a cookie for a sibling
 * subdomain or a longer path gets their `lk_refresh` sent beside the victim's. A request
 * with two refresh cookies is refused (401) on refresh and on logout, both copies are
 * cleared, and neither session is touched.
 */
import t from 'tap'
import { buildTestGateway, login, refresh } from '../helpers/gateway.js'

function setCookies (headers: Record<string, unknown>): string[] {
  const raw = headers['set-cookie']
  return raw === undefined ? [] : Array.isArray(raw) ? raw as string[] : [raw as string]
}

t.test('two lk_refresh cookies: refresh and logout answer 401, clear both, touch neither session', async (t) => {
  const gw = await buildTestGateway(t)
  const victim = await login(gw.app)
  const attacker = await login(gw.app, 'bob')
  const tossed = `lk_refresh=${attacker.refresh as string}; lk_refresh=${victim.refresh as string}`

  for (const url of ['/auth/refresh', '/auth/logout']) {
    const res = await gw.app.inject({ method: 'POST', url, headers: { cookie: tossed } })
    t.equal(res.statusCode, 401, `${url}: refused`)
    t.equal((res.json() as { error: string }).error, 'invalid_grant')
    const cleared = setCookies(res.headers)
    t.ok(cleared.some(c => /^lk_refresh=;/.test(c) && /Path=\/auth(;|$)/.test(c) && /Max-Age=0/.test(c)), `${url}: ours cleared at Path=/auth`)
    t.ok(cleared.some(c => /^lk_refresh=;/.test(c) && c.includes(`Path=${url}`) && /Max-Age=0/.test(c)), `${url}: a tossed one cleared at its longer path`)
  }
  t.ok(gw.logs.some(l => l.event === 'refresh_cookie_duplicated'), 'logged, without the tokens')
  t.notOk(gw.rawLogs.some(l => l.includes(victim.refresh as string) || l.includes(attacker.refresh as string)))

  // Neither family was rotated nor revoked by the refused requests.
  t.equal((await refresh(gw.app, victim.refresh)).res.statusCode, 200, "the victim's session is intact")
  t.equal((await refresh(gw.app, attacker.refresh)).res.statusCode, 200, "and so is the attacker's")
})

t.test('one lk_refresh cookie among others is still accepted', async (t) => {
  const gw = await buildTestGateway(t)
  const session = await login(gw.app)
  const res = await gw.app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `theme=dark; lk_refresh=${session.refresh as string}; lk_refresh_hint=1` } })
  t.equal(res.statusCode, 200)
})
