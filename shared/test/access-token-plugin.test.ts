import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import Fastify, { type FastifyInstance } from 'fastify'
import { type JWTVerifyGetKey, createLocalJWKSet } from 'jose'
import t, { type Test } from 'tap'
import { accessTokenPlugin } from '#shared/access-token-plugin.js'
import type { AccessTokenVerifierOptions } from '#shared/access-token-verifier.js'
import { CLOCK_TOLERANCE_S } from '#shared/access-token-verifier.js'
import { ManualClock } from '#shared/clock.js'
import { JWKS_FAILURE_BACKOFF_MS } from '#shared/remote-jwks.js'
import { ACCESS_TTL_S, AUDIENCE, TestIssuer, makeKey } from './helpers/test-issuer.js'

const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n
const REALM_ONLY = 'Bearer realm="latchkey"'
const INVALID_TOKEN = 'Bearer realm="latchkey", error="invalid_token"'

const issuer = await TestIssuer.start()
t.teardown(() => issuer.close())

function nowS (clock: ManualClock): number {
  return Math.floor(clock.now() / 1000)
}

async function appFor (t: Test, options: Partial<AccessTokenVerifierOptions> & { clock: ManualClock }): Promise<FastifyInstance> {
  const app = Fastify()
  // The three lines a service needs (plus its own handler):
  await app.register(accessTokenPlugin, { jwksUrl: issuer.jwksUrl, issuer: issuer.issuer, audience: AUDIENCE, ...options })
  app.get('/x', { onRequest: app.requireToken(['notes:read']) }, async (request) => ({ sub: request.accessToken?.sub, scopes: [...(request.accessToken?.scopes ?? [])] }))
  app.get('/svc', { onRequest: app.requireToken([], { kind: 'service' }) }, async () => ({ ok: true }))
  app.get('/open', async (request) => ({ token: request.accessToken }))
  t.teardown(() => app.close())
  return app
}

async function get (app: FastifyInstance, token?: string, url = '/x'): Promise<Awaited<ReturnType<FastifyInstance['inject']>>> {
  return await app.inject({ method: 'GET', url, headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })
}

t.beforeEach(() => {
  issuer.handler = undefined
  issuer.published = Object.values(issuer.keys)
})

t.test('RFC 6750 answers', async (t) => {
  const clock = new ManualClock(Date.now())
  const app = await appFor(t, { clock })
  const token = await issuer.sign({ nowS: nowS(clock) })

  const ok = await get(app, token)
  t.equal(ok.statusCode, 200)
  t.same(ok.json(), { sub: 'alice', scopes: ['notes:read', 'notes:write'] })

  const none = await get(app)
  t.equal(none.statusCode, 401)
  t.equal(none.headers['www-authenticate'], REALM_ONLY, 'no credentials: no error code')
  t.same(none.json(), { error: 'unauthorized', error_description: 'An access token is required.' })

  const basic = await app.inject({ url: '/x', headers: { authorization: 'Basic YTpi' } })
  t.equal(basic.statusCode, 401)
  t.equal(basic.headers['www-authenticate'], REALM_ONLY, 'another scheme counts as no bearer credentials')

  const bad = await get(app, 'abc.def.ghi')
  t.equal(bad.statusCode, 401)
  t.equal(bad.headers['www-authenticate'], INVALID_TOKEN)
  t.same(bad.json(), { error: 'invalid_token', error_description: 'The access token is invalid.' })

  const narrow = await issuer.sign({ nowS: nowS(clock), claims: { scope: 'profile' } })
  const forbidden = await get(app, narrow)
  t.equal(forbidden.statusCode, 403)
  t.equal(forbidden.headers['www-authenticate'], 'Bearer realm="latchkey", error="insufficient_scope", scope="notes:read"')
  t.same(forbidden.json(), { error: 'insufficient_scope', error_description: 'The access token lacks a required scope.' })

  const noScope = await issuer.sign({ nowS: nowS(clock), claims: { scope: undefined } })
  t.equal((await get(app, noScope)).statusCode, 403, 'no scope claim means no scopes')

  t.equal((await get(app, token, '/svc')).statusCode, 403, 'a user token on a service-only route')
  t.equal((await get(app, await issuer.signService({ nowS: nowS(clock) }), '/svc')).statusCode, 200, 'a service token on it')

  const open = await get(app, token, '/open')
  t.same(open.json(), { token: null }, 'routes without requireToken see accessToken = null')
})

