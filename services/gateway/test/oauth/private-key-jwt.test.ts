/**
 * `private_key_jwt` (RFC 7523 §2.2/§3, OIDC Core §9) driven by oauth4webapi's PrivateKeyJwt:
 * ES256, RS256 and EdDSA keys from an inline JWKS and from a jwks_uri; replays, a wrong
 * audience, an expired or long-lived assertion, a key not in the client's set, `alg: none`
 * and HS256 are all invalid_client. Replays are caught across two gateways sharing Redis.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import * as oauth from 'oauth4webapi'
import { type CryptoKey, type JWK, SignJWT, exportJWK, generateKeyPair } from 'jose'
import { addClient, addKeyClient } from '#gateway/identity/clients-file.js'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { claimsOf, listeningGateway } from '../helpers/listening.js'

const redis = await redisForTest(t)
const insecure = { [oauth.allowInsecureRequests]: true }
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'

interface Pair { privateKey: CryptoKey, publicJwk: JWK }
async function pair (alg: 'ES256' | 'RS256' | 'EdDSA', kid: string): Promise<Pair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  return { privateKey, publicJwk: { ...await exportJWK(publicKey), kid, alg } }
}
const es = await pair('ES256', 'es-1')
const rs = await pair('RS256', 'rs-1')
const ed = await pair('EdDSA', 'ed-1')
const stranger = await pair('ES256', 'es-1') // same kid, not the client's key
const served = await pair('ES256', 'uri-1')

// The jwks_uri host: counts its hits, so the rate limit on refetches is visible.
let jwksHits = 0
const jwksServer = createServer((_req, res) => {
  jwksHits++
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ keys: [served.publicJwk] }))
})
await new Promise<void>(resolve => jwksServer.listen(0, '127.0.0.1', resolve))
t.teardown(() => { jwksServer.close() })
const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`

const dir = t.testdir()
const clientsFile = `${dir}/clients.json`
await addKeyClient(clientsFile, { id: 'pkj', scope: 'internal:read', audiences: ['latchkey-api'], keys: { jwks: { keys: [es.publicJwk, rs.publicJwk, ed.publicJwk] } } })
await addKeyClient(clientsFile, { id: 'pkj-uri', scope: 'internal:read', audiences: ['latchkey-api'], keys: { jwksUri } })
const secretClient = await addClient(clientsFile, { id: 'secret-svc', scope: 'internal:read', audiences: ['latchkey-api'] })

const env = { CLIENTS_FILE: clientsFile, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix }
const gw = await listeningGateway(t, env)
const as = await oauth.processDiscoveryResponse(new URL(gw.base), await oauth.discoveryRequest(new URL(gw.base), { algorithm: 'oauth2', ...insecure }))

/** A ClientAuth that also keeps the form it produced, to replay it. */
function capturing (auth: oauth.ClientAuth): { auth: oauth.ClientAuth, last: () => URLSearchParams } {
  let body = new URLSearchParams()
  return {
    auth: async (server, client, b, headers) => { await auth(server, client, b, headers); body = new URLSearchParams(b) },
    last: () => body
  }
}

