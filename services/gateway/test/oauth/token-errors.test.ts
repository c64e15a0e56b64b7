/**
 * Every RFC 6749 §5.2 / RFC 7009 / RFC 8707 error case of the OAuth endpoints: status,
 * `error` code, headers, and that no token is ever issued on the way.
 */
import t from 'tap'
import { buildTestGateway, login } from '../helpers/gateway.js'
import { testClients } from '../helpers/listening.js'

const clients = await testClients()
const basic = (id: string, secret: string): string => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`
const FORM = 'application/x-www-form-urlencoded'

t.test('token endpoint errors', async (t) => {
  const gw = await buildTestGateway(t, { CLIENTS_FILE: clients.file })
  const svcA = basic('svc-a', clients.secrets['svc-a'] as string)
  const web = basic('web', clients.secrets.web as string)
  const cases: Array<{ name: string, body: string, auth?: string, type?: string, status: number, error: string, basicChallenge?: boolean }> = [
    { name: 'no grant_type', body: 'scope=x', auth: svcA, status: 400, error: 'invalid_request' },
    { name: 'unknown grant_type', body: 'grant_type=implicit', auth: svcA, status: 400, error: 'unsupported_grant_type' },
    { name: 'authorization_code for a client not allowed it', body: 'grant_type=authorization_code&code=x', auth: svcA, status: 400, error: 'unauthorized_client' },
    { name: 'repeated parameter', body: 'grant_type=client_credentials&scope=a&scope=b', auth: svcA, status: 400, error: 'invalid_request' },
    { name: 'client_credentials without client auth', body: 'grant_type=client_credentials', status: 401, error: 'invalid_client', basicChallenge: true },
    { name: 'wrong secret (Basic)', body: 'grant_type=client_credentials', auth: basic('svc-a', 'wrong'), status: 401, error: 'invalid_client', basicChallenge: true },
    { name: 'unknown client (Basic)', body: 'grant_type=client_credentials', auth: basic('nobody', 'x'), status: 401, error: 'invalid_client', basicChallenge: true },
    { name: 'malformed Basic header', body: 'grant_type=client_credentials', auth: 'Basic !!!', status: 401, error: 'invalid_client', basicChallenge: true },
    { name: 'wrong secret (post): no Basic challenge', body: 'grant_type=client_credentials&client_id=svc-a&client_secret=wrong', status: 401, error: 'invalid_client' },
    { name: 'two auth methods at once', body: `grant_type=client_credentials&client_id=svc-a&client_secret=${encodeURIComponent(clients.secrets['svc-a'] as string)}`, auth: svcA, status: 400, error: 'invalid_request' },
    { name: 'Basic id and body client_id disagree', body: 'grant_type=client_credentials&client_id=web', auth: svcA, status: 401, error: 'invalid_client', basicChallenge: true },
    { name: 'scope beyond the client\'s', body: 'grant_type=client_credentials&scope=notes:write', auth: svcA, status: 400, error: 'invalid_scope' },
    { name: 'malformed scope', body: 'grant_type=client_credentials&scope=%22quoted%22', auth: svcA, status: 400, error: 'invalid_scope' },
    { name: 'audience not allowed', body: 'grant_type=client_credentials&audience=payroll', auth: svcA, status: 400, error: 'invalid_target' },
    { name: 'resource not allowed', body: 'grant_type=client_credentials&resource=https%3A%2F%2Fpayroll.example', auth: svcA, status: 400, error: 'invalid_target' },
    { name: 'client not allowed client_credentials', body: 'grant_type=client_credentials', auth: web, status: 400, error: 'unauthorized_client' },
    { name: 'client not allowed password', body: 'grant_type=password&username=alice&password=x', auth: svcA, status: 400, error: 'unauthorized_client' },
    { name: 'password grant without client', body: 'grant_type=password&username=alice&password=x', status: 401, error: 'invalid_client', basicChallenge: true },
    { name: 'password grant, wrong password', body: 'grant_type=password&username=alice&password=wrong', auth: web, status: 400, error: 'invalid_grant' },
    { name: 'password grant, missing username', body: 'grant_type=password&password=wrong', auth: web, status: 400, error: 'invalid_request' },
    { name: 'password grant, scope the user lacks', body: `grant_type=password&username=bob&password=${encodeURIComponent(gw.password)}&scope=notes:write`, auth: web, status: 400, error: 'invalid_scope' },
    { name: 'refresh_token missing', body: 'grant_type=refresh_token', status: 400, error: 'invalid_request' },
    { name: 'refresh_token garbage', body: 'grant_type=refresh_token&refresh_token=abc', status: 400, error: 'invalid_grant' },
    { name: 'JSON body (§5.2: invalid_request 400)', body: '{"grant_type":"client_credentials"}', type: 'application/json', auth: svcA, status: 400, error: 'invalid_request' },
    { name: 'password grant, unknown resource (RFC 8707)', body: 'grant_type=password&username=alice&password=x&resource=https%3A%2F%2Fpayroll.example', auth: web, status: 400, error: 'invalid_target' },
    { name: 'refresh grant, another audience (RFC 8707)', body: 'grant_type=refresh_token&refresh_token=abc&audience=billing', status: 400, error: 'invalid_target' },
    { name: 'two different resources', body: 'grant_type=client_credentials&resource=billing&resource=latchkey-api', auth: svcA, status: 400, error: 'invalid_target' }
  ]
  for (const c of cases) {
    const res = await gw.app.inject({
      method: 'POST', url: '/oauth/token', payload: c.body,
      headers: { 'content-type': c.type ?? FORM, ...(c.auth === undefined ? {} : { authorization: c.auth }) }
    })
    t.equal(res.statusCode, c.status, `${c.name}: status`)
    const body = res.json() as Record<string, unknown>
    t.equal(body.error, c.error, `${c.name}: error`)
    t.type(body.error_description, 'string')
    t.equal(body.access_token, undefined, `${c.name}: no token`)
    t.equal(res.headers['cache-control'], 'no-store', `${c.name}: no-store`)
    if (c.basicChallenge === true) t.match(res.headers['www-authenticate'], /^Basic realm="latchkey"/, `${c.name}: WWW-Authenticate`)
    else t.equal(res.headers['www-authenticate'], undefined)
  }
})

t.test('a confidential client\'s refresh token needs that client, and a refused attempt rotates nothing', async (t) => {
  const gw = await buildTestGateway(t, { CLIENTS_FILE: clients.file })
  const web = basic('web', clients.secrets.web as string)
  const issued = await gw.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': FORM, authorization: web }, payload: `grant_type=password&username=alice&password=${encodeURIComponent(gw.password)}` })
  t.equal(issued.statusCode, 200)
  const rt = (issued.json() as { refresh_token: string }).refresh_token
  const anonymous = await gw.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': FORM }, payload: `grant_type=refresh_token&refresh_token=${rt}` })
  t.equal(anonymous.statusCode, 400)
  t.equal((anonymous.json() as { error: string }).error, 'invalid_grant')
  const viaCookie = await gw.app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `lk_refresh=${rt}` } })
  t.equal(viaCookie.statusCode, 401, 'nor through the browser cookie route')
  const other = await gw.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': FORM, authorization: basic('svc-b', clients.secrets.svc_b as string) }, payload: `grant_type=refresh_token&refresh_token=${rt}` })
  t.ok(other.statusCode === 400, 'another client')
  const owner = await gw.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': FORM, authorization: web }, payload: `grant_type=refresh_token&refresh_token=${rt}` })
  t.equal(owner.statusCode, 200, 'the owner still rotates it: nothing above touched the family')
  t.type((owner.json() as { refresh_token: string }).refresh_token, 'string')
})

t.test('a browser family rotates through the refresh_token grant too, in the body', async (t) => {
  const gw = await buildTestGateway(t, { CLIENTS_FILE: clients.file })
  const { refresh } = await login(gw.app)
  const res = await gw.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': FORM }, payload: `grant_type=refresh_token&refresh_token=${refresh as string}` })
  t.equal(res.statusCode, 200)
  const body = res.json() as Record<string, string>
  t.type(body.refresh_token, 'string')
  t.not(body.refresh_token, refresh)
  t.equal(res.headers['set-cookie'], undefined, 'the OAuth endpoint sets no cookie')
})

t.test('revocation endpoint (RFC 7009)', async (t) => {
  const gw = await buildTestGateway(t, { CLIENTS_FILE: clients.file })
  const post = (payload: string, headers: Record<string, string> = {}) => gw.app.inject({ method: 'POST', url: '/oauth/revoke', headers: { 'content-type': FORM, ...headers }, payload })
  const missing = await post('token_type_hint=refresh_token')
  t.equal(missing.statusCode, 400)
  t.equal((missing.json() as { error: string }).error, 'invalid_request')
  t.equal((await post('token=garbage')).statusCode, 200, 'unknown token: 200')
  t.equal((await post('token=garbage&token_type_hint=refresh_token')).statusCode, 200)
  const { body, refresh } = await login(gw.app)
  const at = await post(`token=${body.access_token as string}`)
  t.equal(at.statusCode, 400)
  t.equal((at.json() as { error: string }).error, 'unsupported_token_type')
  const hinted = await post('token=opaque-thing&token_type_hint=access_token')
  t.equal(hinted.statusCode, 200, 'an invalid token hinted as an access token: 200 (§2.2)')
  const bad = await post(`token=${refresh as string}`, { authorization: basic('svc-a', 'wrong') })
  t.equal(bad.statusCode, 401, 'wrong client credentials are still refused')
  t.match(bad.headers['www-authenticate'], /^Basic /)
  const foreign = await post(`token=${refresh as string}`, { authorization: basic('svc-a', clients.secrets['svc-a'] as string) })
  t.equal(foreign.statusCode, 400, 'another client\'s token is refused (§2.1)')
  t.equal((foreign.json() as { error: string }).error, 'unauthorized_client')
  const stillAlive = await gw.app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `lk_refresh=${refresh as string}` } })
  t.equal(stillAlive.statusCode, 200, 'another client cannot revoke a browser family')
  const next = stillAlive.headers['set-cookie'] as string
  const token = /lk_refresh=([^;]+)/.exec(next)?.[1] as string
  const ok = await post(`token=${token}&token_type_hint=refresh_token`)
  t.equal(ok.statusCode, 200)
  t.equal(ok.headers['cache-control'], 'no-store')
  const dead = await gw.app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `lk_refresh=${token}` } })
  t.equal(dead.statusCode, 401, 'revoked')
})
