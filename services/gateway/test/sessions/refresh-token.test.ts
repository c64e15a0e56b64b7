/**
 * The refresh-token formats (refresh-token.ts): format 2 inside the shape every release
 * shares, format 1 still read and still made for format-1 successors, and what a rolling
 * upgrade leans on: the previous release's parser accepts every token this one makes, and
 * this one reads what the previous release makes of them.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import t from 'tap'
import { mintFormat1Token, newNonce, parseRefreshToken, RefreshTokenKey, REFRESH_TOKEN_LENGTH, sidForFid, type ParsedRefreshToken } from '#gateway/sessions/refresh-token.js'

/*
 * Fixture: the previous release's parser and successor derivation (services/gateway/src/
 * sessions/refresh-token.ts at 9980e28), copied as they were. They stand for a replica not
 * yet upgraded during a rolling upgrade: every token this release makes must pass that
 * parser with the same sid and hash, and what that derivation makes of them must be read
 * here. Do not update them with the product code; that is the point.
 */
const PREVIOUS_FORMAT = /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{6}$/
function previousChecksum (body: string): string {
  return createHash('sha256').update(body).digest('base64url').slice(0, 6)
}
function previousHashToken (raw: string): string {
  return createHash('sha256').update(raw).digest('base64url')
}
function previousParse (raw: unknown): { raw: string, sid: string, hash: string } | null {
  if (typeof raw !== 'string' || raw.length !== 22 + 1 + 43 + 1 + 6 || !PREVIOUS_FORMAT.test(raw)) return null
  const fid = raw.slice(0, 22)
  const body = raw.slice(0, 22 + 1 + 43)
  const given = Buffer.from(raw.slice(-6))
  const expected = Buffer.from(previousChecksum(body))
  if (!timingSafeEqual(given, expected)) return null
  if (Buffer.from(fid, 'base64url').toString('base64url') !== fid) return null
  const secret = raw.slice(22 + 1, 22 + 1 + 43)
  if (Buffer.from(secret, 'base64url').toString('base64url') !== secret) return null
  return Object.freeze({ raw, sid: createHash('sha256').update(`sid:${fid}`).digest('base64url').slice(0, 22), hash: previousHashToken(raw) })
}
function previousDeriveSuccessor (predecessor: { raw: string, sid: string }, nonce: string): { raw: string, sid: string, hash: string } {
  const fid = predecessor.raw.slice(0, 22)
  const secret = createHmac('sha256', predecessor.raw).update(nonce).digest('base64url')
  const body = `${fid}.${secret}`
  const raw = `${body}.${previousChecksum(body)}`
  return Object.freeze({ raw, sid: predecessor.sid, hash: previousHashToken(raw) })
}
/* End of the fixture. */

const key = RefreshTokenKey.random()

function secretOf (token: ParsedRefreshToken): Buffer {
  return Buffer.from(token.raw.split('.')[1] as string, 'base64url')
}

/** `body` with its check computed, as anyone can (it is a checksum, not a mac). */
function rechecked (body: string): string {
  return `${body}.${previousChecksum(body)}`
}

