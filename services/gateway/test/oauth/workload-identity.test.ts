/**
 * Workload identity (federated client credentials): a test issuer, a tiny HTTP server
 * serving its OIDC discovery document and JWKS, signs Kubernetes-service-account-shaped
 * tokens; a client entry trusts it for one subject. The right subject gets a token (the
 * same token again, too: projected tokens are reused until the kubelet rotates them);
 * another subject, another issuer, a wrong audience or an expired token → invalid_client.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import * as oauth from 'oauth4webapi'
import { type CryptoKey, type JWK, SignJWT, exportJWK, generateKeyPair } from 'jose'
import { addKeyClient } from '#gateway/identity/clients-file.js'
import { claimsOf, listeningGateway } from '../helpers/listening.js'

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
const SUBJECT = 'system:serviceaccount:apps:reporter'

interface TestIssuer { url: string, key: CryptoKey, hits: { discovery: number, jwks: number } }

/** An OIDC issuer as a cluster's service-account issuer publishes itself. */
async function testIssuer (): Promise<TestIssuer> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true })
  const jwk: JWK = { ...await exportJWK(publicKey), kid: 'sa-key-1', alg: 'RS256', use: 'sig' }
  const hits = { discovery: 0, jwks: 0 }
  let url = ''
  const server: Server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json')
    if (req.url === '/.well-known/openid-configuration') {
      hits.discovery++
      res.end(JSON.stringify({ issuer: url, jwks_uri: `${url}/openid/v1/jwks`, response_types_supported: ['id_token'], subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['RS256'] }))
    } else if (req.url === '/openid/v1/jwks') {
      hits.jwks++
      res.end(JSON.stringify({ keys: [jwk] }))
    } else {
      res.statusCode = 404
      res.end('{}')
    }
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { url, key: privateKey, hits }
}

const cluster = await testIssuer()
const otherCluster = await testIssuer()

const dir = t.testdir()
const clientsFile = `${dir}/clients.json`
await addKeyClient(clientsFile, { id: 'reporter', scope: 'internal:read', audiences: ['latchkey-api'], keys: { federated: { issuer: cluster.url, subject: SUBJECT } } })
await addKeyClient(clientsFile, {
  id: 'explicit', scope: 'internal:read', audiences: ['latchkey-api'],
  keys: { federated: { issuer: otherCluster.url, subject: 'system:serviceaccount:apps:explicit', jwksUri: `${otherCluster.url}/openid/v1/jwks` } }
})
const gw = await listeningGateway(t, { CLIENTS_FILE: clientsFile })

/** A projected service-account token, as the kubelet writes it (claims of Kubernetes 1.29+). */
async function saToken (issuer: TestIssuer, claims: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return await new SignJWT({
    iss: issuer.url,
    sub: SUBJECT,
    aud: [gw.base],
    iat: now,
    nbf: now,
    exp: now + 3600,
    jti: crypto.randomUUID(),
    'kubernetes.io': { namespace: 'apps', serviceaccount: { name: 'reporter', uid: crypto.randomUUID() }, pod: { name: 'reporter-0', uid: crypto.randomUUID() } },
    ...claims
  }).setProtectedHeader({ alg: 'RS256', kid: 'sa-key-1' }).sign(issuer.key)
}

async function exchangeForToken (assertion: string, extra: Record<string, string> = {}): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(`${gw.base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: assertion, ...extra })
  })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

t.test('the trusted subject gets a token, found by discovery; the same token works again', async (t) => {
  const token = await saToken(cluster)
  const first = await exchangeForToken(token)
  t.equal(first.status, 200, JSON.stringify(first.body))
  const claims = claimsOf(first.body.access_token as string)
  t.equal(claims.sub, 'reporter', 'the token is the client\'s, not the service account\'s')
  t.equal(claims.client_id, 'reporter')
  t.equal(claims.scope, 'internal:read')
  t.equal((await exchangeForToken(token)).status, 200, 'not single-use: the kubelet reuses it until rotation')
  t.equal((await exchangeForToken(token, { client_id: 'reporter' })).status, 200, 'with client_id too')
  t.equal(cluster.hits.discovery, 1, 'discovery asked once')
  t.equal(cluster.hits.jwks, 1, 'keys fetched once')
})

t.test('with an explicit jwks_uri no discovery is needed', async (t) => {
  const token = await saToken(otherCluster, { sub: 'system:serviceaccount:apps:explicit' })
  t.equal((await exchangeForToken(token)).status, 200)
  t.equal(otherCluster.hits.discovery, 0)
})

t.test('another subject, another issuer, a wrong audience, expired, or too long-lived: invalid_client', async (t) => {
  const now = Math.floor(Date.now() / 1000)
  const cases: Array<[string, string, Record<string, string>?]> = [
    ['another subject', await saToken(cluster, { sub: 'system:serviceaccount:apps:intruder' })],
    ['another subject, naming the client', await saToken(cluster, { sub: 'system:serviceaccount:apps:intruder' }), { client_id: 'reporter' }],
    ['another issuer (same subject, its own valid keys)', await saToken(otherCluster)],
    ['another issuer, naming the client', await saToken(otherCluster), { client_id: 'reporter' }],
    ['claims the trusted issuer, signed by another', await saToken({ ...otherCluster, url: cluster.url })],
    ['the cluster API server as audience', await saToken(cluster, { aud: ['https://kubernetes.default.svc.cluster.local'] })],
    ['expired', await saToken(cluster, { iat: now - 7200, nbf: now - 7200, exp: now - 3600 })],
    ['a year-long token', await saToken(cluster, { exp: now + 365 * 86400 })]
  ]
  for (const [name, token, extra] of cases) {
    const res = await exchangeForToken(token, extra)
    t.equal(res.status, 401, `${name}: 401`)
    t.equal(res.body.error, 'invalid_client', `${name}: invalid_client`)
  }
})

t.test('an issuer that cannot be reached: 503, not invalid_client', async (t) => {
  const gone = await testIssuer()
  const goneFile = `${dir}/gone.json`
  await addKeyClient(goneFile, { id: 'gone', scope: '', audiences: ['latchkey-api'], keys: { federated: { issuer: 'http://127.0.0.1:9', subject: SUBJECT } } })
  const other = await listeningGateway(t, { CLIENTS_FILE: goneFile })
  const res = await fetch(`${other.base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: await saToken({ ...gone, url: 'http://127.0.0.1:9' }, { aud: other.base }) })
  })
  t.equal(res.status, 503)
  t.equal((await res.json() as Record<string, unknown>).error, 'temporarily_unavailable')
})

t.test('oauth4webapi: a custom ClientAuth sending the projected token', async (t) => {
  const as = await oauth.processDiscoveryResponse(new URL(gw.base), await oauth.discoveryRequest(new URL(gw.base), { algorithm: 'oauth2', [oauth.allowInsecureRequests]: true }))
  const token = await saToken(cluster)
  const auth: oauth.ClientAuth = (_as, _client, body) => {
    body.set('client_assertion_type', ASSERTION_TYPE)
    body.set('client_assertion', token)
  }
  const client: oauth.Client = { client_id: 'reporter' }
  const res = await oauth.clientCredentialsGrantRequest(as, client, auth, { audience: 'latchkey-api' }, { [oauth.allowInsecureRequests]: true })
  const tokens = await oauth.processClientCredentialsResponse(as, client, res)
  t.equal(claimsOf(tokens.access_token).sub, 'reporter')
})
