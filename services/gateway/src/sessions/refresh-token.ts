/**
 * Refresh tokens: opaque strings, never stored, only their SHA-256.
 *
 *   token = <fid>.<secret>.<check>                                   (73 chars, every release)
 *     fid    22 chars  base64url(16 random bytes)  — the family's private handle
 *     secret 43 chars  base64url(32 bytes)
 *     check   6 chars  base64url(SHA-256(fid.secret))[0..6] — catches typos and tampering before any I/O
 *
 * The shape, the checksum, the hash a store keeps (SHA-256 of the whole token) and the sid
 * are the same for every token, so that replicas of two releases side by side (a rolling
 * upgrade) parse, rotate and grace each other's tokens. What differs is inside the secret:
 *
 *   Format 1 (first release; still made for the successors of format-1 tokens): the secret
 *   is random (random-pool.ts) for a first token; for a successor HMAC-SHA256(key =
 *   predecessor token, msg = nonce), nonce = 32 random bytes kept in the family record.
 *
 *   Format 2 (every first token since): secret = generation ‖ r ‖ mac
 *     generation  4 bytes big-endian — 0 for a first token, its predecessor's + 1
 *     r          16 bytes — random for a first token; for a successor the first 16 bytes of
 *                          HMAC-SHA256(key = predecessor token, msg = nonce), the format-1
 *                          derivation cut short
 *     mac        12 bytes — HMAC-SHA256(K, MAC_DOMAIN ‖ fid ‖ generation ‖ r)[0..12], K the
 *                          server key (RefreshTokenKey: REFRESH_TOKEN_KEY, or one shared
 *                          through Redis)
 *
 * Guessing (RFC 6749 §10.10: at most 2^-128): a token of either format has 256 secret bits,
 * the fid's 128 random ones and the secret's (format 2: r's 128; the generation is no
 * secret and the mac follows from the rest under K). docs/contract.md "Tokens".
 *
 * Telling the formats apart needs K: `RefreshTokenKey.recognise` decodes the secret and
 * checks the mac (one HMAC). A mac that verifies makes it format 2 at that generation;
 * anything else is an ordinary format-1 token (a random secret passes by chance with
 * probability 2^-96). A format-1 token is never rolled forward and its successor is format 1
 * (its generation is not known before the rotate script answers). A replica of the first
 * release sees every token as format 1: it rotates a format-2 token by its hash like any
 * other and gives it a format-1 successor; a grace retry at a later replica re-derives
 * whichever of the two successors the family holds (`graceSuccessor`).
 *
 * Why the generation and its mac (redis-family-store.ts `rotate`, "rolled forward"): with
 * REDIS_WAIT_REPLICAS=0 a failover can discard rotations a master already answered 200,
 * leaving the client a token Redis never heard of. Only a gateway holding K can make a token
 * whose mac verifies, and a gateway hands a successor out only in a 200: so an authentic
 * generation above the family's is a lost write, not a forgery, and the family is rolled
 * forward to it. Forging one takes K, or a 96-bit guess (RFC 2104 §5 on truncation), and
 * a wrong guess is reuse, which revokes the family: an attacker gets one try per family.
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
/** Format 2: the generation, 2^32 rotations (one a minute for 8000 years). */
const GENERATION_BYTES = 4
const MAX_GENERATION = 2 ** (8 * GENERATION_BYTES) - 1
/** Format 2: the secret part, 128 bits. */
const R_BYTES = 16
/** Format 2: the mac, what is left of the 32 bytes (96 bits). */
const MAC_BYTES = SECRET_BYTES - GENERATION_BYTES - R_BYTES
/** K's length: REFRESH_TOKEN_KEY and the key kept in Redis (RFC 2104 §3: at least the hash's output). */
export const REFRESH_TOKEN_KEY_BYTES = 32
/** Domain separation: K signs nothing else, but this keeps it so. Fixed length, so the mac's input has one reading. */
const MAC_DOMAIN = Buffer.from('latchkey refresh token 2\n')
const FID_LEN = 22
const SECRET_LEN = 43
const CHECK_LEN = 6
export const REFRESH_TOKEN_LENGTH = FID_LEN + 1 + SECRET_LEN + 1 + CHECK_LEN
const FORMAT = /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{6}$/

