/**
 * The shared ServiceTokenSource against a running gateway with each client authentication
 * method (secret, private_key_jwt, a federated token file that rotates) and token exchange:
 * tokens come back, are cached, one request serves concurrent callers, and the token file
 * is read again for each request.
 */
import { writeFile } from 'node:fs/promises'
import t from 'tap'
import { type JWK, SignJWT, exportJWK, generateKeyPair } from 'jose'
import { isLatchkeyError } from '#shared/errors.js'
import { ServiceTokenSource } from '#shared/service-token-source.js'
import { addClient, addKeyClient } from '#gateway/identity/clients-file.js'
import { login } from '../helpers/gateway.js'
import { claimsOf, listeningGateway } from '../helpers/listening.js'

const CLUSTER = 'https://oidc.cluster.test'
const SUBJECT = 'system:serviceaccount:apps:reporter'
const clientKey = await generateKeyPair('ES256', { extractable: true })
const clusterKey = await generateKeyPair('RS256', { extractable: true })
const clusterJwk: JWK = { ...await exportJWK(clusterKey.publicKey), kid: 'sa-1', alg: 'RS256' }

const dir = t.testdir()
const clientsFile = `${dir}/clients.json`
const secretClient = await addClient(clientsFile, { id: 'svc-secret', scope: 'internal:read', audiences: ['latchkey-api'], exchangeAudiences: ['billing'] })
await addKeyClient(clientsFile, {
  id: 'svc-key', scope: 'internal:read', audiences: ['latchkey-api'], exchangeAudiences: ['billing'],
  keys: { jwks: { keys: [{ ...await exportJWK(clientKey.publicKey), kid: 'k1' }] } }
})
await addKeyClient(clientsFile, { id: 'svc-fed', scope: 'internal:read', audiences: ['latchkey-api'], keys: { federated: { issuer: CLUSTER, subject: SUBJECT, jwks: { keys: [clusterJwk] } } } })
const gw = await listeningGateway(t, { CLIENTS_FILE: clientsFile })
const tokenUrl = `${gw.base}/oauth/token`

async function projectedToken (claims: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return await new SignJWT({ iss: CLUSTER, sub: SUBJECT, aud: [gw.base], iat: now, exp: now + 600, jti: crypto.randomUUID(), ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: 'sa-1' }).sign(clusterKey.privateKey)
}

t.test('client_secret_basic', async (t) => {
  const source = new ServiceTokenSource({ tokenUrl, clientId: 'svc-secret', clientSecret: secretClient.secret, audience: 'latchkey-api' })
  const token = await source.getToken()
  t.equal(claimsOf(token).sub, 'svc-secret')
  t.equal(await source.getToken(), token, 'cached')
})

t.test('private_key_jwt: a fresh assertion per request, one request for concurrent callers', async (t) => {
  const source = new ServiceTokenSource({ tokenUrl, clientId: 'svc-key', audience: 'latchkey-api', auth: { method: 'private_key_jwt', privateKey: clientKey.privateKey, alg: 'ES256', kid: 'k1' } })
  const all = await Promise.all(Array.from({ length: 10 }, async () => await source.getToken()))
  t.equal(new Set(all).size, 1, 'ten callers, one token (each issued token has its own jti)')
  t.equal(claimsOf(all[0] as string).sub, 'svc-key')
  source.invalidate()
  const next = await source.getToken()
  t.not(next, all[0], 'a second request: its assertion was not a replay')
})

t.test('federated: the projected token file is read again for each request', async (t) => {
  const file = `${dir}/token`
  await writeFile(file, `${await projectedToken()}\n`)
  const source = new ServiceTokenSource({ tokenUrl, clientId: 'svc-fed', audience: 'latchkey-api', auth: { method: 'federated', tokenFile: file } })
  t.equal(claimsOf(await source.getToken()).sub, 'svc-fed')
  // The kubelet rotated the file to a token the gateway refuses (another subject): seen.
  await writeFile(file, await projectedToken({ sub: 'system:serviceaccount:apps:other' }))
  source.invalidate()
  const err = await source.getToken().then(() => undefined, (e: unknown) => e)
  t.ok(isLatchkeyError(err) && err.code === 'ST_REJECTED', 'the new file was used')
  t.notMatch(String((err as Error).message), /eyJ/, 'no token in the error')
  await writeFile(file, await projectedToken())
  t.equal(claimsOf(await source.getToken()).sub, 'svc-fed', 'and the next rotation too')
  const missing = new ServiceTokenSource({ tokenUrl, clientId: 'svc-fed', audience: 'latchkey-api', auth: { method: 'federated', tokenFile: `${dir}/absent` } })
  await t.rejects(missing.getToken(), { code: 'ST_UNAVAILABLE' })
})

t.test('exchange: a user token for another audience, cached per user token, single-flight', async (t) => {
  const { body } = await login(gw.app)
  const userToken = body.access_token as string
  for (const [name, source] of [
    ['secret', new ServiceTokenSource({ tokenUrl, clientId: 'svc-secret', clientSecret: secretClient.secret, audience: 'latchkey-api' })],
    ['private_key_jwt', new ServiceTokenSource({ tokenUrl, clientId: 'svc-key', audience: 'latchkey-api', auth: { method: 'private_key_jwt', privateKey: clientKey.privateKey, alg: 'ES256', kid: 'k1' } })]
  ] as const) {
    const all = await Promise.all(Array.from({ length: 5 }, async () => await source.exchange(userToken, { audience: 'billing', scope: 'notes:read' })))
    t.equal(new Set(all).size, 1, `${name}: one exchange for concurrent callers`)
    const claims = claimsOf(all[0] as string)
    t.equal(claims.sub, claimsOf(userToken).sub, `${name}: the user`)
    t.same(claims.act, { sub: name === 'secret' ? 'svc-secret' : 'svc-key' })
    t.equal(claims.aud, 'billing')
    t.equal(await source.exchange(userToken, { audience: 'billing', scope: 'notes:read' }), all[0], `${name}: cached`)
    t.not(await source.exchange(userToken, { audience: 'billing' }), all[0], `${name}: another scope is another token`)
    await t.rejects(source.exchange(userToken, { audience: 'ledger' }), { code: 'ST_REJECTED' }, `${name}: an audience outside the policy`)
  }
})
