/**
 * The OAuth endpoints driven by oauth4webapi, an unmodified standards-following client:
 * discovery (RFC 8414), client_credentials with both auth methods, the refresh_token
 * grant with rotation, and revocation (RFC 7009).
 */
import t from 'tap'
import * as oauth from 'oauth4webapi'
import { ManualClock } from '#shared/clock.js'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { claimsOf, listeningGateway, testClients } from '../helpers/listening.js'

const redis = await redisForTest(t)
const clients = await testClients()
const insecure = { [oauth.allowInsecureRequests]: true }

async function discover (base: string): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(base)
  return oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
}

t.test('discovery passes processDiscoveryResponse and lists what docs/contract.md names', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  const as = await discover(gw.base)
  t.equal(as.issuer, gw.base)
  t.equal(as.token_endpoint, `${gw.base}/oauth/token`)
  t.equal(as.jwks_uri, `${gw.base}/.well-known/jwks.json`)
  t.equal(as.revocation_endpoint, `${gw.base}/oauth/revoke`)
  t.same(as.grant_types_supported, ['authorization_code', 'refresh_token', 'client_credentials', 'password', 'urn:ietf:params:oauth:grant-type:token-exchange'])
  t.same(as.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'])
})

t.test('client_credentials with HTTP Basic and with client_secret_post', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  const as = await discover(gw.base)
  const client: oauth.Client = { client_id: 'svc-a' }
  for (const [name, auth] of [['basic', oauth.ClientSecretBasic(clients.secrets['svc-a'] as string)], ['post', oauth.ClientSecretPost(clients.secrets['svc-a'] as string)]] as const) {
    const res = await oauth.clientCredentialsGrantRequest(as, client, auth, { audience: 'billing', scope: 'internal:read' }, insecure)
    t.equal(res.headers.get('cache-control'), 'no-store', `${name}: no-store`)
    const tokens = await oauth.processClientCredentialsResponse(as, client, res)
    t.equal(tokens.token_type, 'bearer')
    t.equal(tokens.scope, 'internal:read', `${name}: scope narrowed`)
    t.equal(tokens.refresh_token, undefined, 'no refresh token for client_credentials')
    const claims = claimsOf(tokens.access_token)
    t.equal(claims.sub, 'svc-a', 'sub = client id')
    t.equal(claims.client_id, 'svc-a')
    t.equal(claims.aud, 'billing', 'the requested audience')
    t.equal(claims.scope, 'internal:read')
    t.equal(claims.sid, undefined, 'service tokens carry no sid')
    t.equal(claims.iss, gw.base)
  }
  const byResource = await oauth.processClientCredentialsResponse(as, client,
    await oauth.clientCredentialsGrantRequest(as, client, oauth.ClientSecretBasic(clients.secrets['svc-a'] as string), { resource: 'latchkey-api' }, insecure))
  t.equal(claimsOf(byResource.access_token).aud, 'latchkey-api', 'RFC 8707 resource picks the audience')
  t.equal(byResource.scope, 'internal:read notes:read', 'no scope asked: all the client\'s scopes')
})

t.test('password grant, then refresh_token grant with rotation, then revocation', async (t) => {
  const clock = new ManualClock(Date.now())
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix }, { clock })
  const as = await discover(gw.base)
  const client: oauth.Client = { client_id: 'web' }
  const auth = oauth.ClientSecretBasic(clients.secrets.web as string)

  // oauth4webapi has no password-grant helper (the grant is deprecated); a plain form POST.
  const pw = await fetch(`${gw.base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`web:${clients.secrets.web as string}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'password', username: 'alice', password: gw.password, scope: 'notes:read' })
  })
  t.equal(pw.status, 200)
  t.equal(pw.headers.get('cache-control'), 'no-store')
  const first = await pw.json() as { refresh_token: string, access_token: string, scope: string }
  t.equal(first.scope, 'notes:read')
  t.equal(claimsOf(first.access_token).client_id, 'web')
  t.type(claimsOf(first.access_token).sid, 'string')

  const rotated = await oauth.processRefreshTokenResponse(as, client, await oauth.refreshTokenGrantRequest(as, client, auth, first.refresh_token, insecure))
  t.type(rotated.refresh_token, 'string')
  t.not(rotated.refresh_token, first.refresh_token, 'rotated')
  t.equal(claimsOf(rotated.access_token).sid, claimsOf(first.access_token).sid, 'same family')

  clock.advance(60_000)
  const replay = await oauth.refreshTokenGrantRequest(as, client, auth, first.refresh_token, insecure)
  const replayErr = await oauth.processRefreshTokenResponse(as, client, replay).catch((e: unknown) => e) as oauth.ResponseBodyError
  t.ok(replayErr instanceof oauth.ResponseBodyError, 'replay after grace is an OAuth error')
  t.equal(replayErr.error, 'invalid_grant')
  t.equal(replayErr.status, 400)

  // The replay revoked the family; a fresh one for the revocation test.
  const pw2 = await (await fetch(`${gw.base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: 'alice', password: gw.password, client_id: 'web', client_secret: clients.secrets.web as string })
  })).json() as { refresh_token: string }
  const revoke = await oauth.revocationRequest(as, client, auth, pw2.refresh_token, insecure)
  t.equal(revoke.status, 200)
  t.equal(await oauth.processRevocationResponse(revoke), undefined)
  const after = await oauth.refreshTokenGrantRequest(as, client, auth, pw2.refresh_token, insecure)
  const afterErr = await oauth.processRefreshTokenResponse(as, client, after).catch((e: unknown) => e) as oauth.ResponseBodyError
  t.equal(afterErr.error, 'invalid_grant', 'revoked token refused')
  t.equal((await oauth.revocationRequest(as, client, auth, 'no-such-token', insecure)).status, 200, 'unknown tokens: 200 too')
})
