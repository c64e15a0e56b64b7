/**
 * The resource against a misbehaving JWKS: fetches counted at the JWKS server, hostile
 * answers, and a resource started while the issuer is down.
 */
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { ManualClock } from '#shared/clock.js'
import { JWKS_FAILURE_BACKOFF_MS } from '#shared/remote-jwks.js'
import { TestIssuer, makeKey } from '../../../shared/test/helpers/test-issuer.js'
import { INVALID_TOKEN, call, nowS, resourceFor } from './helpers/resource.js'

const issuer = await TestIssuer.start()
t.teardown(() => issuer.close())
t.beforeEach(() => { issuer.handler = undefined })

t.test('1,000 requests with random unknown kids → at most 2 JWKS fetches', async (t) => {
  const clock = new ManualClock(Date.now())
  const app = await resourceFor(t, issuer, clock)
  const foreign = await makeKey('ES256')
  const before = issuer.fetches
  const statuses = await Promise.all(Array.from({ length: 1000 }, async () => {
    const res = await call(app, 'GET', '/api/me', await issuer.sign({ key: foreign, header: { kid: randomUUID() }, nowS: nowS(clock) }))
    t.equal(res.headers['www-authenticate'], INVALID_TOKEN)
    return res.statusCode
  }))
  t.same(new Set(statuses), new Set([401]))
  const fetched = issuer.fetches - before
  t.ok(fetched >= 1 && fetched <= 2, `JWKS fetched ${fetched} time(s) for 1,000 unknown kids`)
  t.equal((await call(app, 'GET', '/api/me', await issuer.sign({ nowS: nowS(clock) }))).statusCode, 200)
})

const HOSTILE: Record<string, TestIssuer['handler']> = {
  'null': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end('null') },
  '{}': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end('{}') },
  '{"keys":null}': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":null}') },
  '404': (_q, r) => { r.writeHead(404).end() },
  'a redirect': (_q, r) => { r.writeHead(301, { location: 'http://127.0.0.1:1/jwks.json' }).end() },
  '{': (_q, r) => { r.writeHead(200, { 'content-type': 'application/json' }).end('{') },
  'a slow answer': () => { /* headers never come */ }
}

t.test('hostile JWKS answers → 503, the resource stays up and recovers', async (t) => {
  for (const [name, handler] of Object.entries(HOSTILE)) {
    await t.test(name, async (t) => {
      const clock = new ManualClock(Date.now())
      const app = await resourceFor(t, issuer, clock, { timeoutMs: 250 })
      issuer.handler = handler
      const token = await issuer.sign({ nowS: nowS(clock) })
      const res = await call(app, 'GET', '/api/me', token)
      t.equal(res.statusCode, 503)
      t.equal(res.json().error, 'temporarily_unavailable')
      t.equal((await call(app, 'GET', '/healthz')).statusCode, 200, 'up')
      t.equal((await call(app, 'GET', '/readyz')).statusCode, 503, 'not ready')
      issuer.handler = undefined
      clock.advance(JWKS_FAILURE_BACKOFF_MS)
      t.equal((await call(app, 'GET', '/api/me', token)).statusCode, 200, 'recovered')
    })
  }
})

t.test('hostile answers after keys are cached: the last good keys keep working', async (t) => {
  const clock = new ManualClock(Date.now())
  // cooldownMs 0: every unknown kid may refetch, so hostile answers are really consulted.
  const app = await resourceFor(t, issuer, clock, { cooldownMs: 0, timeoutMs: 250 })
  t.equal((await call(app, 'GET', '/api/me', await issuer.sign({ nowS: nowS(clock) }))).statusCode, 200)
  const foreign = await makeKey('EdDSA')
  for (const [name, handler] of Object.entries(HOSTILE)) {
    issuer.handler = handler
    clock.advance(JWKS_FAILURE_BACKOFF_MS)
    t.equal((await call(app, 'GET', '/api/me', await issuer.sign({ key: foreign, nowS: nowS(clock) }))).statusCode, 401, `${name}: unknown kid → 401`)
    t.equal((await call(app, 'GET', '/api/me', await issuer.sign({ nowS: nowS(clock) }))).statusCode, 200, `${name}: known kid → 200`)
  }
})
