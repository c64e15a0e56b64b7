import t from 'tap'
import { ManualClock } from '#shared/clock.js'
import { TestIssuer } from '../../../shared/test/helpers/test-issuer.js'
import { MAX_NOTE_LENGTH } from '../src/notes-store.js'
import { call, nowS, resourceFor } from './helpers/resource.js'

const issuer = await TestIssuer.start()
t.teardown(() => issuer.close())

t.test('GET /api/me: identity from the claims', async (t) => {
  const clock = new ManualClock(Date.now())
  const app = await resourceFor(t, issuer, clock)
  const user = await call(app, 'GET', '/api/me', await issuer.sign({ nowS: nowS(clock) }))
  t.equal(user.statusCode, 200)
  t.same(user.json(), { sub: 'alice', preferred_username: null, client_id: 'latchkey-web', scope: 'notes:read notes:write', sid: 'family-1', exp: nowS(clock) + 300 })
  const named = await call(app, 'GET', '/api/me', await issuer.sign({ nowS: nowS(clock), claims: { sub: 'usr_1', preferred_username: 'alice' } }))
  t.match(named.json(), { sub: 'usr_1', preferred_username: 'alice' }, 'the user\'s name when the token carries it')
  const service = await call(app, 'GET', '/api/me', await issuer.signService({ nowS: nowS(clock) }))
  t.same(service.json(), { sub: 'reporting', preferred_username: null, client_id: 'reporting', scope: 'internal:read', sid: null, exp: nowS(clock) + 300 })
  const none = await call(app, 'GET', '/api/me')
  t.equal(none.statusCode, 401)
  t.equal(none.headers['www-authenticate'], 'Bearer realm="latchkey"')
})

t.test('notes: per user, scopes notes:read / notes:write', async (t) => {
  const clock = new ManualClock(Date.UTC(2026, 0, 2))
  const app = await resourceFor(t, issuer, clock)
  const alice = await issuer.sign({ nowS: nowS(clock) })
  const bob = await issuer.sign({ nowS: nowS(clock), claims: { sub: 'bob', sid: 'family-2' } })
  const readOnly = await issuer.sign({ nowS: nowS(clock), claims: { scope: 'notes:read' } })
  const writeOnly = await issuer.sign({ nowS: nowS(clock), claims: { scope: 'notes:write' } })

  t.same((await call(app, 'GET', '/api/notes', alice)).json(), { notes: [] })
  const created = await call(app, 'POST', '/api/notes', alice, { text: 'buy milk' })
  t.equal(created.statusCode, 201)
  const note = created.json()
  t.match(note, { id: /^[0-9a-f-]{36}$/, text: 'buy milk', created_at: '2026-01-02T00:00:00.000Z' })
  t.same((await call(app, 'GET', '/api/notes', alice)).json(), { notes: [note] })
  t.same((await call(app, 'GET', '/api/notes', bob)).json(), { notes: [] }, "bob does not see alice's notes")
  t.equal((await call(app, 'DELETE', `/api/notes/${note.id}`, bob)).statusCode, 404, "bob cannot delete alice's note")

  const noRead = await call(app, 'GET', '/api/notes', writeOnly)
  t.equal(noRead.statusCode, 403)
  t.equal(noRead.headers['www-authenticate'], 'Bearer realm="latchkey", error="insufficient_scope", scope="notes:read"')
  t.same(noRead.json(), { error: 'insufficient_scope', error_description: 'The access token lacks a required scope.' })
  for (const [method, url] of [['POST', '/api/notes'], ['DELETE', `/api/notes/${note.id}`]] as const) {
    const res = await call(app, method, url, readOnly, method === 'POST' ? { text: 'x' } : undefined)
    t.equal(res.statusCode, 403, `${method} with notes:read only`)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="latchkey", error="insufficient_scope", scope="notes:write"')
  }

  t.equal((await call(app, 'POST', '/api/notes', alice, { text: 'x'.repeat(MAX_NOTE_LENGTH) })).statusCode, 201, 'exactly 2000 characters')
  const tooLong = await call(app, 'POST', '/api/notes', alice, { text: 'x'.repeat(MAX_NOTE_LENGTH + 1) })
  t.equal(tooLong.statusCode, 400)
  t.equal(tooLong.json().error, 'invalid_request')
  t.equal((await call(app, 'POST', '/api/notes', alice, { text: '' })).statusCode, 400, 'empty text')
  t.equal((await call(app, 'POST', '/api/notes', alice, { text: 42 })).statusCode, 400, 'not coerced from a number')
  t.equal((await call(app, 'POST', '/api/notes', alice, { text: 'a', extra: 1 })).statusCode, 400, 'unknown properties refused')
  const huge = await call(app, 'POST', '/api/notes', alice, { text: 'x'.repeat(20_000) })
  t.equal(huge.statusCode, 413)
  t.same(huge.json(), { error: 'invalid_request', error_description: 'The request body is too large.' })
  const form = await app.inject({ method: 'POST', url: '/api/notes', headers: { authorization: `Bearer ${alice}`, 'content-type': 'text/plain' }, payload: 'hello' })
  t.equal(form.statusCode, 415, form.body)
  const anonymousBody = await app.inject({ method: 'POST', url: '/api/notes', headers: { 'content-type': 'application/json' }, payload: '{' })
  t.equal(anonymousBody.statusCode, 401, 'no token: refused before the body is parsed')

  t.equal((await call(app, 'DELETE', `/api/notes/${note.id}`, alice)).statusCode, 204)
  t.equal((await call(app, 'DELETE', `/api/notes/${note.id}`, alice)).statusCode, 404, 'already gone')
  t.equal((await call(app, 'GET', '/api/notes', alice)).json().notes.length, 1)
})

