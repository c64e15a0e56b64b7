/**
 * Sign-in through a real OpenID Provider (oidc-provider, started here): start → the IdP's
 * login and consent pages → callback → `lk_refresh` → refresh rotates → the proxy accepts
 * the access token with the scopes the provider mapping gave. Then every refusal: a wrong
 * or replayed state, a nonce, issuer or audience the ID token should not have, the IdP's
 * own error, a user the mapping refuses, and a return_to on a foreign origin. None of them
 * may end in a session.
 */
import t, { type Test } from 'tap'
import { createServer } from 'node:http'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { decodeJwt } from 'jose'
import { freePort } from '../../../../../test/helpers/redis.js'
import { buildTestGateway } from '../../helpers/gateway.js'
import { BrowserJar, startTestIdp } from './test-idp.js'

const CLIENT = { clientId: 'latchkey', clientSecret: 'a-test-client-secret-of-decent-length' }
const ALLOWED_ORIGIN = 'http://app.example.test'

const upstream = createServer((req, res) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ path: req.url, authorization: req.headers.authorization ?? null }))
})
await new Promise<void>(resolve => upstream.listen(0, '127.0.0.1', resolve))
t.teardown(() => new Promise(resolve => upstream.close(resolve)))
const upstreamPort = (upstream.address() as { port: number }).port

const port = await freePort()
const gw = `http://127.0.0.1:${port}`
const callback = `${gw}/auth/oidc/test/callback`
const idp = await startTestIdp(t, [{ ...CLIENT, redirectUris: [callback] }], {
  alice: { email: 'alice@example.com', name: 'Alice', groups: ['eng'] },
  mallory: { email: 'mallory@elsewhere.test', name: 'Mallory', groups: ['sales'] }
})

const dir = mkdtempSync(join(tmpdir(), 'lk-oidc-'))
const routesFile = join(dir, 'routes.json')
writeFileSync(routesFile, JSON.stringify([{ prefix: '/api/', upstream: `http://127.0.0.1:${upstreamPort}`, audience: 'latchkey-api', scopes: ['notes:write'] }]))
const providers = {
  providers: [{
    id: 'test',
    name: 'Test IdP',
    issuer: idp.issuer,
    client_id: CLIENT.clientId,
    client_secret: CLIENT.clientSecret,
    scopes: ['openid', 'email', 'profile', 'groups'],
    allow: [
      { group: 'eng', scopes: ['notes:read', 'notes:write'] },
      { email_domain: 'example.com', scopes: ['notes:read'] }
    ]
  }]
}
const gateway = await buildTestGateway(t, {
  ISSUER: gw,
  COOKIE_SECURE: 'false',
  CORS_ORIGINS: ALLOWED_ORIGIN,
  ROUTES_FILE: routesFile,
  PROVIDERS_JSON: JSON.stringify(providers)
})
await gateway.app.listen({ port, host: '127.0.0.1' })

const start = `${gw}/auth/oidc/test/start`

async function expectNoSession (t: Test, res: Response, status: number, error: string): Promise<void> {
  t.equal(res.status, status)
  t.notOk(res.headers.getSetCookie().some(c => c.startsWith('lk_refresh=') && !c.startsWith('lk_refresh=;')), 'no refresh cookie')
  const body = await res.json() as { error: string }
  t.equal(body.error, error)
}

t.test('start → IdP login → callback → lk_refresh → refresh rotates → the proxy accepts the mapped scopes', async (t) => {
  const jar = new BrowserJar()
  const back = await jar.signInAtIdp(`${start}?return_to=/notes`, callback, 'alice')
  const cb = new URL(back)
  t.ok(cb.searchParams.get('code'), 'the IdP sent a code')
  const res = await jar.fetch(back)
  t.equal(res.status, 303)
  t.equal(res.headers.get('location'), `${gw}/notes`, 'back to return_to')
  const line = res.headers.getSetCookie().find(c => c.startsWith('lk_refresh='))
  t.match(line, /HttpOnly/i)
  t.match(line, /SameSite=Strict/i)
  t.match(line, /Path=\/auth/)
  const first = jar.cookie(gw, 'lk_refresh')
  t.ok(first, 'lk_refresh set')

  const r1 = await jar.fetch(`${gw}/auth/refresh`, { method: 'POST' })
  t.equal(r1.status, 200)
  const body = await r1.json() as { access_token: string, scope: string }
  t.not(jar.cookie(gw, 'lk_refresh'), first, 'rotated')
  t.equal(body.scope, 'notes:read notes:write', 'the union of the matching rules')
  const claims = decodeJwt(body.access_token)
  t.equal(claims.sub, 'test:alice', 'user id = prefix + sub')

  const proxied = await fetch(`${gw}/api/notes`, { headers: { authorization: `Bearer ${body.access_token}` } })
  t.equal(proxied.status, 200, 'the proxy accepts it (route needs notes:write)')
  t.equal((await proxied.json() as { authorization: string }).authorization, `Bearer ${body.access_token}`)

  const logs = gateway.rawLogs.join('\n')
  t.notOk(logs.includes(cb.searchParams.get('code') as string), 'the authorization code never reaches a log line')
  t.notOk(logs.includes(first as string), 'nor the refresh token')
  t.ok(logs.includes('/auth/oidc/test/callback?[redacted]'), 'the callback is logged without its query')

  const sessions = await fetch(`${gw}/auth/sessions`, { headers: { authorization: `Bearer ${body.access_token}` } })
  const list = await sessions.json() as Array<{ provider?: string, current: boolean }>
  t.equal(list.length, 1)
  t.equal(list[0]?.provider, 'test', 'the session list shows the provider')

  // The replayed refresh token now revokes the family, as for any family.
  const replay = await fetch(`${gw}/auth/refresh`, { method: 'POST', headers: { cookie: `lk_refresh=${first as string}` } })
  t.equal(replay.status, 200, 'inside the reuse grace the predecessor gets the successor')
})