t.test('format 2 has the one shape: <fid>.<secret>.<check>, 73 chars, generation ‖ r ‖ mac inside the secret', async (t) => {
  const t0 = key.mint()
  t.equal(REFRESH_TOKEN_LENGTH, 73)
  t.equal(t0.raw.length, 73)
  t.match(t0.raw, PREVIOUS_FORMAT)
  t.equal(t0.generation, 0)
  t.equal(secretOf(t0).readUInt32BE(0), 0, 'the secret starts with the generation, big-endian')
  t.equal(t0.sid, sidForFid(t0.raw.slice(0, 22)))
  t.equal(t0.hash, createHash('sha256').update(t0.raw).digest('base64url'), 'the hash is of the whole token, as in format 1')
  t.same(key.parse(t0.raw), t0, 'parses back to itself')
  t.same(parseRefreshToken(t0.raw), { raw: t0.raw, sid: t0.sid, hash: t0.hash }, 'without the key: the same token, taken for format 1')
  const fids = new Set<string>()
  const rs = new Set<string>()
  for (let i = 0; i < 200; i++) {
    const m = key.mint()
    fids.add(m.raw.slice(0, 22))
    rs.add(secretOf(m).subarray(4, 20).toString('hex'))
  }
  t.equal(fids.size + rs.size, 400, 'fid and r are drawn afresh for every first token (128 + 128 secret bits, RFC 6749 §10.10)')
  let token = t0
  for (let g = 1; g <= 3; g++) {
    token = key.successor(token, newNonce())
    t.equal(token.generation, g)
    t.equal(secretOf(token).readUInt32BE(0), g)
    t.same(key.parse(token.raw), token, `generation ${g} parses back`)
  }
})

t.test("a successor's r is HMAC-SHA256(predecessor token, nonce) cut to 16 bytes: deterministic, so grace re-derives it", async (t) => {
  const t0 = key.mint()
  const nonce = newNonce()
  const t1 = key.successor(t0, nonce)
  t.same(secretOf(t1).subarray(4, 20), createHmac('sha256', t0.raw).update(nonce).digest().subarray(0, 16))
  t.equal(t1.raw.slice(0, 22), t0.raw.slice(0, 22), 'same fid')
  t.equal(t1.sid, t0.sid)
  t.equal(key.successor(t0, nonce).raw, t1.raw, 'the same string again')
  t.not(key.successor(t0, newNonce()).hash, t1.hash, 'another nonce, another token')
})

t.test('recognise: format 2 only under the key that made the token; anything else is format 1', async (t) => {
  const t1 = key.successor(key.mint(), newNonce())
  t.equal(key.recognise(parseRefreshToken(t1.raw) as ParsedRefreshToken).generation, 1)
  const foreign = RefreshTokenKey.random().parse(t1.raw)
  t.same(foreign, { raw: t1.raw, sid: t1.sid, hash: t1.hash }, 'another key: the same token as format 1 (no generation)')
  const [fid, secret] = t1.raw.split('.') as [string, string]
  const bytes = Buffer.from(secret, 'base64url')
  const bumped = Buffer.from(bytes)
  bumped.writeUInt32BE(9, 0)
  const lifted = key.parse(rechecked(`${fid}.${bumped.toString('base64url')}`))
  t.ok(lifted !== null, 'a generation edited by hand (check recomputed) still parses…')
  t.equal(lifted?.generation, undefined, '…as format 1: its mac does not verify')
  const flipped = Buffer.from(bytes)
  flipped[31] = (flipped[31] as number) ^ 0x04
  const forged = key.parse(rechecked(`${fid}.${flipped.toString('base64url')}`))
  t.equal(forged?.generation, undefined, 'a changed mac: format 1')
  t.equal(key.parse(mintFormat1Token().raw)?.generation, undefined, 'a format-1 token: format 1')
  t.equal(key.recognise(Object.freeze({ ...t1, generation: 7 })).generation, 1, 'the generation comes from the token, never from what the object claimed')
  t.equal(RefreshTokenKey.random().recognise(t1).generation, undefined, '…nor does a generation another key set survive')
})

t.test('rolling upgrade: the previous release parses every token this one makes, as the same token', async (t) => {
  let token = key.mint()
  for (let g = 0; g <= 3; g++) {
    const old = previousParse(token.raw)
    t.ok(old !== null, `generation ${g} passes the previous release's parser (regex, length, checksum, canonical spelling)`)
    t.equal(old?.sid, token.sid, 'same sid')
    t.equal(old?.hash, token.hash, 'same hash: the previous release finds it in the family')
    token = key.successor(token, newNonce())
  }
})