export interface ParsedRefreshToken {
  /** The token exactly as presented; never logged. */
  readonly raw: string
  /** Session id = Redis family key; safe to log. */
  readonly sid: string
  /** base64url SHA-256 of `raw`: the only form that reaches a store. */
  readonly hash: string
  /**
   * Format 2: the token's generation, present only when its mac verified under the key that
   * set it (`RefreshTokenKey`: mint, recognise, successor). Stores trust it as given, so it
   * comes from nowhere else. Absent: format 1.
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

export function hashToken (raw: string): string {
  return b64url(createHash('sha256').update(raw).digest())
}

function assemble (fid: string, secret: string): string {
  const body = `${fid}.${secret}`
  return `${body}.${checksum(body)}`
}

function format1 (raw: string, sid: string): ParsedRefreshToken {
  return Object.freeze({ raw, sid, hash: hashToken(raw) })
}

/**
 * The format check that runs before any store call, and the one every release shares:
 * shape, alphabet, length and the checksum. Anything else (CR/LF, `*`, 10 KB, non-ASCII,
 * an access token, a flipped character in the fid) returns null. It needs no key, so it
 * cannot tell format 2: the token it returns is a format-1 one until
 * `RefreshTokenKey.recognise` says otherwise (enough to revoke, look up or list by it).
 */
export function parseRefreshToken (raw: unknown): ParsedRefreshToken | null {
  if (typeof raw !== 'string' || raw.length !== REFRESH_TOKEN_LENGTH || !FORMAT.test(raw)) return null
  const fid = raw.slice(0, FID_LEN)
  const body = raw.slice(0, FID_LEN + 1 + SECRET_LEN)
  const given = Buffer.from(raw.slice(-CHECK_LEN))
  const expected = Buffer.from(checksum(body))
  if (!timingSafeEqual(given, expected)) return null
  // base64url of 16 / 32 bytes has unused low bits in its last char; reject non-canonical
  // spellings so one token has exactly one string form.
  if (b64url(Buffer.from(fid, 'base64url')) !== fid) return null
  const secret = raw.slice(FID_LEN + 1, FID_LEN + 1 + SECRET_LEN)
  if (b64url(Buffer.from(secret, 'base64url')) !== secret) return null
  return format1(raw, sidForFid(fid))
}

export function newNonce (): string {
  return b64url(random.take(NONCE_BYTES))
}

/** Whether `token`'s successor is format 2: it is, and not at the last generation (whose successor's could not be written). */
function format2 (token: ParsedRefreshToken): boolean {
  return token.generation !== undefined && token.generation < MAX_GENERATION
}

/** HMAC-SHA256(key = predecessor token, msg = nonce): a format-1 successor's secret, and a format-2 one's r (its first R_BYTES). */
function successorBytes (predecessor: ParsedRefreshToken, nonce: string): Buffer {
  return createHmac('sha256', predecessor.raw).update(nonce).digest()
}

/**
 * K: the server key that makes format-2 tokens (see the file comment). REFRESH_TOKEN_KEY when
 * configured; else one random key shared through Redis (redis-family-store.ts), or one per
 * process for the in-memory store.
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

  /** The mac of a format-2 secret's first bytes (generation ‖ r) in family `fid`: one HMAC over one buffer. */
  #mac (fid: string, head: Buffer): Buffer {
    const input = Buffer.allocUnsafe(MAC_DOMAIN.length + FID_BYTES + GENERATION_BYTES + R_BYTES)
    MAC_DOMAIN.copy(input, 0)
    input.write(fid, MAC_DOMAIN.length, 'base64url')
    head.copy(input, MAC_DOMAIN.length + FID_BYTES, 0, GENERATION_BYTES + R_BYTES)
    return createHmac('sha256', this.#key).update(input).digest().subarray(0, MAC_BYTES)
  }

