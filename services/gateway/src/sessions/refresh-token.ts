/**
 * Refresh tokens: opaque strings, never stored, only their SHA-256.
 *
 * Format 2 (every token minted since; 105 chars):
 *
 *   token = <fid>.<gen>.<secret>.<mac>.<check>
 *     fid    22 chars  base64url(16 random bytes)  — the family's private handle
 *     gen     8 chars  base64url(6-byte big-endian) — the token's generation: 0 for the first
 *                                                    token, its predecessor's + 1
 *     secret 43 chars  base64url(32 bytes)         — random (random-pool.ts) for the first token; for each
 *                                                    successor HMAC-SHA256(key = predecessor's core,
 *                                                    msg = nonce), nonce = 32 random bytes kept in Redis
 *     mac    22 chars  base64url(HMAC-SHA256(K, MAC_DOMAIN ‖ core)[0..16]) — K: RefreshTokenKey
 *     check   6 chars  base64url(SHA-256(everything before it))[0..6] — catches typos and
 *                                                    tampering before any I/O
 *   core = <fid>.<gen>.<secret>: the token's identity. Its hash is what Redis keeps, and the
 *   successor is derived from it; the mac is not part of either.
 *
 * Format 1 (gateways before format 2; 73 chars): <fid>.<secret>.<check>, hash and successor
 * over the whole string. Still parsed, rotated and graced, and its successors stay format 1,
 * because a format-1 family's generation is not known to the gateway before the rotate script
 * answers: those sessions keep working until they end, they only cannot be rolled forward.
 *
 * Why the mac (docs/architecture.md, "rolled forward"): with REDIS_WAIT_REPLICAS=0 a failover
 * can discard rotations a master already answered 200, leaving the client a token Redis never
 * heard of. The mac lets the gateway tell such a token, without the lost write, from a forgery:
 * only a gateway holding K can have made a token whose mac verifies, and a gateway hands a
 * successor out only in a 200. Its generation, authenticated so, is what the rotate script
 * compares with the family's. The mac stays out of the hash and the derivation so that K can
 * differ between two gateways (a rolling change of REFRESH_TOKEN_KEY, a key lost with Redis)
 * without any token's identity changing: that only turns the rolling forward off, never a
 * token into reuse.
 *
 * The session id (`sid` in access tokens, `id` in /auth/sessions, the Redis key) is
 * base64url(SHA-256("sid:" + fid))[0..22]. Access tokens are seen by every upstream, so
 * knowing a sid must not let anyone build a refresh token of that family: the fid is
 * known only to holders of the family's refresh tokens.
 *
 * Successors are derived, not drawn, so that the grace rule (docs/contract.md "Refresh-token
 * families" 3) can hand the *same* successor to a retried predecessor while Redis holds
 * only hashes: whoever presents the predecessor within the grace window gets the
 * nonce back and recomputes the successor; nobody without the predecessor can.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { sameString } from '#shared/same-string.js'
import { RandomPool } from './random-pool.js'

/** 256 bits of secret per token (docs/contract.md "Tokens"). */
export const SECRET_BYTES = 32
export const FID_BYTES = 16
export const NONCE_BYTES = 32
/** Bytes of a token's generation: 2^48 rotations, never reached within a session's lifetime. */
const GENERATION_BYTES = 6
const MAX_GENERATION = 2 ** (8 * GENERATION_BYTES) - 1
/** Bytes of HMAC-SHA256 kept as the mac: forging one takes ~2^128 tries (RFC 2104 §5, truncation). */
const MAC_BYTES = 16
/** K's length: REFRESH_TOKEN_KEY and the key kept in Redis (RFC 2104 §3: at least the hash's output). */
export const REFRESH_TOKEN_KEY_BYTES = 32
/** Domain separation: K signs nothing else, but this keeps it so. */
const MAC_DOMAIN = 'latchkey refresh token 2\n'
const FID_LEN = 22
const GEN_LEN = 8
const SECRET_LEN = 43
const MAC_LEN = 22
const CHECK_LEN = 6
const CORE_LEN = FID_LEN + 1 + GEN_LEN + 1 + SECRET_LEN
export const REFRESH_TOKEN_LENGTH = CORE_LEN + 1 + MAC_LEN + 1 + CHECK_LEN
const FORMAT_1_LENGTH = FID_LEN + 1 + SECRET_LEN + 1 + CHECK_LEN
const FORMAT_1 = /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{6}$/
const FORMAT_2 = /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{6}$/

