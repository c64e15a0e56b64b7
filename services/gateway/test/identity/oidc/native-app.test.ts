/**
 * A native app without the password grant (RFC 8252, RFC 9700 §2.4), end to end: the app is
 * openid-client (a client latchkey did not write) with no secret, its redirect target a
 * loopback HTTP server on whatever port the OS gave it, the person signs in at a real
 * OpenID Provider (oidc-provider, started here). Code → tokens → the proxy accepts the
 * access token → refresh rotates → the replayed old refresh token is reuse and kills the
 * family. Refusals: a wrong code_verifier, no PKCE (or plain), an unregistered redirect
 * URI, and a code presented twice (which also revokes what it started). And the password
 * page, for a person in USERS_FILE: the same code flow, still no password grant.
 */
import t, { type Test } from 'tap'
import { createServer } from 'node:http'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as client from 'openid-client'
import { decodeJwt } from 'jose'
import { freePort } from '../../../../../test/helpers/redis.js'
import { buildTestGateway, TEST_PASSWORD, TEST_USER } from '../../helpers/gateway.js'
import { BrowserJar, startTestIdp } from './test-idp.js'

const IDP_CLIENT = { clientId: 'latchkey', clientSecret: 'a-test-client-secret-of-decent-length' }
const APP = 'notes-app'

const api = createServer((_req, res) => { res.end('{}') })
await new Promise<void>(resolve => api.listen(0, '127.0.0.1', resolve))
t.teardown(() => new Promise(resolve => api.close(resolve)))

// The app's loopback redirect target (RFC 8252 §7.3): records what the browser brings back.
const arrivals: URL[] = []
const loopback = createServer((req, res) => {
  arrivals.push(new URL(req.url ?? '/', `http://127.0.0.1:${(loopback.address() as { port: number }).port}`))
  res.end('You can close this window.')
})
await new Promise<void>(resolve => loopback.listen(0, '127.0.0.1', resolve))
t.teardown(() => new Promise(resolve => loopback.close(resolve)))
const redirectUri = `http://127.0.0.1:${(loopback.address() as { port: number }).port}/callback`

const port = await freePort()
const gw = `http://127.0.0.1:${port}`
const idp = await startTestIdp(t, [{ ...IDP_CLIENT, redirectUris: [`${gw}/auth/oidc/test/callback`] }], {
  alice: { email: 'alice@example.com', name: 'Alice', groups: ['eng'] },
  mallory: { email: 'mallory@elsewhere.test', name: 'Mallory', groups: [] }
})

const dir = mkdtempSync(join(tmpdir(), 'lk-native-'))
const routesFile = join(dir, 'routes.json')
const clientsFile = join(dir, 'clients.json')
writeFileSync(routesFile, JSON.stringify([{ prefix: '/api/', upstream: `http://127.0.0.1:${(api.address() as { port: number }).port}`, audience: 'latchkey-api', scopes: ['notes:read'] }]))
writeFileSync(clientsFile, JSON.stringify({
  clients: [{
    id: APP,
    public: true,
    scope: 'notes:read notes:write',
    audiences: ['latchkey-api'],
    grants: ['authorization_code', 'refresh_token'],
    // Registered without a port: any port on the loopback matches (RFC 8252 §7.3).
    redirect_uris: ['http://127.0.0.1/callback', 'com.example.notes:/oauth']
  }]
}))
const gateway = await buildTestGateway(t, {
  ISSUER: gw,
  COOKIE_SECURE: 'false',
  ROUTES_FILE: routesFile,
  CLIENTS_FILE: clientsFile,
  // No grace: a replayed refresh token is reuse at once.
  REFRESH_REUSE_GRACE: '0',
  PROVIDERS_JSON: JSON.stringify({
    providers: [{
      id: 'test',
      issuer: idp.issuer,
      client_id: IDP_CLIENT.clientId,
      client_secret: IDP_CLIENT.clientSecret,
      scopes: ['openid', 'email', 'profile', 'groups'],
      allow: [{ group: 'eng', scopes: ['notes:read', 'notes:write'] }]
    }]
  })
})
await gateway.app.listen({ port, host: '127.0.0.1' })

