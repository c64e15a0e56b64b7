import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { MAX_TOKEN_LENGTH, TokenFormatError, checkTokenFormat, lowSEs256Signature } from '#shared/token-format.js'
import { readBearer } from '#shared/bearer.js'
import { TestIssuer } from './helpers/test-issuer.js'

const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n

const issuer = await TestIssuer.start()
t.teardown(() => issuer.close())

function b64 (value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
}

function withHeader (token: string, header: Record<string, unknown>): string {
  const [, p, s] = token.split('.')
  return `${b64(header)}.${p}.${s}`
}

function refused (t: Test, token: string, reason: RegExp, name: string): void {
  let caught: unknown
  try {
    checkTokenFormat(token)
  } catch (err) {
    caught = err
  }
  t.ok(caught instanceof TokenFormatError, `${name}: refused`)
  t.match((caught as Error | undefined)?.message, reason, `${name}: reason`)
}

/** Rewrite an ES256 token's signature (r, s) → (r, n − s): still a valid ECDSA signature. */
function malleate (token: string): string {
  const [h, p, s] = token.split('.') as [string, string, string]
  const sig = Buffer.from(s, 'base64url')
  const sValue = BigInt(`0x${sig.subarray(32).toString('hex')}`)
  const flipped = Buffer.from((P256_N - sValue).toString(16).padStart(64, '0'), 'hex')
  return `${h}.${p}.${Buffer.concat([sig.subarray(0, 32), flipped]).toString('base64url')}`
}

t.test('genuine tokens of each algorithm pass and are their own canonical form (low s)', async (t) => {
  for (const alg of ['EdDSA', 'ES256', 'RS256'] as const) {
    let token = await issuer.sign({ alg })
    if (alg === 'ES256') {
      const s = BigInt(`0x${Buffer.from(token.split('.')[2] as string, 'base64url').subarray(32).toString('hex')}`)
      if (s > P256_N / 2n) token = malleate(token)
    }
    const checked = checkTokenFormat(token)
    t.equal(checked.header.alg, alg)
    t.equal(checked.header.kid, issuer.keys[alg].kid)
    t.equal(checked.canonical, token, `${alg} canonical`)
  }
})

t.test('an ECDSA (r, n−s) copy folds to the same canonical string as the original', async (t) => {
  const token = await issuer.sign({ alg: 'ES256' })
  const twin = malleate(token)
  t.not(twin, token)
  t.equal(checkTokenFormat(twin).canonical, checkTokenFormat(token).canonical)
  // The canonical form always carries the low s.
  const s = BigInt(`0x${Buffer.from(checkTokenFormat(token).canonical.split('.')[2] as string, 'base64url').subarray(32).toString('hex')}`)
  t.ok(s <= P256_N / 2n)
})

t.test('non-canonical spellings are refused', async (t) => {
  const token = await issuer.sign()
  refused(t, `${token} `, /not base64url/, 'trailing space')
  refused(t, `${token}\n`, /not base64url/, 'trailing newline')
  refused(t, ` ${token}`, /not base64url/, 'leading space')
  refused(t, `${token}==`, /not base64url/, 'padding on the signature')
  const [h, p, s] = token.split('.') as [string, string, string]
  refused(t, `${h}=.${p}.${s}`, /not base64url/, 'padding on the header')
  refused(t, `${h}.${p}.${s.replace(/-/g, '+').replace(/_/g, '/')}x`, /base64url/, 'base64 alphabet')
  // Ed25519: 64 bytes = 86 chars, whose last char carries 2 unused bits; flipping them decodes to the same bytes.
  const last = s.at(-1) as string
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const twin = alphabet[alphabet.indexOf(last) ^ 1] as string
  t.same(Buffer.from(`${s.slice(0, -1)}${twin}`, 'base64url'), Buffer.from(s, 'base64url'), 'the twin spelling decodes to the same bytes')
  refused(t, `${h}.${p}.${s.slice(0, -1)}${twin}`, /not canonical/, 'unused low bits set in the last character')
  refused(t, `${h}.${p}`, /three segments/, 'two segments')
  refused(t, `${h}.${p}.${s}.${s}`, /three segments/, 'four segments')
  refused(t, `${h}.${p}.`, /not base64url/, 'stripped signature')
  refused(t, 'x'.repeat(MAX_TOKEN_LENGTH + 1), /too long/, 'over the size cap')
})

t.test('headers are checked before any signature work', async (t) => {
  const token = await issuer.sign()
  const kid = issuer.keys.EdDSA.kid
  refused(t, withHeader(token, { alg: 'none', kid, typ: 'at+jwt' }), /alg not allowed/, 'alg none')
  refused(t, withHeader(token, { alg: 'HS256', kid, typ: 'at+jwt' }), /alg not allowed/, 'HS256')
  refused(t, withHeader(token, { alg: 'EdDSA', typ: 'at+jwt' }), /kid/, 'no kid')
  refused(t, withHeader(token, { alg: 'EdDSA', kid: '../../etc/passwd', typ: 'at+jwt' }), /kid/, 'kid with ../')
  refused(t, withHeader(token, { alg: 'EdDSA', kid: 'a"b', typ: 'at+jwt' }), /kid/, 'kid with a quote')
  refused(t, withHeader(token, { alg: 'EdDSA', kid, typ: 'JWT' }), /typ/, 'typ JWT')
  refused(t, withHeader(token, { alg: 'EdDSA', kid }), /typ/, 'no typ')
  refused(t, withHeader(token, { alg: 'EdDSA', kid, typ: 'at+jwt', jku: 'https://evil.example/jwks' }), /jku/, 'jku')
  refused(t, withHeader(token, { alg: 'EdDSA', kid, typ: 'at+jwt', jwk: issuer.keys.EdDSA.publicJwk }), /jwk/, 'jwk')
  refused(t, withHeader(token, { alg: 'EdDSA', kid, typ: 'at+jwt', x5u: 'https://evil.example/cert' }), /x5u/, 'x5u')
  refused(t, `${b64('not json')}.${token.split('.')[1]}.${token.split('.')[2]}`, /not JSON/, 'header not JSON')
  refused(t, `${b64([1])}.${token.split('.')[1]}.${token.split('.')[2]}`, /not an object/, 'header an array')
  t.equal(checkTokenFormat(withHeader(token, { alg: 'EdDSA', kid, typ: 'application/AT+JWT' })).header.typ, 'application/AT+JWT', 'typ is case-insensitive with an optional application/ prefix')
  t.throws(() => checkTokenFormat(token, ['ES256']), TokenFormatError, 'a narrower allow-list refuses EdDSA')
})

