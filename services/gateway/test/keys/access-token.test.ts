import crypto from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { ManualClock } from '#shared/clock.js'
import { LatchkeyError } from '#shared/errors.js'
import { type AccessToken, type AccessTokenVerifier, CLOCK_TOLERANCE_S as DEFAULT_CLOCK_TOLERANCE_S } from '#shared/access-token-verifier.js'
import type { Clock } from '#shared/clock.js'
import { ACCESS_TOKEN_TYP } from '#shared/token-format.js'
import { createGatewayVerifier } from '#gateway/auth/bearer.js'
import { AccessTokenIssuer } from '#gateway/keys/access-token.js'
import { SIGNING_ALGS, generatePrivateJwk, loadSigningKeys } from '#gateway/keys/signing-keys.js'
import type { SigningAlg, SigningKeys } from '#gateway/keys/signing-keys.js'
import { decodeSegment, generateKeyFile, readKeys, signCompact, signHmac, tempDir, unsigned, verifyIndependently } from './helpers.js'
import type { Jwk } from './helpers.js'

const ISSUER = 'https://auth.example.test'
const AUDIENCE = 'latchkey-api'
const TTL_S = 300
const silent = { warn: () => {} }

/**
 * The gateway's verifier is the shared one over its own keys (auth/bearer.ts); `verify`
 * here is "verify, then require `audience`", what every gateway caller does.
 */
class GatewayVerifier {
  readonly inner: AccessTokenVerifier
  constructor (opts: { keys: SigningKeys, issuer: string, clock: Clock, audiences?: readonly string[] }) {
    const audiences = opts.audiences ?? [AUDIENCE, 'another-api', 'a', 'b']
    this.inner = createGatewayVerifier({ keys: opts.keys, issuer: opts.issuer, audiences: () => audiences, revoked: new Set<string>(), clock: opts.clock })
  }

  async verify (token: string, expected: { audience: string }): Promise<AccessToken> {
    const verified = await this.inner.verify(token)
    this.inner.authorize(verified, { audience: expected.audience })
    return verified
  }
}

interface Fixture { keys: SigningKeys, privateJwks: Jwk[], file: string }

/** One key file per alg, written by the real CLI and loaded as the gateway loads it. */
const dir = tempDir(t)
const fixtures = {} as Record<SigningAlg, Fixture>
for (const alg of SIGNING_ALGS) {
  const file = join(dir, `${alg}.json`)
  await generateKeyFile(file, alg)
  fixtures[alg] = { keys: await loadSigningKeys(file, silent), privateJwks: readKeys(file), file }
}

/** `causeCode` is jose's error code, or `format` for the shared format check (token-format.ts). */
async function expectInvalid (t: Test, promise: Promise<unknown>, causeCode: string | RegExp, claim?: string, code = 'AT_INVALID'): Promise<void> {
  const err = await promise.then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof LatchkeyError, 'a LatchkeyError')
  if (!(err instanceof LatchkeyError)) return
  t.equal(err.code, code)
  t.equal(err.statusCode, 401)
  t.equal(err.error, 'invalid_token')
  t.equal(err.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
  const cause = err.cause as { code?: string, claim?: string, name?: string } | undefined
  t.match(causeCode === 'format' ? cause?.name : cause?.code, causeCode === 'format' ? 'TokenFormatError' : causeCode, 'refused for the intended reason')
  if (claim !== undefined) t.equal(cause?.claim, claim, `the failing claim is ${claim}`)
}

