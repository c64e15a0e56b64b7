/**
 * Standards fixes found with real clients, each checked with oauth4webapi where it applies:
 * RFC 7009 §2.1/§2.2 revocation semantics, RFC 6749 §5.2 error shapes (JSON and oversized
 * bodies, rate limiting, 405 with Allow), RFC 8707 audience checks on every grant and a
 * repeated `resource`, invalid_client on client_secret_post without a Basic challenge, and
 * Fastify's own pre-routing 400s in the JSON error shape without the URL echoed.
 */
import t from 'tap'
import * as oauth from 'oauth4webapi'
import { listeningGateway, testClients, type ListeningGateway } from '../helpers/listening.js'

const clients = await testClients()
const insecure = { [oauth.allowInsecureRequests]: true }
const FORM = 'application/x-www-form-urlencoded'
const web: oauth.Client = { client_id: 'web' }
const svcA: oauth.Client = { client_id: 'svc-a' }
const webAuth = oauth.ClientSecretBasic(clients.secrets.web as string)
const svcAAuth = oauth.ClientSecretBasic(clients.secrets['svc-a'] as string)

async function discover (base: string): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(base)
  return await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
}

async function passwordGrant (as: oauth.AuthorizationServer, params: Record<string, string> = {}, gw?: ListeningGateway): Promise<Response> {
  return await oauth.genericTokenEndpointRequest(as, web, webAuth, 'password', new URLSearchParams({ username: 'alice', password: gw?.password ?? 'x', ...params }), insecure)
}

async function bodyError (promise: Promise<unknown>): Promise<oauth.ResponseBodyError> {
  const err = await promise.then(() => undefined, (e: unknown) => e)
  if (!(err instanceof oauth.ResponseBodyError)) throw new Error(`expected a ResponseBodyError, got ${String(err)}`)
  return err
}

t.test('RFC 7009: another client\'s token is refused (§2.1); invalid tokens get 200 (§2.2)', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  const as = await discover(gw.base)
  const tokens = await oauth.processGenericTokenEndpointResponse(as, web, await passwordGrant(as, {}, gw))
  const refresh = tokens.refresh_token as string

  const other = await bodyError(oauth.processRevocationResponse(await oauth.revocationRequest(as, svcA, svcAAuth, refresh, insecure)))
  t.equal(other.status, 400)
  t.equal(other.error, 'unauthorized_client', 'a token of another client')
  const anonymous = await fetch(`${gw.base}/oauth/revoke`, { method: 'POST', headers: { 'content-type': FORM }, body: new URLSearchParams({ token: refresh }) })
  t.equal(anonymous.status, 401, 'a confidential client\'s token without its authentication')
  t.equal((await anonymous.json() as { error: string }).error, 'invalid_client')
  t.equal((await oauth.processRefreshTokenResponse(as, web, await oauth.refreshTokenGrantRequest(as, web, webAuth, refresh, insecure))).token_type, 'bearer', 'neither refusal revoked the family')

  for (const invalid of ['garbage', 'a.b.c', 'eyJhbGciOiJub25lIn0.e30.', `${tokens.access_token}x`, 'x'.repeat(300)]) {
    const res = await oauth.revocationRequest(as, web, webAuth, invalid, insecure)
    t.equal(res.status, 200, `invalid token ${JSON.stringify(invalid.slice(0, 20))}: 200`)
    t.equal(await oauth.processRevocationResponse(res), undefined)
  }
  const hinted = await oauth.revocationRequest(as, web, webAuth, 'a.b.c', { ...insecure, additionalParameters: { token_type_hint: 'access_token' } })
  t.equal(hinted.status, 200, 'an invalid string hinted as an access token: 200 too')
  const live = await bodyError(oauth.processRevocationResponse(await oauth.revocationRequest(as, web, webAuth, tokens.access_token, insecure)))
  t.equal(live.error, 'unsupported_token_type', 'a live access token cannot be revoked by itself (§2.2.1)')
})