t.test('signature sizes and ECDSA ranges', async (t) => {
  const es = await issuer.sign({ alg: 'ES256' })
  const [h, p] = es.split('.') as [string, string]
  refused(t, `${h}.${p}.${Buffer.alloc(64).toString('base64url')}`, /out of range/, 'r = s = 0')
  const nBytes = Buffer.from(P256_N.toString(16), 'hex')
  refused(t, `${h}.${p}.${Buffer.concat([Buffer.alloc(31), Buffer.from([1]), nBytes]).toString('base64url')}`, /out of range/, 's = n')
  refused(t, `${h}.${p}.${Buffer.alloc(72, 1).toString('base64url')}`, /not 64 bytes/, 'DER-sized signature')
  const ed = await issuer.sign({ alg: 'EdDSA' })
  refused(t, `${ed.split('.').slice(0, 2).join('.')}.${Buffer.alloc(63, 1).toString('base64url')}`, /not 64 bytes/, 'short EdDSA signature')
  const rs = await issuer.sign({ alg: 'RS256' })
  refused(t, `${rs.split('.').slice(0, 2).join('.')}.${Buffer.alloc(128, 1).toString('base64url')}`, /length/, '1024-bit RSA signature')
})

t.test('the byte-wise range checks and low-s fold agree with BigInt arithmetic on r and s', async (t) => {
  const es = await issuer.sign({ alg: 'ES256' })
  const [h, p] = es.split('.') as [string, string]
  const bytes = (n: bigint): Buffer => Buffer.from(n.toString(16).padStart(64, '0'), 'hex')
  const value = (b: Buffer): bigint => BigInt(`0x${b.toString('hex')}`)
  const half = P256_N >> 1n
  const token = (r: bigint, s: bigint): string => `${h}.${p}.${Buffer.concat([bytes(r), bytes(s)]).toString('base64url')}`
  // Edges: each side of 1, n/2 and n, and a borrow through every byte (s = n − 1, n − 2^k).
  const edges = [1n, 2n, half - 1n, half, half + 1n, half + 2n, P256_N - 2n, P256_N - 1n, P256_N - 256n, P256_N - (1n << 128n), P256_N - (1n << 200n)]
  const random = Array.from({ length: 2000 }, () => value(randomBytes(32)) % (P256_N - 1n) + 1n)
  let wrong = 0
  for (const s of [...edges, ...random]) {
    const signature = Buffer.concat([bytes(7n), bytes(s)])
    const expected = s > half ? P256_N - s : s
    if (value(lowSEs256Signature(signature).subarray(32)) !== expected) wrong++
    if (lowSEs256Signature(signature).subarray(0, 32).compare(bytes(7n)) !== 0) wrong++
    const canonical = checkTokenFormat(token(s, s)).canonical
    if (value(Buffer.from(canonical.split('.')[2] as string, 'base64url').subarray(32)) !== expected) wrong++
  }
  t.equal(wrong, 0, `${edges.length + random.length} values of s fold to min(s, n − s), r untouched`)
  const low = Buffer.concat([bytes(7n), bytes(half)])
  t.equal(lowSEs256Signature(low), low, 'a low s is returned as it is (no copy)')
  t.equal(checkTokenFormat(token(P256_N - 1n, 1n)).canonical, token(P256_N - 1n, 1n), 'r = n − 1, s = 1: in range')
  refused(t, token(P256_N, 1n), /out of range/, 'r = n')
  refused(t, token(P256_N + 1n, 1n), /out of range/, 'r = n + 1')
  refused(t, token((1n << 256n) - 1n, 1n), /out of range/, 'r = 2^256 − 1')
  refused(t, token(0n, 1n), /out of range/, 'r = 0')
  refused(t, token(1n, 0n), /out of range/, 's = 0')
  refused(t, token(1n, P256_N + 5n), /out of range/, 's = n + 5')
})

t.test('readBearer', async (t) => {
  t.same(readBearer(undefined), { kind: 'none' })
  t.same(readBearer(''), { kind: 'none' })
  t.same(readBearer('Basic dXNlcjpwYXNz'), { kind: 'none' }, 'another scheme is no bearer credentials')
  t.same(readBearer('Bearer'), { kind: 'malformed' })
  t.same(readBearer('Bearer '), { kind: 'malformed' })
  t.same(readBearer('bearer abc'), { kind: 'token', token: 'abc' }, 'scheme is case-insensitive')
  t.same(readBearer('Bearer abc '), { kind: 'token', token: 'abc ' }, 'trailing bytes are left for the format check')
})