async function tokenRequest (form: URLSearchParams, base = gw.base): Promise<{ status: number, body: Record<string, unknown>, headers: Headers }> {
  const res = await fetch(`${base}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form })
  return { status: res.status, body: await res.json() as Record<string, unknown>, headers: res.headers }
}

async function assertion (key: CryptoKey, claims: Record<string, unknown>, header: Record<string, unknown> = { alg: 'ES256', kid: 'es-1' }): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return await new SignJWT({ iss: 'pkj', sub: 'pkj', aud: gw.base, jti: crypto.randomUUID(), iat: now, exp: now + 60, ...claims })
    .setProtectedHeader(header as { alg: string }).sign(key)
}

function form (clientAssertion: string, extra: Record<string, string> = {}): URLSearchParams {
  return new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: clientAssertion, ...extra })
}

t.test('discovery lists private_key_jwt and the accepted algorithms', async (t) => {
  t.ok(as.token_endpoint_auth_methods_supported?.includes('private_key_jwt'))
  t.same(as.token_endpoint_auth_signing_alg_values_supported, ['ES256', 'RS256', 'EdDSA', 'Ed25519'])
  t.notOk(as.token_endpoint_auth_signing_alg_values_supported?.some(a => a === 'none' || a.startsWith('HS')))
})

t.test('oauth4webapi PrivateKeyJwt gets a token with ES256, RS256 and EdDSA keys', async (t) => {
  const client: oauth.Client = { client_id: 'pkj' }
  for (const [name, key] of [['ES256', es], ['RS256', rs], ['EdDSA', ed]] as const) {
    const auth = oauth.PrivateKeyJwt({ key: key.privateKey, kid: key.publicJwk.kid })
    const res = await oauth.clientCredentialsGrantRequest(as, client, auth, { audience: 'latchkey-api' }, insecure)
    const tokens = await oauth.processClientCredentialsResponse(as, client, res)
    const claims = claimsOf(tokens.access_token)
    t.equal(claims.sub, 'pkj', `${name}: sub is the client`)
    t.equal(claims.client_id, 'pkj')
    t.equal(tokens.scope, 'internal:read')
  }
  // EdDSA under its polymorphic name too (what most libraries still write).
  const edAsEdDSA = oauth.PrivateKeyJwt({ key: ed.privateKey, kid: 'ed-1' }, { [oauth.modifyAssertion]: (h) => { h.alg = 'EdDSA' } })
  const res = await oauth.clientCredentialsGrantRequest(as, client, edAsEdDSA, {}, insecure)
  t.equal(res.status, 200, 'alg EdDSA')
})

t.test('the keys can come from a jwks_uri; unknown kids refetch at most once per cooldown', async (t) => {
  const client: oauth.Client = { client_id: 'pkj-uri' }
  const auth = oauth.PrivateKeyJwt({ key: served.privateKey, kid: 'uri-1' })
  for (let i = 0; i < 3; i++) {
    const res = await oauth.clientCredentialsGrantRequest(as, client, auth, {}, insecure)
    t.equal(res.status, 200, `request ${i + 1}`)
  }
  t.equal(jwksHits, 1, 'fetched once, then cached')
  for (let i = 0; i < 5; i++) {
    const bad = await assertion(es.privateKey, { iss: 'pkj-uri', sub: 'pkj-uri' }, { alg: 'ES256', kid: `rotated-${i}` })
    const res = await tokenRequest(form(bad))
    t.equal(res.body.error, 'invalid_client', `unknown kid ${i}: invalid_client`)
  }
  t.ok(jwksHits <= 2, `5 unknown kids cost ${jwksHits - 1} refetch(es), not 5`)
})

t.test('a replayed assertion (same jti) is refused, at this gateway and at another sharing Redis', async (t) => {
  const client: oauth.Client = { client_id: 'pkj' }
  const cap = capturing(oauth.PrivateKeyJwt({ key: es.privateKey, kid: 'es-1' }))
  const res = await oauth.clientCredentialsGrantRequest(as, client, cap.auth, {}, insecure)
  t.equal(res.status, 200)
  const replay = await tokenRequest(cap.last())
  t.equal(replay.status, 401)
  t.equal(replay.body.error, 'invalid_client')
  t.match(replay.headers.get('www-authenticate'), /^Basic /)

  const other = await listeningGateway(t, env)
  const cap2 = capturing(oauth.PrivateKeyJwt({ key: es.privateKey, kid: 'es-1' }))
  t.equal((await oauth.clientCredentialsGrantRequest(as, client, cap2.auth, {}, insecure)).status, 200)
  const elsewhere = await tokenRequest(cap2.last(), other.base)
  t.equal(elsewhere.body.error, 'invalid_client', 'the other replica knows the jti was used')
})

t.test('wrong aud, expired, too long-lived, wrong iss/sub, other key, alg none, HS256: invalid_client', async (t) => {
  const now = Math.floor(Date.now() / 1000)
  const cases: Array<[string, string]> = [
    ['wrong aud', await assertion(es.privateKey, { aud: 'https://elsewhere.example' })],
    ['expired', await assertion(es.privateKey, { iat: now - 600, exp: now - 300 })],
    ['exp an hour ahead', await assertion(es.privateKey, { exp: now + 3600 })],
    ['no jti', await assertion(es.privateKey, { jti: undefined })],
    ['no exp', await assertion(es.privateKey, { exp: undefined })],
    ['iss is another client', await assertion(es.privateKey, { iss: 'pkj-uri' })],
    ['sub is another client', await assertion(es.privateKey, { sub: 'secret-svc' })],
    ['a key not in the JWKS (same kid)', await assertion(stranger.privateKey, {})],
    ['alg none', `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: 'pkj', sub: 'pkj', aud: gw.base, jti: 'n1', exp: now + 60 })).toString('base64url')}.`],
    ['alg none with a signature segment', `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: 'pkj', sub: 'pkj', aud: gw.base, jti: 'n2', exp: now + 60 })).toString('base64url')}.AAAA`],
    ['HS256 keyed with the public key', await assertion(new TextEncoder().encode(JSON.stringify(es.publicJwk)) as unknown as CryptoKey, {}, { alg: 'HS256', kid: 'es-1' })]
  ]
  for (const [name, jwt] of cases) {
    const res = await tokenRequest(form(jwt))
    t.equal(res.status, 401, `${name}: 401`)
    t.equal(res.body.error, 'invalid_client', `${name}: invalid_client`)
  }
  const good = await assertion(es.privateKey, {})
  t.equal((await tokenRequest(form(good))).status, 200, 'the same shape, correctly made, passes')
  t.equal((await tokenRequest(form(await assertion(es.privateKey, { aud: `${gw.base}/oauth/token` })))).status, 200, 'aud = the token endpoint URL passes')
  t.equal((await tokenRequest(form(await assertion(es.privateKey, {}), { client_id: 'pkj-uri' }))).status, 401, 'client_id must name the assertion\'s client')
})

t.test('one method per request; a secret never authenticates a key client', async (t) => {
  const both = form(await assertion(es.privateKey, {}), { client_id: 'secret-svc', client_secret: secretClient.secret })
  t.equal((await tokenRequest(both)).body.error, 'invalid_request', 'assertion + secret')
  const wrongType = form(await assertion(es.privateKey, {}), { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer' })
  t.equal((await tokenRequest(wrongType)).body.error, 'invalid_client', 'another assertion type')
  const basic = await fetch(`${gw.base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('pkj:').toString('base64')}` },
    body: 'grant_type=client_credentials'
  })
  t.equal(basic.status, 401, 'a key client has no secret, not even an empty one')
})

t.test('the revocation endpoint accepts private_key_jwt (aud may be its own URL)', async (t) => {
  const client: oauth.Client = { client_id: 'pkj' }
  const ok = await oauth.revocationRequest(as, client, oauth.PrivateKeyJwt({ key: rs.privateKey, kid: 'rs-1' }), 'not-a-token', insecure)
  t.equal(ok.status, 200)
  const res = await fetch(`${gw.base}/oauth/revoke`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: 'x', client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(es.privateKey, { aud: `${gw.base}/oauth/revoke` }) })
  })
  t.equal(res.status, 200, 'aud = the revocation endpoint URL')
  const bad = await fetch(`${gw.base}/oauth/revoke`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: 'x', client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(stranger.privateKey, {}) })
  })
  t.equal(bad.status, 401)
})

t.test('without Redis, the in-process replay cache refuses a replay too', async (t) => {
  const solo = await listeningGateway(t, { CLIENTS_FILE: clientsFile })
  const jwt = await new SignJWT({ iss: 'pkj', sub: 'pkj', aud: solo.base, jti: 'solo-1', exp: Math.floor(Date.now() / 1000) + 60 })
    .setProtectedHeader({ alg: 'ES256', kid: 'es-1' }).sign(es.privateKey)
  t.equal((await tokenRequest(form(jwt), solo.base)).status, 200)
  t.equal((await tokenRequest(form(jwt), solo.base)).body.error, 'invalid_client')
})