for (const alg of SIGNING_ALGS) {
  t.test(`${alg}: issued tokens verify independently (node:crypto) and in process`, async t => {
    const { keys } = fixtures[alg]
    const clock = new ManualClock()
    const issuer = new AccessTokenIssuer({ keys, issuer: ISSUER, ttlS: TTL_S, clock })
    const verifier = new GatewayVerifier({ keys, issuer: ISSUER, clock })
    const issued = await issuer.issue({ sub: 'user-1', aud: AUDIENCE, client_id: 'latchkey-web', scope: 'notes:read notes:write', sid: 'fam-1' })
    t.equal(issued.expiresIn, TTL_S)

    const { header, payload } = verifyIndependently(issued.token, keys.publicJwks)
    t.same(header, { alg, kid: keys.signing.kid, typ: 'at+jwt' }, 'header is exactly {alg, kid, typ: at+jwt}')
    const iat = Math.floor(clock.now() / 1000)
    t.same(payload, {
      iss: ISSUER, sub: 'user-1', aud: AUDIENCE, exp: iat + TTL_S, iat, jti: payload.jti,
      client_id: 'latchkey-web', scope: 'notes:read notes:write', sid: 'fam-1'
    }, 'exactly these claims')
    t.type(payload.jti, 'string')
    t.ok((payload.jti as string).length >= 32, 'jti is long enough to be unguessable')

    const verified = await verifier.verify(issued.token, { audience: AUDIENCE })
    t.match(verified, {
      iss: ISSUER, sub: 'user-1', aud: AUDIENCE, client_id: 'latchkey-web', scope: 'notes:read notes:write',
      sid: 'fam-1', jti: payload.jti, exp: iat + TTL_S, iat, kind: 'user'
    })
    t.same([...verified.scopes], ['notes:read', 'notes:write'])
  })
}

t.test('claims: sid only when given, several audiences, a fresh jti each time, iat from the injected clock', async t => {
  const { keys } = fixtures.EdDSA
  const clock = new ManualClock(Date.UTC(2030, 5, 1, 12, 0, 0, 999))
  const issuer = new AccessTokenIssuer({ keys, issuer: ISSUER, ttlS: 60, clock })
  const a = await issuer.issue({ sub: 'svc', aud: ['a', 'b'], client_id: 'svc', scope: '' })
  const b = await issuer.issue({ sub: 'svc', aud: ['a', 'b'], client_id: 'svc', scope: '' })
  const pa = verifyIndependently(a.token, keys.publicJwks).payload
  const pb = verifyIndependently(b.token, keys.publicJwks).payload
  t.notOk('sid' in pa, 'no sid claim for a service token')
  t.same(pa.aud, ['a', 'b'])
  t.equal(pa.iat, Date.UTC(2030, 5, 1, 12, 0, 0) / 1000)
  t.equal(pa.exp, (pa.iat as number) + 60)
  t.not(pa.jti, pb.jti)
  const verifier = new GatewayVerifier({ keys, issuer: ISSUER, clock })
  const v = await verifier.verify(a.token, { audience: 'b' })
  t.same([...v.scopes], [])
  t.equal(v.sid, undefined)
  t.equal(v.kind, 'service')
  t.throws(() => new AccessTokenIssuer({ keys, issuer: ISSUER, ttlS: 0, clock }), TypeError)
})

t.test('rotation: a token from a key that no longer signs still verifies while it is published', async t => {
  const file = join(tempDir(t), 'rotating.json')
  await generateKeyFile(file, 'ES256')
  const clock = new ManualClock()
  const before = await loadSigningKeys(file, silent)
  const old = await new AccessTokenIssuer({ keys: before, issuer: ISSUER, ttlS: TTL_S, clock }).issue({ sub: 'u', aud: AUDIENCE, client_id: 'c', scope: 's' })
  await generateKeyFile(file, 'EdDSA', '--prepend')
  const after = await loadSigningKeys(file, silent)
  t.not(after.signing.kid, before.signing.kid)
  t.equal(after.publicJwks.keys[1]?.kid, before.signing.kid)
  const fresh = await new AccessTokenIssuer({ keys: after, issuer: ISSUER, ttlS: TTL_S, clock }).issue({ sub: 'u', aud: AUDIENCE, client_id: 'c', scope: 's' })
  t.equal(decodeSegment(fresh.token.split('.')[0] as string).kid, after.signing.kid, 'the new first key signs')
  const verifier = new GatewayVerifier({ keys: after, issuer: ISSUER, clock })
  t.equal((await verifier.verify(old.token, { audience: AUDIENCE })).sub, 'u')
  t.equal((await verifier.verify(fresh.token, { audience: AUDIENCE })).sub, 'u')
  verifyIndependently(old.token, after.publicJwks)
})