export interface ParsedRefreshToken {
  /** The token exactly as presented; never logged. */
  readonly raw: string
  /** Session id = Redis family key; safe to log. */
  readonly sid: string
  /** base64url SHA-256 of the token's core (format 1: of `raw`): the only form that reaches a store. */
  readonly hash: string
  /**
   * Format 2: the generation the token states. Bound to it by `hash` (so a current token's is
   * right), but trusted on its own only once `RefreshTokenKey.authenticGeneration` verified the
   * mac. Absent for format 1.
   */
  readonly generation?: number
}

const random = new RandomPool()

function b64url (buf: Buffer): string {
  return buf.toString('base64url')
}

function checksum (body: string): string {
  return b64url(createHash('sha256').update(body).digest()).slice(0, CHECK_LEN)
}

export function sidForFid (fid: string): string {
  return b64url(createHash('sha256').update(`sid:${fid}`).digest()).slice(0, FID_LEN)
}

function sha256 (text: string): string {
  return b64url(createHash('sha256').update(text).digest())
}

function canonical (part: string): boolean {
  // base64url of 16 / 32 bytes has unused low bits in its last char; reject non-canonical
  // spellings so one token has exactly one string form.
  return b64url(Buffer.from(part, 'base64url')) === part
}

function encodeGeneration (generation: number): string {
  if (!Number.isSafeInteger(generation) || generation < 0 || generation > MAX_GENERATION) throw new RangeError('refresh-token generation out of range')
  const buf = Buffer.alloc(GENERATION_BYTES)
  buf.writeUIntBE(generation, 0, GENERATION_BYTES)
  return b64url(buf)
}

/**
 * The format check that runs before any store call: shape, alphabet, length and the
 * checksum. Anything else (CR/LF, `*`, 10 KB, non-ASCII, an access token, a flipped
 * character in the fid) returns null. The mac is not checked here (it needs K, which
 * the store holds); a token whose mac fails is still a token, only never rolled forward.
 */
export function parseRefreshToken (raw: unknown): ParsedRefreshToken | null {
  if (typeof raw !== 'string' || (raw.length !== REFRESH_TOKEN_LENGTH && raw.length !== FORMAT_1_LENGTH)) return null
  const format2 = raw.length === REFRESH_TOKEN_LENGTH
  if (!(format2 ? FORMAT_2 : FORMAT_1).test(raw)) return null
  const given = Buffer.from(raw.slice(-CHECK_LEN))
  const expected = Buffer.from(checksum(raw.slice(0, -CHECK_LEN - 1)))
  if (!timingSafeEqual(given, expected)) return null
  const fid = raw.slice(0, FID_LEN)
  if (!canonical(fid)) return null
  if (!format2) {
    if (!canonical(raw.slice(FID_LEN + 1, FID_LEN + 1 + SECRET_LEN))) return null
    return Object.freeze({ raw, sid: sidForFid(fid), hash: sha256(raw) })
  }
  if (!canonical(raw.slice(CORE_LEN - SECRET_LEN, CORE_LEN)) || !canonical(raw.slice(CORE_LEN + 1, CORE_LEN + 1 + MAC_LEN))) return null
  const generation = Buffer.from(raw.slice(FID_LEN + 1, FID_LEN + 1 + GEN_LEN), 'base64url').readUIntBE(0, GENERATION_BYTES)
  // The last generation could have no successor: garbage, like any token nobody can rotate.
  if (generation >= MAX_GENERATION) return null
  return Object.freeze({ raw, sid: sidForFid(fid), hash: sha256(raw.slice(0, CORE_LEN)), generation })
}

