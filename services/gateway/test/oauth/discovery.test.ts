/**
 * RFC 8414 metadata tells the truth: the algorithms listed are those of the published keys
 * (ES256 by default, EdDSA for an existing EdDSA key file, all of them mid-rotation), the
 * scopes are those the gateway can grant, response_types_supported is code (the authorization endpoint), and the
 * public cache header is not contradicted by `Pragma: no-cache`.
 */
import t from 'tap'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import { loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { claimsOf, listeningGateway, testClients } from '../helpers/listening.js'
import { generateKeyFile, tempDir } from '../keys/helpers.js'

const clients = await testClients()
const insecure = { [oauth.allowInsecureRequests]: true }
const silent = { warn: () => {} }

async function discover (base: string): Promise<{ as: oauth.AuthorizationServer, headers: Headers }> {
  const issuer = new URL(base)
  const res = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure })
  const headers = res.headers
  return { as: await oauth.processDiscoveryResponse(issuer, res), headers }
}

function headerOf (jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[0] as string, 'base64url').toString()) as Record<string, unknown>
}

t.test('no key file: an ephemeral ES256 key signs, and only ES256 is listed', async (t) => {
  const gw = await listeningGateway(t, { CLIENTS_FILE: clients.file })
  const { as, headers } = await discover(gw.base)
  t.same(as.access_token_signing_alg_values_supported, ['ES256'])
  t.same(as.response_types_supported, ['code'], 'the authorization endpoint answers with a code only')
  t.equal(as.authorization_endpoint, `${gw.base}/oauth/authorize`)
  t.same(as.code_challenge_methods_supported, ['S256'])
  t.equal(as.introspection_endpoint, `${gw.base}/oauth/introspect`)
  t.same([...as.introspection_endpoint_auth_methods_supported ?? [], 'none'], as.token_endpoint_auth_methods_supported, 'the token endpoint\'s methods, less none (public clients)')
  t.same(as.introspection_endpoint_auth_signing_alg_values_supported, as.token_endpoint_auth_signing_alg_values_supported)
  t.same(as.scopes_supported, ['internal:read', 'notes:read', 'notes:write'], 'users\' and clients\' scopes')
  t.equal(headers.get('cache-control'), 'public, max-age=300')
  t.equal(headers.get('pragma'), null, 'no Pragma: no-cache beside a public cache header')
  const res = await fetch(`${gw.base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'svc-b', client_secret: clients.secrets.svc_b as string })
  })
  const token = (await res.json() as { access_token: string }).access_token
  t.equal(headerOf(token).alg, 'ES256', 'the default key is ES256')
  const jwks = await (await fetch(`${gw.base}/.well-known/jwks.json`)).json() as { keys: Array<{ alg: string, kty: string, crv: string }> }
  t.same(jwks.keys.map(k => [k.alg, k.kty, k.crv]), [['ES256', 'EC', 'P-256']])
})

t.test('an existing EdDSA key file keeps working; a rotation lists every published alg', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'keys.json')
  await generateKeyFile(file, 'EdDSA')
  const ed = await listeningGateway(t, { CLIENTS_FILE: clients.file, SIGNING_KEYS_FILE: file })
  t.same((await discover(ed.base)).as.access_token_signing_alg_values_supported, ['EdDSA'])
  const login = await fetch(`${ed.base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: ed.password }) })
  const token = (await login.json() as { access_token: string }).access_token
  t.equal(headerOf(token).alg, 'EdDSA', 'an EdDSA file still signs EdDSA')
  t.equal(headerOf(token).kid, (await loadSigningKeys(file, silent)).signing.kid)
  t.type(claimsOf(token).sid, 'string')

  await generateKeyFile(file, 'ES256', '--append')
  await generateKeyFile(file, 'RS256', '--append')
  const rotating = await listeningGateway(t, { CLIENTS_FILE: clients.file, SIGNING_KEYS_FILE: file })
  t.same((await discover(rotating.base)).as.access_token_signing_alg_values_supported, ['EdDSA', 'ES256', 'RS256'])
})
