/**
 * Refresh tokens: opaque strings, never stored, only their SHA-256.
 *
 *   token = <fid>.<secret>.<check>
 *     fid    22 chars  base64url(16 random bytes)  — the family's private handle
 *     secret 43 chars  base64url(32 bytes)         — random (random-pool.ts) for the first token; for each
 *                                                    successor HMAC-SHA256(key = predecessor token,
 *                                                    msg = nonce), nonce = 32 random bytes kept in Redis
 *     check   6 chars  base64url(SHA-256(fid.secret))[0..6] — catches typos and tampering before any I/O
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
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { sameString } from '#shared/same-string.js'
import { RandomPool } from './random-pool.js'

/** 256 bits of secret per token (docs/contract.md "Tokens"). */
export const SECRET_BYTES = 32
export const FID_BYTES = 16
export const NONCE_BYTES = 32
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

/**
 * The format check that runs before any store call: shape, alphabet, length and the
 * checksum. Anything else (CR/LF, `*`, 10 KB, non-ASCII, an access token, a flipped
 * character in the fid) returns null.
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
  return Object.freeze({ raw, sid: sidForFid(fid), hash: hashToken(raw) })
}

/** A new family's first token. */
export function mintInitialToken (): ParsedRefreshToken {
  const fid = b64url(random.take(FID_BYTES))
  const raw = assemble(fid, b64url(random.take(SECRET_BYTES)))
  return Object.freeze({ raw, sid: sidForFid(fid), hash: hashToken(raw) })
}

export function newNonce (): string {
  return b64url(random.take(NONCE_BYTES))
}

/** The successor of `predecessor` under `nonce`: deterministic, so a grace retry gets the same one. */
export function deriveSuccessor (predecessor: ParsedRefreshToken, nonce: string): ParsedRefreshToken {
  const fid = predecessor.raw.slice(0, FID_LEN)
  const secret = b64url(createHmac('sha256', predecessor.raw).update(nonce).digest())
  const raw = assemble(fid, secret)
  return Object.freeze({ raw, sid: predecessor.sid, hash: hashToken(raw) })
}

/** Constant-time equality of two token hashes (the in-memory store's comparison). */
export function hashesEqual (a: string, b: string): boolean {
  return sameString(a, b)
}