t.test('an IdP account with no email and no groups matches no rule: no session', async (t) => {
  const jar = new BrowserJar()
  const res = await jar.fetch(await jar.signInAtIdp(start, callback, 'carol'))
  // carol has no email or groups at the IdP: no rule matches.
  await expectNoSession(t, res, 403, 'access_denied')
})

t.test('a claim the mapping denies: no session', async (t) => {
  const jar = new BrowserJar()
  const res = await jar.fetch(await jar.signInAtIdp(start, callback, 'mallory'))
  await expectNoSession(t, res, 403, 'access_denied')
  t.equal(jar.cookie(gw, 'lk_refresh'), undefined)
})

t.test('wrong state: refused before the code is spent', async (t) => {
  const jar = new BrowserJar()
  const back = new URL(await jar.signInAtIdp(start, callback, 'alice'))
  back.searchParams.set('state', 'not-the-state-we-sent')
  await expectNoSession(t, await jar.fetch(back.href), 400, 'invalid_request')

  const other = new BrowserJar()
  const back2 = await other.signInAtIdp(start, callback, 'alice')
  await expectNoSession(t, await new BrowserJar().fetch(back2), 400, 'invalid_request')
})

t.test('a replayed callback gets no second session, even with the state cookie put back', async (t) => {
  const jar = new BrowserJar()
  const back = await jar.signInAtIdp(start, callback, 'alice')
  const state = new URL(back).searchParams.get('state') as string
  t.equal((await jar.fetch(back)).status, 303)
  await expectNoSession(t, await jar.fetch(back), 400, 'invalid_request')
  const replay = await fetch(back, { redirect: 'manual', headers: { cookie: `lk_oidc=${state}` } })
  await expectNoSession(t, replay, 400, 'invalid_request')
})

t.test('ID token with another nonce, issuer or audience: no session', async (t) => {
  const cases: Array<[string, (c: Record<string, unknown>) => Record<string, unknown>]> = [
    ['nonce', c => ({ ...c, nonce: 'another-nonce' })],
    ['issuer', c => ({ ...c, iss: 'http://127.0.0.1:1/other-issuer' })],
    ['audience', c => ({ ...c, aud: 'another-client' })]
  ]
  for (const [what, fn] of cases) {
    const jar = new BrowserJar()
    const back = await jar.signInAtIdp(start, callback, 'alice')
    idp.tamperNextIdToken(fn)
    const res = await jar.fetch(back)
    t.equal(res.status, 400, what)
    t.equal((await res.json() as { error: string }).error, 'invalid_request', what)
    t.equal(jar.cookie(gw, 'lk_refresh'), undefined, `${what}: no session`)
  }
})

t.test('the IdP refuses: its error is shown, no session', async (t) => {
  const jar = new BrowserJar()
  const started = await jar.fetch(start)
  const state = new URL(started.headers.get('location') as string).searchParams.get('state') as string
  const res = await jar.fetch(`${callback}?error=access_denied&state=${state}&iss=${encodeURIComponent(idp.issuer)}`)
  t.equal(res.status, 400)
  t.match(await res.json(), { error: 'access_denied', error_description: /access_denied/ })
})

t.test('the authorization request uses PKCE S256, state and nonce', async (t) => {
  const res = await new BrowserJar().fetch(start)
  t.equal(res.status, 302)
  const url = new URL(res.headers.get('location') as string)
  t.equal(url.origin, idp.issuer)
  t.equal(url.searchParams.get('code_challenge_method'), 'S256')
  t.match(url.searchParams.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/)
  t.ok(url.searchParams.get('state'))
  t.ok(url.searchParams.get('nonce'))
  t.equal(url.searchParams.get('redirect_uri'), callback)
  t.match(res.headers.getSetCookie().find(c => c.startsWith('lk_oidc=')), /HttpOnly.*SameSite=Lax|SameSite=Lax.*HttpOnly/i)
})

t.test('return_to: own origin or CORS_ORIGINS only', async (t) => {
  for (const bad of ['https://evil.example/', '//evil.example/x', '/\\evil.example', 'javascript:alert(1)', 'http://user@127.0.0.1:1/']) {
    const res = await new BrowserJar().fetch(`${start}?return_to=${encodeURIComponent(bad)}`)
    t.equal(res.status, 400, bad)
    t.equal(res.headers.get('location'), null, `${bad}: no redirect`)
  }
  const ok = await new BrowserJar().fetch(`${start}?return_to=${encodeURIComponent(`${ALLOWED_ORIGIN}/app`)}`)
  t.equal(ok.status, 302, 'an origin in CORS_ORIGINS is allowed')

  const jar = new BrowserJar()
  const res = await jar.fetch(await jar.signInAtIdp(`${start}?return_to=${encodeURIComponent(`${ALLOWED_ORIGIN}/app`)}`, callback, 'alice'))
  t.equal(res.headers.get('location'), `${ALLOWED_ORIGIN}/app`)
})

t.test('an unknown provider is 404', async (t) => {
  const res = await fetch(`${gw}/auth/oidc/nope/start`, { redirect: 'manual' })
  t.equal(res.status, 404)
})
