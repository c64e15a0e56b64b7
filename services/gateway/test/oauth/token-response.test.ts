/**
 * Token answers (RFC 6749 §5.1) are written by Fastify's response serializer from
 * TOKEN_RESPONSE_SCHEMA: every field of a body reaches the client, escaped where it must be,
 * the access token as issued; no-store and Pragma on each; JSON with a charset.
 */
import t from 'tap'
import Fastify from 'fastify'
import { TOKEN_RESPONSE_SCHEMA } from '#gateway/auth/token-response.js'
import type { ExchangedTokenBody } from '#gateway/oauth/token-exchange.js'
import { buildTestGateway } from '../helpers/gateway.js'
import { claimsOf, testClients } from '../helpers/listening.js'

const clients = await testClients()
const FORM = 'application/x-www-form-urlencoded'
const basic = (id: string, secret: string): string => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
/** JWS compact serialisation (RFC 7515 §7.1): three base64url segments. */
const JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

t.test('the schema writes every field of a token body, escaping all but the access token', async t => {
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  const body: ExchangedTokenBody = {
    access_token: 'aGVhZGVy.cGF5bG9hZA.c2ln',
    token_type: 'Bearer',
    expires_in: 300,
    scope: 'a "quoted" \\ scope\u2028',
    refresh_token: 'r"t\n',
    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token'
  }
  app.get('/', { schema: { response: { 200: TOKEN_RESPONSE_SCHEMA } } }, async () => body)
  const res = await app.inject('/')
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  t.same(res.json(), body, 'every field, each value as given')
  t.equal(res.body, JSON.stringify(body), 'the same text JSON.stringify writes')
})

t.test('each grant answers exactly its fields, as JSON, not to be cached', async t => {
  const gw = await buildTestGateway(t, { CLIENTS_FILE: clients.file })
  const token = async (auth: string, payload: string): Promise<Record<string, unknown>> => {
    const res = await gw.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': FORM, authorization: auth }, payload })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
    t.equal(res.headers['cache-control'], 'no-store', 'RFC 6749 §5.1')
    t.equal(res.headers.pragma, 'no-cache', 'RFC 6749 §5.1')
    const body = res.json() as Record<string, unknown>
    t.equal(res.body, JSON.stringify(body), 'plain JSON, nothing but the fields')
    t.match(body.access_token, JWS)
    return body
  }
  const service = await token(basic('svc-a', clients.secrets['svc-a'] as string), 'grant_type=client_credentials&scope=notes:read&audience=billing')
  t.same(Object.keys(service), ['access_token', 'token_type', 'expires_in', 'scope'])
  t.match(service, { token_type: 'Bearer', expires_in: Number, scope: 'notes:read' })
  t.match(claimsOf(service.access_token as string), { sub: 'svc-a', aud: 'billing', client_id: 'svc-a', scope: 'notes:read' })

  const web = basic('web', clients.secrets.web as string)
  const user = await token(web, `grant_type=password&username=alice&password=${encodeURIComponent(gw.password)}`)
  t.same(Object.keys(user), ['access_token', 'token_type', 'expires_in', 'scope', 'refresh_token'])
  const rotated = await token(web, `grant_type=refresh_token&refresh_token=${user.refresh_token as string}`)
  t.same(Object.keys(rotated), ['access_token', 'token_type', 'expires_in', 'scope', 'refresh_token'])
  t.not(rotated.refresh_token, user.refresh_token)
})
