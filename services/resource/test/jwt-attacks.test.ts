/**
 * The JWT attack list (issue 4) against the resource service: each forged, altered or
 * out-of-policy token → 401 with `WWW-Authenticate: Bearer ... error="invalid_token"`.
 */
import { type JsonWebKey, createHmac, createPublicKey } from 'node:crypto'
import { exportSPKI } from 'jose'
import t, { type Test } from 'tap'
import { ManualClock } from '#shared/clock.js'
import { CLOCK_TOLERANCE_S } from '#shared/access-token-verifier.js'
import { ACCESS_TTL_S, TestIssuer, makeKey } from '../../../shared/test/helpers/test-issuer.js'
import { INVALID_TOKEN, call, nowS, resourceFor } from './helpers/resource.js'

const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n

const issuer = await TestIssuer.start()
const attacker = await TestIssuer.start()
t.teardown(() => Promise.all([issuer.close(), attacker.close()]))
const clock = new ManualClock(Date.now())
const app = await resourceFor(t, issuer, clock)

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')
const parts = (token: string): [string, string, string] => token.split('.') as [string, string, string]
const payloadOf = (token: string): Record<string, unknown> => JSON.parse(Buffer.from(parts(token)[1], 'base64url').toString())

async function refused (t: Test, token: string, name: string): Promise<void> {
  const res = await call(app, 'GET', '/api/me', token)
  t.equal(res.statusCode, 401, `${name}: 401`)
  t.equal(res.headers['www-authenticate'], INVALID_TOKEN, `${name}: invalid_token`)
  t.equal(res.json().error, 'invalid_token', `${name}: body`)
}


t.test('genuine tokens of each supported algorithm → 200', async (t) => {
  for (const alg of ['EdDSA', 'ES256', 'RS256'] as const) {
    const res = await call(app, 'GET', '/api/me', await issuer.sign({ alg, nowS: nowS(clock) }))
    t.equal(res.statusCode, 200, alg)
    t.equal(res.json().sub, 'alice')
  }
})

t.test('alg none', async (t) => {
  const genuine = await issuer.sign({ nowS: nowS(clock) })
  const [, p] = parts(genuine)
  const h = b64({ alg: 'none', kid: issuer.keys.EdDSA.kid, typ: 'at+jwt' })
  await refused(t, `${h}.${p}.`, 'alg none, empty signature')
  await refused(t, `${h}.${p}.${b64('x'.repeat(64))}`, 'alg none, junk signature')
  await refused(t, `${b64({ alg: 'None', kid: issuer.keys.EdDSA.kid, typ: 'at+jwt' })}.${p}.`, 'alg None')
})

t.test('HS256 signed with the public key bytes (key confusion)', async (t) => {
  const genuine = await issuer.sign({ alg: 'RS256', nowS: nowS(clock) })
  const [, p] = parts(genuine)
  const spki = await exportSPKI(createPublicKey({ key: issuer.keys.RS256.publicJwk as JsonWebKey, format: 'jwk' }))
  for (const [what, secret] of [['the SPKI PEM', spki], ['the JWK JSON', JSON.stringify(issuer.keys.RS256.publicJwk)], ['the EdDSA x bytes', Buffer.from(issuer.keys.EdDSA.publicJwk.x as string, 'base64url')]] as const) {
    for (const kid of [issuer.keys.RS256.kid, issuer.keys.EdDSA.kid]) {
      const h = b64({ alg: 'HS256', kid, typ: 'at+jwt' })
      const sig = createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url')
      await refused(t, `${h}.${p}.${sig}`, `HS256 with ${what}`)
    }
  }
})

t.test('a foreign key under a real kid', async (t) => {
  for (const alg of ['EdDSA', 'ES256', 'RS256'] as const) {
    const foreign = await makeKey(alg, issuer.keys[alg].kid)
    await refused(t, await issuer.sign({ key: foreign, nowS: nowS(clock) }), `foreign ${alg} key`)
  }
  // A real kid of one algorithm with a token claiming another.
  const foreignEs = await makeKey('ES256', issuer.keys.EdDSA.kid)
  await refused(t, await issuer.sign({ key: foreignEs, nowS: nowS(clock) }), 'ES256 token under an EdDSA kid')
})

t.test('a payload swapped under a real signature', async (t) => {
  const genuine = await issuer.sign({ nowS: nowS(clock), claims: { scope: 'notes:read' } })
  const other = await issuer.sign({ nowS: nowS(clock), claims: { sub: 'mallory', scope: 'notes:read notes:write internal:read' } })
  const [h, , s] = parts(genuine)
  await refused(t, `${h}.${parts(other)[1]}.${s}`, 'another genuine payload')
  await refused(t, `${h}.${b64({ ...payloadOf(genuine), scope: 'notes:read notes:write' })}.${s}`, 'an edited payload')
})

t.test('a stripped signature', async (t) => {
  const [h, p] = parts(await issuer.sign({ nowS: nowS(clock) }))
  await refused(t, `${h}.${p}.`, 'empty third segment')
  await refused(t, `${h}.${p}`, 'two segments')
})