t.test('/internal/stats: service tokens with internal:read only', async (t) => {
  const clock = new ManualClock(Date.now())
  const app = await resourceFor(t, issuer, clock)
  const service = await call(app, 'GET', '/internal/stats', await issuer.signService({ nowS: nowS(clock) }))
  t.equal(service.statusCode, 200)
  t.match(service.json(), { uptime_s: 0, notes: { owners: 0, notes: 0 }, tokens: { outcomes: { verified: 1 }, jwks: { fetches: 1, keysCached: true } } })

  const userWithScope = await call(app, 'GET', '/internal/stats', await issuer.sign({ nowS: nowS(clock), claims: { scope: 'internal:read' } }))
  t.equal(userWithScope.statusCode, 403, 'a user token, even with internal:read')
  t.equal(userWithScope.headers['www-authenticate'], 'Bearer realm="latchkey", error="insufficient_scope", scope="internal:read"')
  t.equal(userWithScope.json().error_description, 'This route accepts service (client credentials) tokens only.')

  const serviceNoScope = await call(app, 'GET', '/internal/stats', await issuer.signService({ nowS: nowS(clock), scope: 'notes:read' }))
  t.equal(serviceNoScope.statusCode, 403, 'a service token without internal:read')
  t.equal(serviceNoScope.json().error, 'insufficient_scope')

  const impostor = await issuer.sign({ nowS: nowS(clock), claims: { sid: undefined, scope: 'internal:read' } })
  t.equal((await call(app, 'GET', '/internal/stats', impostor)).statusCode, 403, 'no sid but sub ≠ client_id is not a service token')
})

t.test('ops: /healthz, /readyz, /metrics, 404', async (t) => {
  const clock = new ManualClock(Date.now())
  await issuer.pause()
  t.teardown(() => issuer.resume())
  const app = await resourceFor(t, issuer, clock)
  t.same((await call(app, 'GET', '/healthz')).json(), { status: 'ok' })
  const notReady = await call(app, 'GET', '/readyz')
  t.equal(notReady.statusCode, 503, 'JWKS unreachable and nothing cached')
  t.same(notReady.json(), { error: 'temporarily_unavailable', error_description: 'The signing keys are not available yet.' })
  const token = await issuer.sign({ nowS: nowS(clock) })
  t.equal((await call(app, 'GET', '/api/me', token)).statusCode, 503)
  await issuer.resume()
  clock.advance(60_000)
  t.equal((await call(app, 'GET', '/readyz')).statusCode, 200, 'reachable again: ready, no restart')
  await issuer.pause()
  t.equal((await call(app, 'GET', '/readyz')).statusCode, 200, 'down again but keys cached: still ready')
  t.equal((await call(app, 'GET', '/api/me', token)).statusCode, 200)
  await issuer.resume()

  const metrics = await call(app, 'GET', '/metrics')
  t.equal(metrics.statusCode, 200)
  t.match(metrics.headers['content-type'], /^text\/plain/)
  t.match(metrics.body, /latchkey_resource_access_tokens_total\{outcome="verified"\} 1/)
  t.match(metrics.body, /latchkey_resource_access_tokens_total\{outcome="unavailable"\} 1/)
  t.match(metrics.body, /latchkey_resource_jwks_fetches_total\{result="error"\} [1-9]/)
  t.match(metrics.body, /latchkey_resource_http_requests_total\{method="GET",route="\/api\/me",status="200"\} 1/)
  t.match(metrics.body, /process_cpu_user_seconds_total/)

  const missing = await call(app, 'GET', '/nope')
  t.equal(missing.statusCode, 404)
  t.same(missing.json(), { error: 'not_found', error_description: 'Not found.' })
})

t.test('two apps in one process keep separate metrics', async (t) => {
  const clock = new ManualClock(Date.now())
  const a = await resourceFor(t, issuer, clock)
  const b = await resourceFor(t, issuer, clock)
  await call(a, 'GET', '/healthz')
  t.match((await call(a, 'GET', '/metrics')).body, /route="\/healthz",status="200"\} 1/)
  t.notMatch((await call(b, 'GET', '/metrics')).body, /route="\/healthz"/)
})