t.test('exp and nbf use the injected clock with a small tolerance', async (t) => {
  const clock = new ManualClock(Date.now())
  const app = await appFor(t, { clock })
  const token = await issuer.sign({ nowS: nowS(clock) })
  t.equal((await get(app, token)).statusCode, 200)
  clock.advance((ACCESS_TTL_S + CLOCK_TOLERANCE_S - 1) * 1000)
  t.equal((await get(app, token)).statusCode, 200, 'inside the tolerance after exp')
  clock.advance(2000)
  const late = await get(app, token)
  t.equal(late.statusCode, 401, 'beyond the tolerance')
  t.equal(late.headers['www-authenticate'], INVALID_TOKEN)
  t.equal(late.json().error_description, 'The access token has expired.')

  const future = await issuer.sign({ nowS: nowS(clock), claims: { nbf: nowS(clock) + 60 } })
  t.equal((await get(app, future)).statusCode, 401, 'nbf in the future')
  clock.advance(60_000)
  t.equal((await get(app, future)).statusCode, 200, 'and accepted once nbf passes')
})

t.test('the verified-token cache: a repeat costs a lookup, entries die at exp', async (t) => {
  const clock = new ManualClock(Date.now())
  const local = createLocalJWKSet({ keys: issuer.published.map(k => k.publicJwk) })
  let keyLookups = 0
  const keys: JWTVerifyGetKey = async (...args) => { keyLookups++; return await local(...args) }
  const app = await appFor(t, { clock, keys })
  const token = await issuer.sign({ nowS: nowS(clock) })
  for (let i = 0; i < 5; i++) t.equal((await get(app, token)).statusCode, 200)
  t.equal(keyLookups, 1, 'one signature check for five requests')
  t.equal(app.accessTokens.stats().outcomes.cache_hit, 4)
  clock.advance(ACCESS_TTL_S * 1000)
  t.equal((await get(app, token)).statusCode, 200, 'at exp: back through jose, which still allows the tolerance')
  t.equal(keyLookups, 2, 'the cache entry was dropped at exp')
})

t.test('malleated ECDSA copies share the cache entry; revocation is by sid/jti, never bytes', async (t) => {
  const clock = new ManualClock(Date.now())
  const revokedSids = new Set<string>()
  const revokedJtis = new Set<string>()
  const local = createLocalJWKSet({ keys: issuer.published.map(k => k.publicJwk) })
  let keyLookups = 0
  const keys: JWTVerifyGetKey = async (...args) => { keyLookups++; return await local(...args) }
  const app = await appFor(t, {
    clock,
    keys,
    isRevoked: (token) => (token.sid !== undefined && revokedSids.has(token.sid)) || revokedJtis.has(token.jti)
  })
  const token = await issuer.sign({ alg: 'ES256', nowS: nowS(clock), claims: { sid: 'fam-es' } })
  const [h, p, s] = token.split('.') as [string, string, string]
  const sig = Buffer.from(s, 'base64url')
  const sv = BigInt(`0x${sig.subarray(32).toString('hex')}`)
  const twin = `${h}.${p}.${Buffer.concat([sig.subarray(0, 32), Buffer.from((P256_N - sv).toString(16).padStart(64, '0'), 'hex')]).toString('base64url')}`

  t.equal((await get(app, twin)).statusCode, 200, 'the (r, n−s) twin is a valid signature and is accepted')
  t.equal((await get(app, token)).statusCode, 200)
  t.equal(keyLookups, 1, 'the second spelling hit the entry the first one made')

  revokedSids.add('fam-es')
  const refused = await get(app, token)
  t.equal(refused.statusCode, 401)
  t.equal(refused.headers['www-authenticate'], INVALID_TOKEN)
  t.equal(refused.json().error_description, 'The access token has been revoked.')
  t.equal((await get(app, twin)).statusCode, 401, 'the twin is revoked too (same sid)')

  const other = await issuer.sign({ nowS: nowS(clock), claims: { sid: 'fam-other' } })
  t.equal((await get(app, other)).statusCode, 200)
  revokedJtis.add(JSON.parse(Buffer.from(other.split('.')[1] as string, 'base64url').toString()).jti)
  t.equal((await get(app, other)).statusCode, 401, 'revoked by jti on a cache hit')
})

t.test('1,000 requests with random unknown kids cause at most 2 JWKS fetches', async (t) => {
  const clock = new ManualClock(Date.now())
  const app = await appFor(t, { clock })
  const before = issuer.fetches
  const foreign = await makeKey('EdDSA')
  const tokens = await Promise.all(Array.from({ length: 1000 }, () =>
    issuer.sign({ key: foreign, header: { kid: randomUUID() }, nowS: nowS(clock) })))
  const burst = await Promise.all(tokens.slice(0, 500).map(async tok => (await get(app, tok)).statusCode))
  t.same(new Set(burst), new Set([401]))
  for (const tok of tokens.slice(500)) t.equal((await get(app, tok)).statusCode, 401)
  t.ok(issuer.fetches - before <= 2, `JWKS fetched ${issuer.fetches - before} time(s)`)
  t.equal((await get(app, await issuer.sign({ nowS: nowS(clock) }))).statusCode, 200, 'genuine tokens still pass')
})