t.test("rolling upgrade: what the previous release makes of a format-2 token is read here as format 1, and stays format 1", async (t) => {
  const t1 = key.successor(key.mint(), newNonce())
  const nonce = newNonce()
  const oldSuccessor = previousDeriveSuccessor(previousParse(t1.raw) as ParsedRefreshToken, nonce)
  const read = key.parse(oldSuccessor.raw)
  t.same(read, oldSuccessor, 'the previous release\'s successor parses here, as format 1 (no generation)')
  t.same(key.successor(parseRefreshToken(t1.raw) as ParsedRefreshToken, nonce), oldSuccessor, 'and is what this release makes of the token taken as format 1')
  const next = key.successor(read as ParsedRefreshToken, newNonce())
  t.equal(next.generation, undefined, 'its successor is format 1')
  t.ok(previousParse(next.raw) !== null)
  const f0 = mintFormat1Token()
  const n = newNonce()
  t.same(key.successor(f0, n), previousDeriveSuccessor(f0, n), 'a format-1 successor is made exactly as the previous release makes it')
})

t.test('graceSuccessor: the held one of the two candidates, or none', async (t) => {
  const t0 = key.mint()
  const nonce = newNonce()
  const format2 = key.successor(t0, nonce)
  const format1 = previousDeriveSuccessor(t0, nonce)
  const holding = (hash: string) => (c: ParsedRefreshToken): boolean => c.hash === hash
  t.same(key.graceSuccessor(t0, nonce, holding(format2.hash)), format2, 'made here: format 2')
  t.same(key.graceSuccessor(t0, nonce, holding(format1.hash)), format1, 'made by the previous release: format 1')
  const underAnother = RefreshTokenKey.random()
  const theirs = underAnother.successor(underAnother.mint(), nonce)
  t.equal(key.graceSuccessor(key.parse(theirs.raw) as ParsedRefreshToken, nonce, holding(underAnother.successor(theirs, nonce).hash)), undefined,
    'made under another key from a token that is format 2 there and format 1 here: neither')
  const seen: string[] = []
  const f0 = mintFormat1Token()
  t.same(key.graceSuccessor(f0, nonce, (c) => { seen.push(c.raw); return true }), previousDeriveSuccessor(f0, nonce))
  t.equal(seen.length, 1, 'a format-1 predecessor has one candidate')
})

t.test('anything else is refused before any I/O', async (t) => {
  const t0 = key.successor(key.mint(), newNonce())
  const [fid, secret, check] = t0.raw.split('.') as [string, string, string]
  const lastBits = (s: string): string => s.slice(0, -1) + (s.endsWith('A') ? 'B' : String.fromCharCode(s.charCodeAt(s.length - 1) + 1))
  const bad: Array<[string, unknown]> = [
    ['a flipped fid character', `${(fid[0] === 'A' ? 'B' : 'A') + fid.slice(1)}.${secret}.${check}`],
    ['a flipped check', `${fid}.${secret}.${(check[0] === 'A' ? 'B' : 'A') + check.slice(1)}`],
    ['a non-canonical secret spelling', rechecked(`${fid}.${lastBits(secret)}`)],
    ['no check', `${fid}.${secret}`],
    ['a space after it', `${t0.raw} `],
    ['the 105-character shape of an unreleased format', rechecked(`${fid}.AAAAAAAA.${secret}.${'A'.repeat(22)}`)],
    ['not a string', 42],
    ['10 KB', 'x'.repeat(10_240)]
  ]
  for (const [what, raw] of bad) {
    t.equal(parseRefreshToken(raw), null, what)
    t.equal(key.parse(raw), null, `${what} (with the key)`)
  }
})

t.test('a refresh-token key has at least 32 bytes', async (t) => {
  t.throws(() => new RefreshTokenKey(Buffer.alloc(31)), RangeError)
  t.doesNotThrow(() => new RefreshTokenKey(Buffer.alloc(64)))
})
