/**
 * The refresh-token format (refresh-token.ts): format 2 with its authenticated generation,
 * format 1 still read, and the properties the family rules lean on.
 */
import { createHash } from 'node:crypto'
import t from 'tap'
import { mintFormat1Token, newNonce, parseRefreshToken, RefreshTokenKey, sidForFid } from '#gateway/sessions/refresh-token.js'

const key = RefreshTokenKey.random()

/** `token` with its check recomputed, as anyone can (it is a checksum, not a mac). */
function rechecked (body: string): string {
  return `${body}.${createHash('sha256').update(body).digest('base64url').slice(0, 6)}`
}

t.test('format 2: <fid>.<gen>.<secret>.<mac>.<check>, parsed back to itself', async (t) => {
  const t0 = key.mint()
  t.match(t0.raw, /^[A-Za-z0-9_-]{22}\.AAAAAAAA\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{6}$/, 'generation 0')
  t.equal(Buffer.from(t0.raw.split('.')[2] as string, 'base64url').length, 32, '256 bits of secret (docs/contract.md "Tokens")')
  t.same(parseRefreshToken(t0.raw), t0)
  t.equal(t0.sid, sidForFid(t0.raw.slice(0, 22)))
  t.equal(t0.hash, createHash('sha256').update(t0.raw.slice(0, 75)).digest('base64url'), 'the hash covers the core only')
  let token = t0
  for (let g = 1; g <= 3; g++) {
    token = key.successor(token, newNonce())
    t.equal(token.generation, g)
    t.same(parseRefreshToken(token.raw), token, `generation ${g} parses back`)
  }
  t.equal(key.authenticGeneration(token), 3)
})

t.test('the successor is the same whichever key answers; only the mac differs', async (t) => {
  const other = RefreshTokenKey.random()
  const t0 = key.mint()
  const nonce = newNonce()
  const a = key.successor(t0, nonce)
  const b = other.successor(t0, nonce)
  t.not(a.raw, b.raw)
  t.equal(a.hash, b.hash, 'one token for the store')
  t.equal(a.raw.slice(0, 75), b.raw.slice(0, 75), 'one core')
  t.equal(key.successor(a, nonce).hash, key.successor(b, nonce).hash, 'and the next successor too (derived from the core)')
  t.equal(key.successor(t0, nonce).raw, a.raw, 'deterministic: a grace retry gets the same string')
  t.not(key.successor(t0, newNonce()).hash, a.hash, 'another nonce, another token')
})

t.test('authenticGeneration: only under the key that made the token, and never for format 1', async (t) => {
  const t1 = key.successor(key.mint(), newNonce())
  t.equal(key.authenticGeneration(t1), 1)
  t.equal(RefreshTokenKey.random().authenticGeneration(t1), undefined, 'another key')
  const [fid, gen, secret, mac] = t1.raw.split('.') as [string, string, string, string]
  const bumped = Buffer.from(gen, 'base64url')
  bumped[5] = 9
  const lifted = parseRefreshToken(rechecked(`${fid}.${bumped.toString('base64url')}.${secret}.${mac}`))
  t.equal(lifted?.generation, 9, 'a generation edited by hand parses (the check is no mac)…')
  t.not(lifted?.hash, t1.hash, '…is another token for the store…')
  t.equal(lifted === null ? 0 : key.authenticGeneration(lifted), undefined, '…and is not authentic')
  const flippedMac = (mac[0] === 'A' ? 'B' : 'A') + mac.slice(1)
  const forged = parseRefreshToken(rechecked(`${fid}.${gen}.${secret}.${flippedMac}`))
  t.equal(forged?.hash, t1.hash, 'a changed mac does not change the token…')
  t.equal(forged === null ? 0 : key.authenticGeneration(forged), undefined, '…but it is not authentic')
  const old = mintFormat1Token()
  t.equal(key.authenticGeneration(old), undefined, 'format 1 carries no generation')
})

t.test('format 1 (before the upgrade) still parses, and its successors stay format 1', async (t) => {
  const t0 = mintFormat1Token()
  t.match(t0.raw, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{6}$/)
  t.same(parseRefreshToken(t0.raw), t0)
  t.equal(t0.hash, createHash('sha256').update(t0.raw).digest('base64url'), 'hashed whole, as before')
  const t1 = key.successor(t0, newNonce())
  t.equal(t1.raw.length, 73)
  t.equal(t1.generation, undefined)
  t.same(parseRefreshToken(t1.raw), t1)
})

t.test('anything else is refused before any I/O', async (t) => {
  const t0 = key.successor(key.mint(), newNonce())
  const [fid, gen, secret, mac, check] = t0.raw.split('.') as [string, string, string, string, string]
  const lastBits = (s: string): string => s.slice(0, -1) + (s.endsWith('A') ? 'B' : String.fromCharCode(s.charCodeAt(s.length - 1) + 1))
  const bad: Array<[string, unknown]> = [
    ['a flipped fid character', `${(fid[0] === 'A' ? 'B' : 'A') + fid.slice(1)}.${gen}.${secret}.${mac}.${check}`],
    ['a flipped check', `${fid}.${gen}.${secret}.${mac}.${(check[0] === 'A' ? 'B' : 'A') + check.slice(1)}`],
    ['a non-canonical mac spelling', rechecked(`${fid}.${gen}.${secret}.${lastBits(mac)}`)],
    ['a non-canonical secret spelling', rechecked(`${fid}.${gen}.${lastBits(secret)}.${mac}`)],
    ['no check', `${fid}.${gen}.${secret}.${mac}`],
    ['a space after it', `${t0.raw} `],
    ['a mixed format', rechecked(`${fid}.${secret}.${mac}`)],
    ['the last generation, which could have no successor', rechecked(`${fid}.________.${secret}.${mac}`)],
    ['not a string', 42],
    ['10 KB', 'x'.repeat(10_240)]
  ]
  for (const [what, raw] of bad) t.equal(parseRefreshToken(raw), null, what)
})

t.test('a refresh-token key has at least 32 bytes', async (t) => {
  t.throws(() => new RefreshTokenKey(Buffer.alloc(31)), RangeError)
  t.doesNotThrow(() => new RefreshTokenKey(Buffer.alloc(64)))
})
