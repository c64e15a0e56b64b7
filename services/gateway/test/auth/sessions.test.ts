/**
 * Logout, logout-all and the session list, on both stores.
 */
import t from 'tap'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { buildTestGateway, login, refresh, refreshCookieOf } from '../helpers/gateway.js'

const redis = await redisForTest(t)

for (const [name, env] of [['memory', {}], ['redis', { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix }]] as const) {
  t.test(`${name}: logout revokes the family, clears the cookie, and is idempotent`, async (t) => {
    const gw = await buildTestGateway(t, env)
    const { refresh: tok } = await login(gw.app)
    const out = await gw.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: `lk_refresh=${tok as string}` } })
    t.equal(out.statusCode, 204)
    t.equal(out.body, '')
    const cleared = refreshCookieOf(out)
    t.equal(cleared?.value, '')
    t.match(cleared?.attributes ?? '', /Max-Age=0/)
    t.match(cleared?.attributes ?? '', /Path=\/auth/)
    t.equal((await refresh(gw.app, tok)).res.statusCode, 401, 'the token is dead')
    const again = await gw.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: `lk_refresh=${tok as string}` } })
    t.equal(again.statusCode, 204, 'second logout')
    const none = await gw.app.inject({ method: 'POST', url: '/auth/logout' })
    t.equal(none.statusCode, 204, 'logout with no cookie')
    const garbage = await gw.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: 'lk_refresh=%00%01' } })
    t.equal(garbage.statusCode, 204, 'logout with a garbage cookie')
    t.ok(gw.logs.some(l => l.event === 'session_revoked' && l.reason === 'logout'))
  })

  t.test(`${name}: sessions list, delete one, logout-all`, async (t) => {
    const gw = await buildTestGateway(t, env)
    const a = await login(gw.app, undefined, undefined, { 'user-agent': 'Browser A' })
    const b = await login(gw.app, undefined, undefined, { 'user-agent': 'Browser B' })
    const bob = await login(gw.app, 'bob')
    const bearer = { authorization: `Bearer ${a.body.access_token as string}` }

    const list = await gw.app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer })
    t.equal(list.statusCode, 200)
    const sessions = list.json() as Array<Record<string, unknown>>
    t.equal(sessions.length, 2, 'only the caller\'s sessions')
    for (const s of sessions) {
      t.same(Object.keys(s).sort(), ['created_at', 'current', 'id', 'ip', 'last_used_at', 'user_agent'])
      t.match(s.created_at, /^\d{4}-\d\d-\d\dT/)
    }
    const current = sessions.filter(s => s.current === true)
    t.equal(current.length, 1)
    t.equal(current[0]?.user_agent, 'Browser A')
    const other = sessions.find(s => s.current === false) as { id: string }

    const bobSid = (JSON.parse(Buffer.from((bob.body.access_token as string).split('.')[1] as string, 'base64url').toString()) as { sid: string }).sid
    const foreign = await gw.app.inject({ method: 'DELETE', url: `/auth/sessions/${bobSid}`, headers: bearer })
    t.equal(foreign.statusCode, 404, 'another user\'s session is not yours to delete')
    t.equal((await refresh(gw.app, bob.refresh)).res.statusCode, 200, 'bob unaffected')

    const del = await gw.app.inject({ method: 'DELETE', url: `/auth/sessions/${other.id}`, headers: bearer })
    t.equal(del.statusCode, 204)
    t.equal((await refresh(gw.app, b.refresh)).res.statusCode, 401, 'deleted session is revoked')
    const missing = await gw.app.inject({ method: 'DELETE', url: `/auth/sessions/${other.id}`, headers: bearer })
    t.equal(missing.statusCode, 404)

    const all = await gw.app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer })
    t.equal(all.statusCode, 204)
    t.equal((await refresh(gw.app, a.refresh)).res.statusCode, 401, 'every family of the user revoked')
    const after = await gw.app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer })
    t.equal(after.statusCode, 401, 'the caller\'s own session went too: its access token is refused at once')
    const fresh = await login(gw.app)
    const listed = await gw.app.inject({ method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${fresh.body.access_token as string}` } })
    t.same((listed.json() as Array<{ current: boolean }>).map(s => s.current), [true], 'only the new session is live')
  })

  t.test(`${name}: a signed-out session's access token can no longer use the Bearer routes`, async (t) => {
    const gw = await buildTestGateway(t, env)
    const gone = await login(gw.app)
    const kept = await login(gw.app)
    const out = await gw.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: `lk_refresh=${gone.refresh as string}` } })
    t.equal(out.statusCode, 204)
    const bearer = { authorization: `Bearer ${gone.body.access_token as string}` }
    const list = await gw.app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer })
    t.equal(list.statusCode, 401)
    t.equal(list.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
    const all = await gw.app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer })
    t.equal(all.statusCode, 401, 'cannot sign the user out everywhere')
    t.equal((await refresh(gw.app, kept.refresh)).res.statusCode, 200, 'the other session survives')
  })

  t.test(`${name}: Bearer routes demand a valid access token (RFC 6750)`, async (t) => {
    const gw = await buildTestGateway(t, env)
    const none = await gw.app.inject({ method: 'GET', url: '/auth/sessions' })
    t.equal(none.statusCode, 401)
    t.equal(none.headers['www-authenticate'], 'Bearer realm="latchkey"')
    const bad = await gw.app.inject({ method: 'POST', url: '/auth/logout-all', headers: { authorization: 'Bearer not.a.token' } })
    t.equal(bad.statusCode, 401)
    t.equal(bad.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
    t.equal((bad.json() as { error: string }).error, 'invalid_token')
    // One answer per failure everywhere: the Bearer routes answer exactly as the proxy does.
    // No credentials, or credentials of another scheme, get no error code (RFC 6750 §3.1).
    const { body: session } = await login(gw.app)
    const cases: Array<[string, Record<string, string>, number, string | undefined]> = [
      ['no header', {}, 401, 'Bearer realm="latchkey"'],
      ['Basic', { authorization: 'Basic dXNlcjpwYXNz' }, 401, 'Bearer realm="latchkey"'],
      ['bare Bearer', { authorization: 'Bearer' }, 401, 'Bearer realm="latchkey", error="invalid_token"'],
      ['garbage', { authorization: 'Bearer not.a.token' }, 401, 'Bearer realm="latchkey", error="invalid_token"'],
      ['valid', { authorization: `Bearer ${session.access_token as string}` }, 200, undefined]
    ]
    for (const [name, headers, status, challenge] of cases) {
      const own = await gw.app.inject({ method: 'GET', url: '/auth/sessions', headers })
      t.equal(own.statusCode, status, `${name}: /auth/sessions`)
      t.equal(own.headers['www-authenticate'], challenge, `${name}: challenge`)
      if (status === 200) continue
      const proxied = await gw.app.inject({ method: 'GET', url: '/api/x', headers })
      t.equal(proxied.statusCode, own.statusCode, `${name}: the proxy answers the same status`)
      t.equal(proxied.headers['www-authenticate'], own.headers['www-authenticate'], `${name}: and challenge`)
      t.same(proxied.json(), own.json(), `${name}: and body`)
    }
    t.equal((none.json() as { error: string }).error, 'unauthorized', 'no credentials: the body says so, without an RFC 6750 error code')
    const { refresh: tok } = await login(gw.app)
    const withRefresh = await gw.app.inject({ method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${tok as string}` } })
    t.equal(withRefresh.statusCode, 401, 'a refresh token is not an access token')
  })
}
