/**
 * Token exchange (RFC 8693) driven by oauth4webapi's genericTokenEndpointRequest (its generic grant request): a user's token
 * exchanged for another audience with a narrower scope carries `act`, keeps `sub`/`sid`
 * and never outlives the subject token; a chain nests `act`; a wider scope, an audience
 * the policy does not list, a client without a policy, a bad subject token → the RFC
 * errors. After the user logs out at replica A, the exchanged token is refused by the
 * proxy of replica B (two gateway apps, one real redis-server) within 1 s.
 */
import { writeFileSync } from 'node:fs'
import t from 'tap'
import * as oauth from 'oauth4webapi'
import { addClient } from '#gateway/identity/clients-file.js'
import { loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { buildTestGateway, login } from '../helpers/gateway.js'
import { claimsOf, listeningGateway } from '../helpers/listening.js'
import { echoUpstream } from '../proxy/harness.js'

const redis = await redisForTest(t)
const insecure = { [oauth.allowInsecureRequests]: true }
const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange'
const AT = 'urn:ietf:params:oauth:token-type:access_token'

const dir = t.testdir()
const clientsFile = `${dir}/clients.json`
const frontend = await addClient(clientsFile, { id: 'frontend', scope: '', audiences: ['latchkey-api'], exchangeAudiences: ['billing'] })
const billing = await addClient(clientsFile, { id: 'billing-svc', scope: '', audiences: ['billing'], exchangeAudiences: ['ledger'] })
const plain = await addClient(clientsFile, { id: 'plain', scope: 'internal:read', audiences: ['latchkey-api'] })
const upstream = await echoUpstream(t)
const routesFile = `${dir}/routes.json`
writeFileSync(routesFile, JSON.stringify([
  { prefix: '/api/', upstream: upstream.url, audience: 'latchkey-api' },
  { prefix: '/billing/', upstream: upstream.url, audience: 'billing', scopes: ['notes:read'] }
]))
const keys = await loadSigningKeys(undefined, { warn: () => {} })
const env = { CLIENTS_FILE: clientsFile, ROUTES_FILE: routesFile, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, ACCESS_TOKEN_TTL: '300' }
const a = await listeningGateway(t, env, { keys })
// Replica B: same issuer, same keys, same Redis.
const b = await buildTestGateway(t, { ...env, ISSUER: a.base }, { keys })
const as = await oauth.processDiscoveryResponse(new URL(a.base), await oauth.discoveryRequest(new URL(a.base), { algorithm: 'oauth2', ...insecure }))

async function exchange (clientId: string, secret: string, params: Record<string, string>): Promise<Response> {
  return await oauth.genericTokenEndpointRequest(as, { client_id: clientId }, oauth.ClientSecretBasic(secret), GRANT, new URLSearchParams(params), insecure)
}

async function oauthError (res: Response): Promise<oauth.ResponseBodyError> {
  return await oauth.processGenericTokenEndpointResponse(as, { client_id: 'x' }, res).then(() => { throw new Error('expected an error') }, (e: unknown) => e as oauth.ResponseBodyError)
}

async function userToken (): Promise<{ token: string, refresh: string }> {
  const { body, refresh } = await login(a.app)
  return { token: body.access_token as string, refresh: refresh as string }
}

t.test('discovery lists the grant', async (t) => {
  t.ok(as.grant_types_supported?.includes(GRANT))
})

t.test('narrowed scope and a new audience: act added, sub and sid kept, no later expiry', async (t) => {
  const user = await userToken()
  const subject = claimsOf(user.token)
  const res = await exchange('frontend', frontend.secret, { subject_token: user.token, subject_token_type: AT, audience: 'billing', scope: 'notes:read' })
  t.equal(res.headers.get('cache-control'), 'no-store')
  const body = await oauth.processGenericTokenEndpointResponse(as, { client_id: 'frontend' }, res)
  t.equal(body.issued_token_type, AT)
  t.equal(body.token_type, 'bearer')
  t.equal(body.scope, 'notes:read')
  const claims = claimsOf(body.access_token)
  t.equal(claims.sub, subject.sub, 'the user')
  t.equal(claims.sid, subject.sid, 'the user\'s session')
  t.equal(claims.aud, 'billing')
  t.equal(claims.client_id, 'frontend')
  t.same(claims.act, { sub: 'frontend' })
  t.ok((claims.exp as number) <= (subject.exp as number), 'lives no longer than the subject token')
  t.equal(claims.iss, a.base)

  // The billing service exchanges it on, into the ledger: the chain nests.
  const hop = await exchange('billing-svc', billing.secret, { subject_token: body.access_token, subject_token_type: AT, resource: 'ledger' })
  const second = claimsOf((await oauth.processGenericTokenEndpointResponse(as, { client_id: 'billing-svc' }, hop)).access_token)
  t.same(second.act, { sub: 'billing-svc', act: { sub: 'frontend' } })
  t.equal(second.scope, 'notes:read', 'no scope asked: the subject token\'s')
  t.equal(second.sid, subject.sid)

  // The proxy of the other replica admits it for the billing route.
  const proxied = await b.app.inject({ method: 'GET', url: '/billing/x', headers: { authorization: `Bearer ${body.access_token}` } })
  t.equal(proxied.statusCode, 200)
})

t.test('refusals: invalid_scope, invalid_target, unauthorized_client, invalid_request', async (t) => {
  const user = await userToken()
  const base = { subject_token: user.token, subject_token_type: AT }
  const cases: Array<[string, Response, string]> = [
    ['a wider scope', await exchange('frontend', frontend.secret, { ...base, audience: 'billing', scope: 'notes:read admin' }), 'invalid_scope'],
    ['an audience not in the policy', await exchange('frontend', frontend.secret, { ...base, audience: 'ledger' }), 'invalid_target'],
    ['the client\'s own audience (not in its exchange policy)', await exchange('frontend', frontend.secret, { ...base, audience: 'latchkey-api' }), 'invalid_target'],
    ['a client without an exchange policy', await exchange('plain', plain.secret, { ...base, audience: 'billing' }), 'unauthorized_client'],
    ['a token not meant for this client (aud latchkey-api, client of billing)', await exchange('billing-svc', billing.secret, { ...base, audience: 'ledger' }), 'invalid_request'],
    ['a garbage subject token', await exchange('frontend', frontend.secret, { subject_token: 'x.y.z', subject_token_type: AT, audience: 'billing' }), 'invalid_request'],
    ['a refresh token type', await exchange('frontend', frontend.secret, { ...base, subject_token_type: 'urn:ietf:params:oauth:token-type:refresh_token', audience: 'billing' }), 'invalid_request'],
    ['an actor token', await exchange('frontend', frontend.secret, { ...base, actor_token: user.token, actor_token_type: AT, audience: 'billing' }), 'invalid_request'],
    ['no subject token', await exchange('frontend', frontend.secret, { subject_token_type: AT, audience: 'billing' }), 'invalid_request']
  ]
  for (const [name, res, error] of cases) {
    t.equal((await oauthError(res)).error, error, name)
  }
  const svc = await oauth.processClientCredentialsResponse(as, { client_id: 'plain' },
    await oauth.clientCredentialsGrantRequest(as, { client_id: 'plain' }, oauth.ClientSecretBasic(plain.secret), {}, insecure))
  t.equal((await oauthError(await exchange('frontend', frontend.secret, { subject_token: svc.access_token, subject_token_type: AT, audience: 'billing' }))).error,
    'invalid_request', 'a service token (no session) is not exchanged')
  const anonymous = await fetch(`${a.base}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: GRANT, ...base, audience: 'billing' }) })
  t.equal(anonymous.status, 401, 'no client authentication: invalid_client')
})

t.test('after the user logs out at A, the exchanged token is refused by B\'s proxy within 1 s', async (t) => {
  const user = await userToken()
  const body = await oauth.processGenericTokenEndpointResponse(as, { client_id: 'frontend' },
    await exchange('frontend', frontend.secret, { subject_token: user.token, subject_token_type: AT, audience: 'billing' }))
  const call = async (): Promise<number> => (await b.app.inject({ method: 'GET', url: '/billing/y', headers: { authorization: `Bearer ${body.access_token}` } })).statusCode
  t.equal(await call(), 200, 'admitted before logout')
  const out = await a.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: `lk_refresh=${user.refresh}` } })
  t.equal(out.statusCode, 204)
  const loggedOutAt = Date.now()
  let status = await call()
  while (status === 200 && Date.now() - loggedOutAt < 1000) {
    await new Promise(resolve => setTimeout(resolve, 20))
    status = await call()
  }
  t.equal(status, 401, `refused at B ${Date.now() - loggedOutAt} ms after logout`)
  t.equal((await oauthError(await exchange('frontend', frontend.secret, { subject_token: user.token, subject_token_type: AT, audience: 'billing' }))).error,
    'invalid_request', 'and the logged-out subject token is not exchanged any more')
})