t.test('RFC 6749 §5.2 shapes: JSON and oversized bodies, rate limiting, 405 with Allow', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file, LOGIN_MAX_ATTEMPTS_PER_USER: '2' })
  const as = await discover(gw.base)
  for (const path of ['/oauth/token', '/oauth/revoke', '/oauth/introspect']) {
    const json = await fetch(`${gw.base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"grant_type":"client_credentials"}' })
    t.equal(json.status, 400, `${path}: JSON body → 400`)
    t.equal((await json.json() as { error: string }).error, 'invalid_request')
    t.equal(json.headers.get('cache-control'), 'no-store')
    const big = await fetch(`${gw.base}${path}`, { method: 'POST', headers: { 'content-type': FORM }, body: `grant_type=client_credentials&x=${'a'.repeat(20_000)}` })
    t.equal(big.status, 400, `${path}: oversized body → 400`)
    t.equal((await big.json() as { error: string }).error, 'invalid_request')
    const get = await fetch(`${gw.base}${path}`)
    t.equal(get.status, 405, `GET ${path} → 405`)
    t.equal(get.headers.get('allow'), 'POST')
    t.equal((await get.json() as { error: string }).error, 'invalid_request')
  }
  t.equal((await fetch(`${gw.base}/oauth/nothing`)).status, 404, 'other paths stay 404')

  for (let i = 0; i < 2; i++) t.equal((await passwordGrant(as, { password: 'wrong' })).status, 400)
  const limited = await passwordGrant(as, { password: 'wrong' })
  t.equal(limited.status, 429)
  t.ok(Number(limited.headers.get('retry-after')) >= 1, 'Retry-After')
  const err = await bodyError(oauth.processGenericTokenEndpointResponse(as, web, limited))
  t.equal(err.error, 'temporarily_unavailable', 'a registered error code oauth4webapi reads as an OAuth error')
  t.type(err.cause.error_description, 'string')
})

t.test('RFC 8707: resource/audience checked on every grant; a repeated resource as §2 allows', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  const as = await discover(gw.base)
  const unknownTarget = await bodyError(oauth.processGenericTokenEndpointResponse(as, web, await passwordGrant(as, { resource: 'https://payroll.example' }, gw)))
  t.equal(unknownTarget.error, 'invalid_target', 'password grant, unknown resource')
  t.equal((await bodyError(oauth.processGenericTokenEndpointResponse(as, web, await passwordGrant(as, { audience: 'billing' }, gw)))).error, 'invalid_target', 'password grant, audience of another client')
  const ok = await oauth.processGenericTokenEndpointResponse(as, web, await passwordGrant(as, { resource: 'latchkey-api' }, gw))
  t.type(ok.refresh_token, 'string', 'password grant, the user-token audience')

  const refused = await bodyError(oauth.processRefreshTokenResponse(as, web, await oauth.refreshTokenGrantRequest(as, web, webAuth, ok.refresh_token as string, { ...insecure, additionalParameters: { resource: 'billing' } })))
  t.equal(refused.error, 'invalid_target', 'refresh grant, another resource')
  const rotated = await oauth.processRefreshTokenResponse(as, web, await oauth.refreshTokenGrantRequest(as, web, webAuth, ok.refresh_token as string, { ...insecure, additionalParameters: { audience: 'latchkey-api' } }))
  t.type(rotated.refresh_token, 'string', 'the refused request did not use up the refresh token')

  const twice = await oauth.processClientCredentialsResponse(as, svcA, await oauth.clientCredentialsGrantRequest(as, svcA, svcAAuth, new URLSearchParams([['resource', 'billing'], ['resource', 'billing']]), insecure))
  t.type(twice.access_token, 'string', 'the same resource twice is one resource')
  const two = await bodyError(oauth.processClientCredentialsResponse(as, svcA, await oauth.clientCredentialsGrantRequest(as, svcA, svcAAuth, new URLSearchParams([['resource', 'billing'], ['resource', 'latchkey-api']]), insecure)))
  t.equal(two.error, 'invalid_target', 'two resources cannot share one token')
})

t.test('invalid_client on client_secret_post reaches oauth4webapi as invalid_client (no Basic challenge)', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  const as = await discover(gw.base)
  const res = await oauth.clientCredentialsGrantRequest(as, svcA, oauth.ClientSecretPost('wrong'), {}, insecure)
  t.equal(res.status, 401)
  t.equal(res.headers.get('www-authenticate'), null)
  t.equal((await bodyError(oauth.processClientCredentialsResponse(as, svcA, res))).error, 'invalid_client')
  const basic = await oauth.clientCredentialsGrantRequest(as, svcA, oauth.ClientSecretBasic('wrong'), {}, insecure)
  t.match(basic.headers.get('www-authenticate'), /^Basic /, 'HTTP Basic still gets its challenge (§5.2)')
})

t.test('Fastify\'s pre-routing 400s: the JSON error shape, the URL not echoed', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  for (const url of ['/%%', '/oauth/%zz<script>', '/api/%E0%A4%A']) {
    const res = await gw.app.inject({ method: 'GET', url })
    t.equal(res.statusCode, 400, url)
    t.same(res.json(), { error: 'invalid_request', error_description: 'The request URL is malformed.' })
    t.notOk(res.body.includes('%'), 'no part of the URL in the body')
  }
})
