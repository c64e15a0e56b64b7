/**
 * POST /auth/login and the cookie-route guards (docs/contract.md "Browser flow"), on the in-memory store.
 */
import t from 'tap'
import { CONNECTION_TIMEOUT_MS, REQUEST_TIMEOUT_MS } from '#gateway/app.js'
import { buildTestGateway, login, refreshCookieOf, TEST_PASSWORD, TEST_USER } from '../helpers/gateway.js'

t.test('login answers 200 with a bearer token body, no-store, and the refresh cookie', async (t) => {
  const { app, config } = await buildTestGateway(t)
  const { res, body, refresh } = await login(app)
  t.equal(res.statusCode, 200)
  t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'scope', 'token_type'])
  t.equal(body.token_type, 'Bearer')
  t.equal(body.expires_in, config.accessTokenTtlS)
  t.equal(body.scope, 'notes:read notes:write')
  t.match(body.access_token, /^[\w-]+\.[\w-]+\.[\w-]+$/)
  t.equal(res.headers['cache-control'], 'no-store')
  t.match(res.headers['content-type'], /^application\/json/)
  t.ok(refresh, 'refresh cookie set')
  const cookie = refreshCookieOf(res)
  const attrs = (cookie?.attributes ?? '').split('; ')
  t.ok(attrs.includes('HttpOnly'))
  t.ok(attrs.includes('Secure'))
  t.ok(attrs.includes('SameSite=Strict'))
  t.ok(attrs.includes('Path=/auth'))
  // A fresh family's remaining lifetime is its idle TTL (shorter than the absolute limit).
  t.ok(attrs.includes(`Max-Age=${config.refreshIdleTtlS}`), cookie?.attributes ?? 'no cookie')
  t.notOk(JSON.stringify(body).includes(refresh as string), 'refresh token only in the cookie')
})

t.test('COOKIE_SECURE=false drops Secure and keeps the rest', async (t) => {
  const { app } = await buildTestGateway(t, { COOKIE_SECURE: 'false' })
  const { res } = await login(app)
  const attrs = (refreshCookieOf(res)?.attributes ?? '').split('; ')
  t.notOk(attrs.includes('Secure'))
  t.ok(attrs.includes('HttpOnly'))
  t.ok(attrs.includes('SameSite=Strict'))
})

t.test('wrong password and unknown user: same status, same body', async (t) => {
  const { app, logs, rawLogs } = await buildTestGateway(t)
  const wrong = await login(app, TEST_USER, 'not the password')
  const unknown = await login(app, 'nobody-here', 'not the password')
  t.equal(wrong.res.statusCode, 401)
  t.equal(unknown.res.statusCode, 401)
  t.same(wrong.body, { error: 'invalid_grant', error_description: 'Invalid username or password.' })
  t.equal(wrong.res.body, unknown.res.body)
  t.equal(refreshCookieOf(wrong.res), undefined)
  t.equal(logs.filter(l => l.event === 'login_failed').length, 2)
  t.notOk(rawLogs.join('\n').includes('not the password'), 'passwords never logged')
  t.notOk(rawLogs.join('\n').includes(TEST_PASSWORD))
})