t.test('key rotation: a new kid is picked up with one refetch (cooldown elapsed)', async (t) => {
  const clock = new ManualClock(Date.now())
  const app = await appFor(t, { clock, jwks: { cooldownMs: 0 } })
  t.equal((await get(app, await issuer.sign({ nowS: nowS(clock) }))).statusCode, 200)
  const fresh = await makeKey('EdDSA')
  const token = await issuer.sign({ key: fresh, nowS: nowS(clock) })
  t.equal((await get(app, token)).statusCode, 401, 'not published yet')
  issuer.published = [fresh, ...Object.values(issuer.keys)]
  const before = issuer.fetches
  t.equal((await get(app, token)).statusCode, 200, 'published: accepted')
  t.equal(issuer.fetches - before, 1)
  t.equal((await get(app, await issuer.sign({ nowS: nowS(clock) }))).statusCode, 200, 'old key still accepted')
})

t.test('two keys published and no kid → 401', async (t) => {
  const clock = new ManualClock(Date.now())
  const app = await appFor(t, { clock })
  issuer.published = [issuer.keys.EdDSA, await makeKey('EdDSA')]
  const res = await get(app, await issuer.sign({ nowS: nowS(clock), header: { kid: undefined } }))
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'], INVALID_TOKEN)
})

const HOSTILE: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
  'null': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end('null') },
  '{}': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end('{}') },
  '{"keys":null}': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":null}') },
  '{"keys":[1]}': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[1]}') },
  '404': (_q, r) => { r.writeHead(404).end('not here') },
  // The target would serve real keys: following the redirect would be the bug.
  'a redirect': (_q, r) => { r.writeHead(302, { location: issuer.jwksUrl.replace('jwks.json', 'jwks.json?again') }).end() },
  'truncated JSON': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end('{') },
  'a 1 MB answer': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end(`{"keys":[],"pad":"${'x'.repeat(1 << 20)}"}`) },
  'a slow answer': () => { /* never answers; the fetch times out */ },
  'a reset connection': (q) => { q.socket.destroy() }
}

t.test('hostile JWKS answers → 503 while nothing is cached, never a crash, recovery without restart', async (t) => {
  for (const [name, handler] of Object.entries(HOSTILE)) {
    await t.test(name, async (t) => {
      const clock = new ManualClock(Date.now())
      const app = await appFor(t, { clock, jwks: { timeoutMs: 300 } })
      issuer.handler = handler
      const before = issuer.fetches
      const token = await issuer.sign({ nowS: nowS(clock) })
      const res = await get(app, token)
      t.equal(res.statusCode, 503)
      t.same(res.json(), { error: 'temporarily_unavailable', error_description: 'The signing keys are unavailable; retry shortly.' })
      t.equal(res.headers['www-authenticate'], undefined, 'not a token problem')
      t.equal((await get(app, token)).statusCode, 503, 'still unavailable inside the back-off')
      t.equal(issuer.fetches - before, 1, 'no refetch inside the back-off')
      t.equal((await get(app, undefined, '/open')).statusCode, 200, 'the service is up')
      t.equal(await app.accessTokens.ready(), false)

      issuer.handler = undefined
      clock.advance(JWKS_FAILURE_BACKOFF_MS)
      t.equal((await get(app, token)).statusCode, 200, 'recovered once the JWKS answers')
      t.equal(await app.accessTokens.ready(), true)
    })
  }
})

t.test('a service started while the JWKS host is down recovers on its own', async (t) => {
  const clock = new ManualClock(Date.now())
  await issuer.pause()
  t.teardown(() => issuer.resume())
  const app = await appFor(t, { clock })
  const token = await issuer.sign({ nowS: nowS(clock) })
  t.equal((await get(app, token)).statusCode, 503)
  t.equal(await app.accessTokens.ready(), false)
  await issuer.resume()
  clock.advance(JWKS_FAILURE_BACKOFF_MS)
  t.equal((await get(app, token)).statusCode, 200)
})

t.test('once keys are known, a JWKS outage does not become a token outage', async (t) => {
  const clock = new ManualClock(Date.now())
  // maxAgeMs 0: every verification wants a fresh key set, as after a long outage.
  const app = await appFor(t, { clock, jwks: { maxAgeMs: 0 } })
  const token = await issuer.sign({ nowS: nowS(clock) })
  t.equal((await get(app, token)).statusCode, 200)
  issuer.handler = HOSTILE['404']
  const fresh = await issuer.sign({ nowS: nowS(clock), claims: { jti: 'another' } })
  t.equal((await get(app, fresh)).statusCode, 200, 'verified with the last good key set')
  t.equal(await app.accessTokens.ready(), true, 'ready: keys cached')
  const before = issuer.fetches
  const third = await issuer.sign({ nowS: nowS(clock), claims: { jti: 'third' } })
  t.equal((await get(app, third)).statusCode, 200)
  t.equal(issuer.fetches, before, 'no refetch inside the back-off')
})