t.test('the verifier refuses', async t => {
  const { keys, privateJwks } = fixtures.ES256
  const esJwk = privateJwks[0] as Jwk
  const rsaJwk = fixtures.RS256.privateJwks[0] as Jwk
  const clock = new ManualClock()
  const now = Math.floor(clock.now() / 1000)
  const verifier = new GatewayVerifier({ keys, issuer: ISSUER, clock })
  const issuer = new AccessTokenIssuer({ keys, issuer: ISSUER, ttlS: TTL_S, clock })
  const header = { alg: 'ES256', kid: keys.signing.kid, typ: 'at+jwt' }
  const claims = { iss: ISSUER, sub: 'u', aud: AUDIENCE, exp: now + TTL_S, iat: now, jti: crypto.randomUUID(), client_id: 'c', scope: 'a b' }
  const verify = (token: string, audience = AUDIENCE): Promise<unknown> => verifier.verify(token, { audience })
  const { token } = await issuer.issue({ sub: 'u', aud: AUDIENCE, client_id: 'c', scope: 'a b' })
  const [h, p, s] = token.split('.') as [string, string, string]

  t.test('control: the hand-signed baseline is accepted, as is typ application/at+jwt (RFC 9068 §4)', async t => {
    t.equal(((await verify(signCompact(header, claims, esJwk))) as { sub: string }).sub, 'u')
    t.equal(((await verify(signCompact({ ...header, typ: 'application/at+jwt' }, claims, esJwk))) as { sub: string }).sub, 'u')
    t.equal(((await verify(token)) as { sub: string }).sub, 'u')
  })

  t.test('wrong iss', async t => {
    await expectInvalid(t, verify(signCompact(header, { ...claims, iss: 'https://evil.example' }, esJwk)), 'ERR_JWT_CLAIM_VALIDATION_FAILED', 'iss')
    const elsewhere = new GatewayVerifier({ keys, issuer: 'https://other.example', clock })
    await expectInvalid(t, elsewhere.verify(token, { audience: AUDIENCE }), 'ERR_JWT_CLAIM_VALIDATION_FAILED', 'iss')
  })

  t.test('wrong aud: one the gateway does not serve at all, or not the one required here', async t => {
    await expectInvalid(t, verify(signCompact(header, { ...claims, aud: ['x', 'y'] }, esJwk)), 'ERR_JWT_CLAIM_VALIDATION_FAILED', 'aud')
    const err = await verify(token, 'another-api').catch((e: unknown) => e) as LatchkeyError
    t.equal(err.code, 'AT_WRONG_AUDIENCE')
    t.equal(err.statusCode, 401)
    t.equal(err.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
  })

  t.test('expiry: accepted within the tolerance, refused beyond it', async t => {
    const c = new ManualClock(clock.now())
    const v = new GatewayVerifier({ keys, issuer: ISSUER, clock: c })
    c.advance((TTL_S + DEFAULT_CLOCK_TOLERANCE_S - 1) * 1000)
    t.equal((await v.verify(token, { audience: AUDIENCE })).sub, 'u', 'expired by less than the tolerance')
    c.advance(1000)
    const err = await v.verify(token, { audience: AUDIENCE }).catch((e: unknown) => e) as LatchkeyError
    t.equal(err.code, 'AT_EXPIRED')
    t.equal((err.cause as { code: string }).code, 'ERR_JWT_EXPIRED')
    t.equal(err.description, 'The access token has expired.')
    await expectInvalid(t, v.verify(token, { audience: AUDIENCE }), 'ERR_JWT_EXPIRED', undefined, 'AT_EXPIRED')
  })

  t.test('nbf in the future beyond the tolerance; exp missing', async t => {
    t.ok(await verify(signCompact(header, { ...claims, nbf: now + DEFAULT_CLOCK_TOLERANCE_S }, esJwk)), 'nbf within tolerance')
    await expectInvalid(t, verify(signCompact(header, { ...claims, nbf: now + DEFAULT_CLOCK_TOLERANCE_S + 1 }, esJwk)), 'ERR_JWT_CLAIM_VALIDATION_FAILED', 'nbf')
    const { exp: _exp, ...noExp } = claims
    await expectInvalid(t, verify(signCompact(header, noExp, esJwk)), 'ERR_JWT_CLAIM_VALIDATION_FAILED', 'exp')
    const { client_id: _c, ...noClient } = claims
    await expectInvalid(t, verify(signCompact(header, noClient, esJwk)), 'ERR_JWT_CLAIM_VALIDATION_FAILED', 'client_id')
  })

  t.test('typ JWT, or no typ', async t => {
    await expectInvalid(t, verify(signCompact({ ...header, typ: 'JWT' }, claims, esJwk)), 'format')
    const { typ: _typ, ...noTyp } = header
    await expectInvalid(t, verify(signCompact(noTyp, claims, esJwk)), 'format')
  })

  t.test('scope: optional (RFC 9068 §2.2.3), but when present a list of scope tokens (RFC 6749 §3.3)', async t => {
    const { scope: _scope, ...noScope } = claims
    const v = await verifier.verify(signCompact(header, noScope, esJwk), { audience: AUDIENCE })
    t.equal(v.scope, '')
    t.equal(v.scopes.size, 0)
    await expectInvalid(t, verify(signCompact(header, { ...claims, scope: 'a "b"' }, esJwk)), 'format')
    await expectInvalid(t, verify(signCompact(header, { ...claims, scope: 7 }, esJwk)), 'format')
  })

  t.test('unknown kid, missing kid', async t => {
    const stranger = await generatePrivateJwk('ES256') as unknown as Jwk
    await expectInvalid(t, verify(signCompact({ ...header, kid: stranger.kid }, claims, stranger)), 'ERR_JWKS_NO_MATCHING_KEY')
    const { kid: _kid, ...noKid } = header
    await expectInvalid(t, verify(signCompact(noKid, claims, esJwk)), 'format')
  })

  t.test('alg mismatch: the key is ES256, the header says RS256 (signed with a real RSA key)', async t => {
    await expectInvalid(t, verify(signCompact({ ...header, alg: 'RS256' }, claims, rsaJwk)), 'ERR_JOSE_ALG_NOT_ALLOWED')
    // And the reverse, against a set holding both: an RS256 kid with an ES256 header.
    const both = new GatewayVerifier({ keys: fixtures.RS256.keys, issuer: ISSUER, clock })
    const forged = signCompact({ ...header, alg: 'ES256', kid: fixtures.RS256.keys.signing.kid }, claims, esJwk)
    await expectInvalid(t, both.verify(forged, { audience: AUDIENCE }), 'ERR_JOSE_ALG_NOT_ALLOWED')
  })

  t.test('alg none, and HS256 keyed with the public key', async t => {
    await expectInvalid(t, verify(unsigned({ ...header, alg: 'none' }, claims)), 'format')
    await expectInvalid(t, verify(unsigned({ ...header, alg: 'none' }, claims, 'c2lnbmF0dXJl')), 'format')
    const pub = JSON.stringify(keys.publicJwks.keys[0])
    await expectInvalid(t, verify(signHmac({ ...header, alg: 'HS256' }, claims, Buffer.from(pub))), 'format')
  })

  t.test('a tampered payload or signature', async t => {
    const payload = decodeSegment(p)
    const tampered = Buffer.from(JSON.stringify({ ...payload, scope: 'a b admin' })).toString('base64url')
    await expectInvalid(t, verify(`${h}.${tampered}.${s}`), 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED')
    const flipped = `${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`
    await expectInvalid(t, verify(`${h}.${p}.${flipped}`), 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED')
    // A different header with the original signature (e.g. typ swapped in).
    const otherHeader = Buffer.from(JSON.stringify({ ...header, typ: 'application/at+jwt' })).toString('base64url')
    await expectInvalid(t, verify(`${otherHeader}.${p}.${s}`), 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED')
  })

  t.test('non-canonical spellings of a valid token', async t => {
    const variants: Record<string, string> = {
      'trailing space': `${token} `,
      'trailing newline': `${token}\n`,
      'leading space': ` ${token}`,
      'CRLF inside': `${h}.${p}\r\n.${s}`,
      '= padding': `${token}==`,
      'padding on the header': `${h}=.${p}.${s}`,
      'standard base64 alphabet': `${h}.${p}.${s.replace(/-/g, '+').replace(/_/g, '/')}${/[-_]/.test(s) ? '' : '+'}`,
      'four segments': `${token}.${s}`,
      'two segments': `${h}.${p}`,
      'empty payload segment': `${h}..${s}`,
      empty: '',
      'too long': `${h}.${'A'.repeat(9000)}.${s}`
    }
    for (const [name, value] of Object.entries(variants)) {
      t.test(name, t => expectInvalid(t, verify(value), 'format'))
    }
  })
})

t.equal(ACCESS_TOKEN_TYP, 'at+jwt')