t.test('malformed input is a 4xx, never a 5xx', async (t) => {
  const { app } = await buildTestGateway(t)
  const cases: Array<{ name: string, payload: string | Buffer, type?: string, expect?: number }> = [
    { name: 'malformed JSON', payload: '{"username": "alice",' },
    { name: 'empty object', payload: '{}' },
    { name: 'missing password', payload: JSON.stringify({ username: 'alice' }) },
    { name: 'wrong types', payload: JSON.stringify({ username: 1, password: true }) },
    { name: 'array body', payload: '[]' },
    { name: 'null body', payload: 'null' },
    { name: '__proto__', payload: '{"username":"a","password":"b","__proto__":{"admin":true}}', expect: 400 },
    { name: 'constructor.prototype', payload: '{"username":"a","password":"b","constructor":{"prototype":{"x":1}}}', expect: 400 },
    { name: '100 KB username', payload: JSON.stringify({ username: 'a'.repeat(100 * 1024), password: 'x' }) },
    { name: 'non-UTF-8 bytes', payload: Buffer.concat([Buffer.from('{"username":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('","password":"x"}')]) },
    { name: 'text/plain', payload: JSON.stringify({ username: 'alice', password: TEST_PASSWORD }), type: 'text/plain', expect: 415 },
    { name: 'form-encoded', payload: 'username=alice&password=x', type: 'application/x-www-form-urlencoded', expect: 415 }
  ]
  for (const c of cases) {
    const res = await app.inject({ method: 'POST', url: '/auth/login', payload: c.payload, headers: { 'content-type': c.type ?? 'application/json' } })
    t.ok(res.statusCode >= 400 && res.statusCode < 500, `${c.name}: ${res.statusCode}`)
    if (c.expect !== undefined) t.equal(res.statusCode, c.expect, c.name)
    const body = res.json() as Record<string, unknown>
    t.type(body.error, 'string', `${c.name}: error code in body`)
    t.type(body.error_description, 'string')
  }
})

t.test('a 2 MB body is refused with 413', async (t) => {
  const { app } = await buildTestGateway(t)
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: JSON.stringify({ username: 'alice', password: 'x'.repeat(2 * 1024 * 1024) }), headers: { 'content-type': 'application/json' } })
  t.equal(res.statusCode, 413)
  t.equal((res.json() as { error: string }).error, 'invalid_request')
})

t.test('cookie routes refuse cross-site requests with 403 and change nothing', async (t) => {
  const { app } = await buildTestGateway(t, { CORS_ORIGINS: 'https://app.example.com' })
  const first = await login(app)
  const token = first.refresh as string
  const hostile: Array<Record<string, string>> = [
    { origin: 'https://evil.example' },
    { origin: 'null' },
    { 'sec-fetch-site': 'cross-site' },
    { origin: 'http://localhost:8080.evil.example' }
  ]
  for (const headers of hostile) {
    for (const url of ['/auth/login', '/auth/refresh', '/auth/logout']) {
      const res = await app.inject({
        method: 'POST', url, headers: { ...headers, cookie: `lk_refresh=${token}` },
        ...(url === '/auth/login' ? { payload: { username: TEST_USER, password: TEST_PASSWORD } } : {})
      })
      t.equal(res.statusCode, 403, `${url} ${JSON.stringify(headers)}`)
      t.equal((res.json() as { error: string }).error, 'forbidden')
      t.equal(refreshCookieOf(res), undefined, 'no cookie set or cleared')
    }
  }
  // The token was neither rotated nor revoked by any of those: it still rotates now.
  const ok = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `lk_refresh=${token}` } })
  t.equal(ok.statusCode, 200, 'no Origin (curl) is allowed, and the family is intact')
  const own = await login(app, TEST_USER, TEST_PASSWORD, { origin: 'http://localhost:8080', 'sec-fetch-site': 'same-origin' })
  t.equal(own.res.statusCode, 200, 'own origin allowed')
  const listed = await login(app, TEST_USER, TEST_PASSWORD, { origin: 'https://app.example.com', 'sec-fetch-site': 'cross-site' })
  t.equal(listed.res.statusCode, 200, 'CORS_ORIGINS origin allowed')
  t.equal(listed.res.headers['access-control-allow-origin'], 'https://app.example.com')
  t.equal(listed.res.headers['access-control-allow-credentials'], 'true')
  const preflight = await app.inject({ method: 'OPTIONS', url: '/auth/refresh', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' } })
  t.equal(preflight.statusCode, 204)
  t.equal(preflight.headers['access-control-allow-origin'], 'https://app.example.com')
  const evilPreflight = await app.inject({ method: 'OPTIONS', url: '/auth/refresh', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } })
  t.equal(evilPreflight.headers['access-control-allow-origin'], undefined)
})

t.test('GET /auth/refresh is not a route', async (t) => {
  const { app } = await buildTestGateway(t)
  const res = await app.inject({ method: 'GET', url: '/auth/refresh' })
  t.ok(res.statusCode === 404 || res.statusCode === 405)
  t.equal((res.json() as { error: string }).error, 'not_found')
})

t.test('login ignores a refresh cookie and always starts a new family', async (t) => {
  const { app } = await buildTestGateway(t)
  const first = await login(app)
  const second = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: TEST_USER, password: TEST_PASSWORD }, headers: { cookie: `lk_refresh=${first.refresh as string}` } })
  t.equal(second.statusCode, 200)
  const newToken = refreshCookieOf(second)?.value as string
  t.not(newToken, first.refresh)
  t.not(newToken.split('.')[0], (first.refresh as string).split('.')[0], 'a different family handle')
  // Both families live on independently.
  for (const tok of [first.refresh as string, newToken]) {
    const res = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `lk_refresh=${tok}` } })
    t.equal(res.statusCode, 200)
  }
})

t.test('the server sets request and connection timeouts', async (t) => {
  const { app } = await buildTestGateway(t)
  t.equal(app.server.requestTimeout, REQUEST_TIMEOUT_MS)
  t.ok(REQUEST_TIMEOUT_MS > 0)
  t.equal(app.initialConfig.connectionTimeout, CONNECTION_TIMEOUT_MS)
  t.ok(CONNECTION_TIMEOUT_MS > 0)
})