  #format2 (fid: string, sid: string, generation: number, r: Buffer): ParsedRefreshToken {
    const secret = Buffer.allocUnsafe(SECRET_BYTES)
    secret.writeUInt32BE(generation, 0)
    r.copy(secret, GENERATION_BYTES, 0, R_BYTES)
    this.#mac(fid, secret).copy(secret, GENERATION_BYTES + R_BYTES)
    const raw = assemble(fid, b64url(secret))
    return Object.freeze({ raw, sid, hash: hashToken(raw), generation })
  }

  /** A new family's first token: format 2, generation 0. */
  mint (): ParsedRefreshToken {
    const fid = b64url(random.take(FID_BYTES))
    return this.#format2(fid, sidForFid(fid), 0, random.take(R_BYTES))
  }

  /**
   * `token` as format 2 with its generation if its mac verifies under this key, else as
   * format 1 (a format-1 token, another key's, a forgery). One HMAC, no I/O. The last
   * generation, which could have no format-2 successor, is taken as format 1 too.
   */
  recognise (token: ParsedRefreshToken): ParsedRefreshToken {
    const fid = token.raw.slice(0, FID_LEN)
    const secret = Buffer.from(token.raw.slice(FID_LEN + 1, FID_LEN + 1 + SECRET_LEN), 'base64url')
    const generation = secret.readUInt32BE(0)
    const authentic = timingSafeEqual(secret.subarray(GENERATION_BYTES + R_BYTES), this.#mac(fid, secret)) && generation < MAX_GENERATION
    if (authentic) return token.generation === generation ? token : Object.freeze({ raw: token.raw, sid: token.sid, hash: token.hash, generation })
    return token.generation === undefined ? token : format1(token.raw, token.sid)
  }

  /** `parseRefreshToken`, then `recognise`: the parser of this release. */
  parse (raw: unknown): ParsedRefreshToken | null {
    const token = parseRefreshToken(raw)
    return token === null ? null : this.recognise(token)
  }

  /**
   * The successor of `predecessor` under `nonce`: deterministic, so a grace retry gets the
   * same one. Format 2 (at the next generation) when the predecessor is, else format 1, made
   * as the first release makes every successor.
   */
  successor (predecessor: ParsedRefreshToken, nonce: string): ParsedRefreshToken {
    return this.#successor(predecessor, successorBytes(predecessor, nonce), format2(predecessor))
  }

  #successor (predecessor: ParsedRefreshToken, derived: Buffer, asFormat2: boolean): ParsedRefreshToken {
    const fid = predecessor.raw.slice(0, FID_LEN)
    if (asFormat2) return this.#format2(fid, predecessor.sid, (predecessor.generation as number) + 1, derived)
    return format1(assemble(fid, b64url(derived)), predecessor.sid)
  }

  /**
   * A grace answer: the successor the family holds for `predecessor` under `nonce` (`held`
   * tells whether a candidate is it), whichever gateway made it — one of this release (format
   * 2 for a format-2 predecessor) or of the first (format 1 for any). Undefined when neither
   * is held: the rotation was made under another key (its format-2 successor has another mac
   * and this key took the predecessor for format 1), and no token the store does not know
   * may be handed out.
   */
  graceSuccessor (predecessor: ParsedRefreshToken, nonce: string, held: (candidate: ParsedRefreshToken) => boolean): ParsedRefreshToken | undefined {
    const derived = successorBytes(predecessor, nonce)
    if (format2(predecessor)) {
      const candidate = this.#successor(predecessor, derived, true)
      if (held(candidate)) return candidate
    }
    const candidate = this.#successor(predecessor, derived, false)
    return held(candidate) ? candidate : undefined
  }
}

/**
 * A first token as the first release minted it (of a new family, or of the family `fid`):
 * what sessions from before format 2 hold, for the tests of their compatibility. The
 * gateway itself no longer mints these.
 */
export function mintFormat1Token (fid = b64url(random.take(FID_BYTES))): ParsedRefreshToken {
  return format1(assemble(fid, b64url(random.take(SECRET_BYTES))), sidForFid(fid))
}

/** Constant-time equality of two token hashes (the in-memory store's comparison). */
export function hashesEqual (a: string, b: string): boolean {
  return sameString(a, b)
}