t.test('jwk / jku / x5u headers pointing at attacker keys', async (t) => {
  const mine = attacker.keys.EdDSA
  await refused(t, await attacker.sign({ nowS: nowS(clock), claims: { iss: issuer.issuer }, header: { jwk: mine.publicJwk } }), 'embedded jwk, attacker kid')
  await refused(t, await attacker.sign({ nowS: nowS(clock), claims: { iss: issuer.issuer }, header: { jwk: mine.publicJwk, kid: issuer.keys.EdDSA.kid } }), 'embedded jwk, real kid')
  const fetched = attacker.fetches
  await refused(t, await attacker.sign({ nowS: nowS(clock), claims: { iss: issuer.issuer }, header: { jku: attacker.jwksUrl } }), 'jku to the attacker JWKS')
  await refused(t, await attacker.sign({ nowS: nowS(clock), claims: { iss: issuer.issuer }, header: { jku: attacker.jwksUrl, kid: issuer.keys.EdDSA.kid } }), 'jku, real kid')
  await refused(t, await attacker.sign({ nowS: nowS(clock), claims: { iss: issuer.issuer }, header: { x5u: `${attacker.url}/cert.pem` } }), 'x5u')
  t.equal(attacker.fetches, fetched, 'the attacker JWKS was never fetched')
})

t.test('kid with ../ or quotes', async (t) => {
  for (const kid of ['../../../../dev/null', '..%2f..%2fetc', 'a"b', "a'b", `${issuer.keys.EdDSA.kid}"`, '', 'x'.repeat(200)]) {
    await refused(t, await issuer.sign({ nowS: nowS(clock), header: { kid } }), `kid ${JSON.stringify(kid.slice(0, 30))}`)
  }
})

t.test('ES256 signature with r = s = 0 (and other impossible values)', async (t) => {
  const [h, p] = parts(await issuer.sign({ alg: 'ES256', nowS: nowS(clock) }))
  await refused(t, `${h}.${p}.${Buffer.alloc(64).toString('base64url')}`, 'r = s = 0')
  const n = Buffer.from(P256_N.toString(16), 'hex')
  await refused(t, `${h}.${p}.${Buffer.concat([n, n]).toString('base64url')}`, 'r = s = n')
  await refused(t, `${h}.${p}.${Buffer.alloc(0).toString('base64url')}`, 'empty')
})

t.test('wrong iss, aud, typ', async (t) => {
  await refused(t, await issuer.sign({ nowS: nowS(clock), claims: { iss: 'http://evil.example' } }), 'wrong iss')
  await refused(t, await issuer.sign({ nowS: nowS(clock), claims: { iss: `${issuer.issuer}/` } }), 'iss with a trailing slash')
  await refused(t, await issuer.sign({ nowS: nowS(clock), claims: { aud: 'another-api' } }), 'wrong aud')
  await refused(t, await issuer.sign({ nowS: nowS(clock), claims: { aud: undefined } }), 'no aud')
  await refused(t, await issuer.sign({ nowS: nowS(clock), header: { typ: 'JWT' } }), 'typ JWT')
  await refused(t, await issuer.sign({ nowS: nowS(clock), header: { typ: undefined } }), 'no typ')
})

t.test('missing RFC 9068 claims', async (t) => {
  for (const claim of ['sub', 'exp', 'iat', 'jti', 'client_id']) {
    await refused(t, await issuer.sign({ nowS: nowS(clock), claims: { [claim]: undefined } }), `no ${claim}`)
  }
  await refused(t, await issuer.sign({ nowS: nowS(clock), claims: { scope: ['notes:read'] } }), 'scope not a string')
})

t.test('exp in the past beyond tolerance; nbf in the future', async (t) => {
  const now = nowS(clock)
  await refused(t, await issuer.sign({ nowS: now - ACCESS_TTL_S - CLOCK_TOLERANCE_S - 1 }), 'expired')
  const res = await call(app, 'GET', '/api/me', await issuer.sign({ nowS: now - ACCESS_TTL_S - CLOCK_TOLERANCE_S + 2 }))
  t.equal(res.statusCode, 200, 'expired but within the tolerance')
  await refused(t, await issuer.sign({ nowS: now, claims: { nbf: now + CLOCK_TOLERANCE_S + 30 } }), 'nbf in the future')
})

t.test('a 20 KB token', async (t) => {
  const big = await issuer.sign({ nowS: nowS(clock), claims: { pad: 'x'.repeat(20 * 1024) } })
  t.ok(big.length > 20 * 1024)
  await refused(t, big, '20 KB')
})

t.test('non-canonical spellings (see shared/src/token-format.ts)', async (t) => {
  const genuine = await issuer.sign({ nowS: nowS(clock) })
  await refused(t, `${genuine} `, 'trailing space')
  await refused(t, `${genuine}\n`, 'trailing newline')
  await refused(t, `${genuine}==`, '== padding')
  await refused(t, `${parts(genuine)[0]}==.${parts(genuine).slice(1).join('.')}`, 'padding on the header')
  t.equal((await call(app, 'GET', '/api/me', genuine)).statusCode, 200, 'the canonical spelling passes')

  // ECDSA (r, n − s): decided in token-format.ts — a valid signature, so accepted, and it maps
  // to the same verified-cache entry as the original (the gateway does not normalise s).
  const es = await issuer.sign({ alg: 'ES256', nowS: nowS(clock) })
  const [h, p, s] = parts(es)
  const sig = Buffer.from(s, 'base64url')
  const sv = BigInt(`0x${sig.subarray(32).toString('hex')}`)
  const twin = `${h}.${p}.${Buffer.concat([sig.subarray(0, 32), Buffer.from((P256_N - sv).toString(16).padStart(64, '0'), 'hex')]).toString('base64url')}`
  const hitsBefore = app.accessTokens.stats().outcomes.cache_hit
  t.equal((await call(app, 'GET', '/api/me', es)).statusCode, 200)
  t.equal((await call(app, 'GET', '/api/me', twin)).statusCode, 200)
  t.equal(app.accessTokens.stats().outcomes.cache_hit - hitsBefore, 1, 'the twin was a cache hit on the original\'s entry')
})