export function newNonce (): string {
  return b64url(random.take(NONCE_BYTES))
}

/**
 * K: the server key that makes format-2 tokens authenticatable (see the file comment).
 * REFRESH_TOKEN_KEY when configured; else one random key shared through Redis
 * (redis-family-store.ts), or one per process for the in-memory store.
 */
export class RefreshTokenKey {
  readonly #key: Buffer

  constructor (key: Buffer) {
    if (key.length < REFRESH_TOKEN_KEY_BYTES) throw new RangeError(`a refresh-token key has at least ${REFRESH_TOKEN_KEY_BYTES} bytes`)
    this.#key = Buffer.from(key)
  }

  static random (): RefreshTokenKey {
    return new RefreshTokenKey(randomBytes(REFRESH_TOKEN_KEY_BYTES))
  }

  /** The key's bytes, to share it (the Redis store puts it back should Redis have lost it). */
  bytes (): Buffer {
    return Buffer.from(this.#key)
  }

  #mac (core: string): string {
    return b64url(createHmac('sha256', this.#key).update(MAC_DOMAIN + core).digest().subarray(0, MAC_BYTES))
  }

  #token (core: string, sid: string, generation: number): ParsedRefreshToken {
    const body = `${core}.${this.#mac(core)}`
    return Object.freeze({ raw: `${body}.${checksum(body)}`, sid, hash: sha256(core), generation })
  }

  /** A new family's first token (format 2, generation 0). */
  mint (): ParsedRefreshToken {
    const fid = b64url(random.take(FID_BYTES))
    return this.#token(`${fid}.${encodeGeneration(0)}.${b64url(random.take(SECRET_BYTES))}`, sidForFid(fid), 0)
  }

  /**
   * The successor of `predecessor` under `nonce`: deterministic, so a grace retry gets the
   * same one — whichever gateway answers it, since only the mac depends on K. A format-1
   * predecessor gets a format-1 successor (see the file comment).
   */
  successor (predecessor: ParsedRefreshToken, nonce: string): ParsedRefreshToken {
    const fid = predecessor.raw.slice(0, FID_LEN)
    if (predecessor.generation === undefined) {
      const body = `${fid}.${b64url(createHmac('sha256', predecessor.raw).update(nonce).digest())}`
      const raw = `${body}.${checksum(body)}`
      return Object.freeze({ raw, sid: predecessor.sid, hash: sha256(raw) })
    }
    const generation = predecessor.generation + 1
    const secret = b64url(createHmac('sha256', predecessor.raw.slice(0, CORE_LEN)).update(nonce).digest())
    return this.#token(`${fid}.${encodeGeneration(generation)}.${secret}`, predecessor.sid, generation)
  }

  /**
   * The token's generation if its mac verifies under this key (a gateway made it), else
   * undefined (format 1, another key, a forgery). One HMAC, no I/O.
   */
  authenticGeneration (token: ParsedRefreshToken): number | undefined {
    if (token.generation === undefined) return undefined
    const mac = token.raw.slice(CORE_LEN + 1, CORE_LEN + 1 + MAC_LEN)
    return sameString(mac, this.#mac(token.raw.slice(0, CORE_LEN))) ? token.generation : undefined
  }
}

/**
 * A first token as gateways minted it before format 2 (of a new family, or of the family
 * `fid`): what pre-upgrade sessions still hold, for the tests of their compatibility. The
 * gateway itself no longer mints these.
 */
export function mintFormat1Token (fid = b64url(random.take(FID_BYTES))): ParsedRefreshToken {
  const body = `${fid}.${b64url(random.take(SECRET_BYTES))}`
  const raw = `${body}.${checksum(body)}`
  return Object.freeze({ raw, sid: sidForFid(fid), hash: sha256(raw) })
}

/** Constant-time equality of two token hashes (the in-memory store's comparison). */
export function hashesEqual (a: string, b: string): boolean {
  return sameString(a, b)
}