// The app: openid-client as a public client (no secret: `none`, RFC 8252 §8.4).
const app = await client.discovery(new URL(gw), APP, undefined, client.None(), { algorithm: 'oauth2', execute: [client.allowInsecureRequests] })

interface Started { url: URL, verifier: string, state: string }

async function authorizationUrl (extra: Record<string, string> = {}): Promise<Started> {
  const verifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const url = client.buildAuthorizationUrl(app, {
    redirect_uri: redirectUri, scope: 'notes:read', state, code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', ...extra
  })
  return { url, verifier, state }
}

/** The person signs in through the browser; the loopback server receives the answer. */
async function signIn (started: Started, login = 'alice'): Promise<URL> {
  const jar = new BrowserJar()
  const back = await jar.signInAtIdp(started.url.href, redirectUri, login)
  await fetch(back)
  const arrived = arrivals.at(-1)
  if (arrived === undefined) throw new Error('nothing reached the loopback redirect')
  return arrived
}

async function redeem (form: Record<string, string>): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(`${gw}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'authorization_code', client_id: APP, redirect_uri: redirectUri, ...form }) })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

/** The RFC 6749 §5.2 error of a refresh the app attempts ('' if it succeeds). */
async function refreshError (refreshToken: string): Promise<string> {
  try {
    await client.refreshTokenGrant(app, refreshToken)
    return ''
  } catch (err) {
    return (err as { error?: string }).error ?? String(err)
  }
}

async function proxied (token: string): Promise<number> {
  return (await fetch(`${gw}/api/notes`, { headers: { authorization: `Bearer ${token}` } })).status
}

t.test('code → tokens → the proxy accepts → refresh rotates → the replayed refresh token is reuse', async (t) => {
  const started = await authorizationUrl()
  t.equal(started.url.href.startsWith(`${gw}/oauth/authorize?`), true, 'the app found the authorization endpoint by discovery')
  const arrived = await signIn(started)
  t.equal(arrived.searchParams.get('iss'), gw, 'RFC 9207 iss')
  const tokens = await client.authorizationCodeGrant(app, arrived, { pkceCodeVerifier: started.verifier, expectedState: started.state })
  t.equal(tokens.scope, 'notes:read', 'the scope asked for, within client and mapping')
  const claims = decodeJwt(tokens.access_token)
  t.equal(claims.sub, 'test:alice')
  t.equal(claims.client_id, APP, 'the family is the app\'s')
  t.equal(await proxied(tokens.access_token), 200)
  const first = tokens.refresh_token as string
  t.ok(first)

  const refreshed = await client.refreshTokenGrant(app, first)
  t.not(refreshed.refresh_token, first, 'rotated')
  t.equal(await proxied(refreshed.access_token), 200)

  t.equal(await refreshError(first), 'invalid_grant', 'the replayed predecessor is refused')
  t.equal(await refreshError(refreshed.refresh_token as string), 'invalid_grant', 'and the whole family is dead')
  t.equal(await proxied(refreshed.access_token), 401, 'its access token too, at the proxy')

  const logs = gateway.rawLogs.join('\n')
  t.notOk(logs.includes(arrived.searchParams.get('code') as string), 'the code never reaches a log line')
})

t.test('a wrong code_verifier is invalid_grant, and the code is spent', async (t) => {
  const started = await authorizationUrl()
  const code = (await signIn(started)).searchParams.get('code') as string
  const wrong = await redeem({ code, code_verifier: client.randomPKCECodeVerifier() })
  t.equal(wrong.status, 400)
  t.equal(wrong.body.error, 'invalid_grant')
  const right = await redeem({ code, code_verifier: started.verifier })
  t.equal(right.body.error, 'invalid_grant', 'not retried with the right one')
  t.equal((await redeem({ code: 'x'.repeat(43), code_verifier: started.verifier })).body.error, 'invalid_grant', 'an unknown code')
})

t.test('a code presented twice: refused, and the family it started is revoked', async (t) => {
  const started = await authorizationUrl()
  const code = (await signIn(started)).searchParams.get('code') as string
  const first = await redeem({ code, code_verifier: started.verifier })
  t.equal(first.status, 200)
  const again = await redeem({ code, code_verifier: started.verifier })
  t.equal(again.body.error, 'invalid_grant')
  t.equal(await proxied(first.body.access_token as string), 401, 'the access token from the first redemption is dead')
  t.equal(await refreshError(first.body.refresh_token as string), 'invalid_grant', 'and its refresh token')
  t.ok(gateway.logs.some(l => l.event === 'session_revoked' && l.reason === 'code_replay'))
})

t.test('the redirect_uri must be the one the code was issued for', async (t) => {
  const started = await authorizationUrl()
  const code = (await signIn(started)).searchParams.get('code') as string
  const res = await redeem({ code, code_verifier: started.verifier, redirect_uri: 'http://127.0.0.1:1/callback' })
  t.equal(res.body.error, 'invalid_grant')
})

async function authorize (t: Test, params: Record<string, string>): Promise<Response> {
  const res = await fetch(`${gw}/oauth/authorize?${new URLSearchParams(params).toString()}`, { redirect: 'manual' })
  t.ok(res.status === 303 || res.status === 302 || res.status === 400, `answered ${res.status}`)
  return res
}

t.test('no PKCE, or plain: refused back at the app, no sign-in', async (t) => {
  const base = { response_type: 'code', client_id: APP, redirect_uri: redirectUri, state: 's1', scope: 'notes:read' }
  const extras: Array<Record<string, string>> = [{}, { code_challenge: 'a'.repeat(43), code_challenge_method: 'plain' }, { code_challenge: 'a'.repeat(43) }]
  for (const extra of extras) {
    const res = await authorize(t, { ...base, ...extra })
    const to = new URL(res.headers.get('location') as string)
    t.equal(`${to.origin}${to.pathname}`, redirectUri, 'to the app')
    t.equal(to.searchParams.get('error'), 'invalid_request')
    t.equal(to.searchParams.get('state'), 's1')
  }
  const scope = await authorize(t, { ...base, scope: 'admin', code_challenge: 'a'.repeat(43), code_challenge_method: 'S256' })
  t.equal(new URL(scope.headers.get('location') as string).searchParams.get('error'), 'invalid_scope')
})

t.test('an unregistered redirect_uri or an unknown client: 400, never redirected', async (t) => {
  const good = { response_type: 'code', client_id: APP, redirect_uri: redirectUri, code_challenge: 'a'.repeat(43), code_challenge_method: 'S256' }
  for (const bad of [
    { redirect_uri: 'https://evil.example/callback' },
    { redirect_uri: redirectUri.replace('127.0.0.1', 'localhost') },
    { redirect_uri: redirectUri.replace('/callback', '/other') },
    { redirect_uri: `${redirectUri}#frag` },
    { client_id: 'nobody' }
  ]) {
    const res = await authorize(t, { ...good, ...bad })
    t.equal(res.status, 400, JSON.stringify(bad))
    t.equal(res.headers.get('location'), null, 'no redirect')
  }
  // A person's browser gets a page that says why (RFC 6749 §4.1.2.1: inform the resource owner);
  // an app or a script asking for JSON keeps the error shape.
  const query = new URLSearchParams({ ...good, redirect_uri: 'https://evil.example/<b>' }).toString()
  const page = await fetch(`${gw}/oauth/authorize?${query}`, { redirect: 'manual', headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } })
  t.equal(page.status, 400, 'a browser: still 400')
  t.match(page.headers.get('content-type'), /^text\/html/, 'a page')
  t.match(page.headers.get('content-security-policy'), /default-src 'none'/, 'that runs nothing')
  const html = await page.text()
  t.match(html, /redirect_uri it did not register; not redirected\./, 'saying why')
  t.notMatch(html, /<b>/, 'echoing nothing unescaped')
  const json = await fetch(`${gw}/oauth/authorize?${query}`, { redirect: 'manual', headers: { accept: 'application/json' } })
  t.match(await json.json(), { error: 'invalid_request' }, 'JSON for a caller that asks for it')
  const ok = await authorize(t, { ...good, redirect_uri: redirectUri.replace(/:\d+\//, ':65000/') })
  t.equal(ok.status, 302, 'another loopback port is the same registration')
  t.equal(new URL(ok.headers.get('location') as string).origin, idp.issuer, 'off to the IdP')
})

t.test('a person the mapping refuses: access_denied at the app, no code', async (t) => {
  const started = await authorizationUrl()
  const arrived = await signIn(started, 'mallory')
  t.equal(arrived.searchParams.get('error'), 'access_denied')
  t.equal(arrived.searchParams.get('code'), null)
  t.equal(arrived.searchParams.get('state'), started.state)
})

t.test('a public client cannot use the password grant or introspect', async (t) => {
  const pw = await fetch(`${gw}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'password', client_id: APP, username: 'alice', password: 'x' }) })
  t.equal((await pw.json() as { error: string }).error, 'unauthorized_client')
  const intro = await fetch(`${gw}/oauth/introspect`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ client_id: APP, token: 'x' }) })
  t.equal(intro.status, 401)
})

t.test('the password page: a USERS_FILE user signs in in the browser, the app gets a code (no password grant)', async (t) => {
  const started = await authorizationUrl({ provider: 'password' })
  const jar = new BrowserJar()
  const page = await jar.fetch(started.url.href)
  t.equal(page.status, 200)
  t.match(page.headers.get('content-security-policy'), /frame-ancestors 'none'/)
  t.equal(page.headers.get('x-frame-options'), 'DENY')
  const html = await page.text()
  t.match(html, /<form method="post" action="\/oauth\/authorize">/)
  t.match(html, /Sign in with test</, 'a link per identity provider')
  t.notMatch(html, /<script/i)

  const post = async (form: Record<string, string>, origin = gw): Promise<Response> => await jar.fetch(`${gw}/oauth/authorize`, { form, headers: { origin } })
  const wrong = await post({ username: TEST_USER, password: 'not-the-password' })
  t.equal(wrong.status, 401)
  t.match(await wrong.text(), /Wrong username or password/)
  t.equal((await post({ username: TEST_USER, password: TEST_PASSWORD }, 'https://evil.example')).status, 403, 'a cross-site form post is refused')

  const ok = await post({ username: TEST_USER, password: TEST_PASSWORD })
  t.equal(ok.status, 303)
  const back = new URL(ok.headers.get('location') as string)
  t.equal(`${back.origin}${back.pathname}`, redirectUri)
  const tokens = await client.authorizationCodeGrant(app, back, { pkceCodeVerifier: started.verifier, expectedState: started.state })
  const claims = decodeJwt(tokens.access_token)
  t.notMatch(String(claims.sub), /^test:/, 'a USERS_FILE user, not a federated one')
  t.equal(claims.client_id, APP)
  t.equal(tokens.scope, 'notes:read')
  const refreshed = await client.refreshTokenGrant(app, tokens.refresh_token as string)
  t.not(refreshed.refresh_token, tokens.refresh_token, 'an ordinary family: it rotates')
  t.equal(await proxied(refreshed.access_token), 200)

  t.equal((await post({ username: TEST_USER, password: TEST_PASSWORD })).status, 400, 'the page\'s request is used up')
  const noCookie = await fetch(`${gw}/oauth/authorize`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: gw }, body: `username=${TEST_USER}&password=x`, redirect: 'manual' })
  t.equal(noCookie.status, 400, 'no page, no sign-in (login CSRF)')
  t.notOk(gateway.rawLogs.join('\n').includes(TEST_PASSWORD), 'the password never reaches a log line')
})
