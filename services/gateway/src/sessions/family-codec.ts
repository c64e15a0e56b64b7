/**
 * The stored family format: the one place that knows where each field sits, for the Lua
 * scripts (redis-scripts.ts reads and writes fields by the names defined here) and for
 * JavaScript (the store decodes script replies here; the bench and tests encode and
 * decode stored values here).
 *
 * A family is one Redis STRING: a MessagePack array, packed by Redis' Lua `cmsgpack`, of
 *
 *   [1] format version        [2] user id         [3] client id      [4] scope
 *   [5] current token hash    [6] previous hash   [7] nonce of the last rotation
 *   [8] generation            [9] rotated at      [10] created at    [11] last used at
 *   [12] idle expiry          [13] absolute expiry                    [14] user agent
 *   [15] ip                   [16] identity provider ('' for a password login; version 2)
 *   [17] pending: 1 while the current token is a successor no gateway has answered 200
 *        yet (written with REDIS_WAIT_REPLICAS until the answer is given; version 3)
 *   [18] the IdP's refresh token, sealed (identity/oidc/idp-token-seal.ts; '' when the
 *        family is not bound to one; version 4)
 *   [19] when the IdP last vouched for the account (ms, the gateway's clock; 0; version 4)
 *
 * Token hashes are the first STORED_HASH_BYTES (16) bytes of the token's SHA-256 (families
 * written before kept all 32; the scripts compare the presented hash cut to the stored
 * length, so both verify), the nonce 32 raw bytes, times ms in Redis' clock, the user agent
 * encoded (user-agent-codec.ts). A packed string rather than a HASH because a hash with any
 * value over 64 bytes (a browser's user agent) leaves the compact listpack encoding and
 * doubles in size (measured: ~1040 vs ~456 bytes).
 *
 * Versions: 1 has fields 1–15; 2 adds [16]; 3 adds [17]; 4 adds [18] and [19]. Every
 * reader accepts all four (a version-1 family has no provider, an older one is not pending
 * and not bound to an IdP) and every write stores version 4, so old families upgrade on
 * their next write. Fields may be appended, never moved.
 */
import type { Family } from './family-store.js'
import { decodeUserAgent } from './user-agent-codec.js'

export const FAMILY_FORMAT_VERSION = 4
/**
 * Bytes of a token's SHA-256 kept in Redis. Finding a token for a stored 128-bit prefix
 * still takes ~2^128 work (the token holds 256 random bits), and the 32 bytes saved per
 * family (current and previous hash) keep a session under the 400-byte budget (npm run bench).
 */
export const STORED_HASH_BYTES = 16

/** The stored form of a token hash. */
export function storedHash (hash: Buffer): Buffer {
  return hash.subarray(0, STORED_HASH_BYTES)
}

/** Lua array positions (1-based), in stored order. */
const FIELDS = [
  'VERSION', 'USER', 'CLIENT', 'SCOPE', 'HASH', 'PREV', 'NONCE', 'GEN',
  'ROTATED', 'CREATED', 'LAST_USED', 'IDLE_EXP', 'ABS_EXP', 'UA', 'IP', 'PROVIDER', 'PENDING',
  'IDP_TOKEN', 'IDP_CHECKED'
] as const

/**
 * Lua prelude for every script that touches a family: `F_<NAME>` positions, `load_family`
 * (unpack, upgrade an older version in memory) and `pack_family` (stamp the current
 * version, pack). A missing field would end a Lua array early and cmsgpack would pack a
 * map, so upgrades fill every appended field.
 */
export const LUA_FAMILY_PRELUDE = `${FIELDS.map((name, i) => `local F_${name} = ${i + 1}`).join('\n')}
local function load_family (blob)
  local f = cmsgpack.unpack(blob)
  if f[F_PROVIDER] == nil then f[F_PROVIDER] = '' end
  if f[F_PENDING] == nil then f[F_PENDING] = 0 end
  if f[F_IDP_TOKEN] == nil then f[F_IDP_TOKEN] = '' end
  if f[F_IDP_CHECKED] == nil then f[F_IDP_CHECKED] = 0 end
  return f
end
local function pack_family (f)
  f[F_VERSION] = ${FAMILY_FORMAT_VERSION}
  return cmsgpack.pack(f)
end
`

/**
 * The public part of a family as scripts reply with it (Lua table constructor): user,
 * client, scope, generation, created, last used, idle expiry, absolute expiry, user agent,
 * ip, provider. `familyFromReply` reads it back.
 */
export const LUA_PUBLIC_FIELDS = '{f[F_USER], f[F_CLIENT], f[F_SCOPE], f[F_GEN], f[F_CREATED], f[F_LAST_USED], f[F_IDLE_EXP], f[F_ABS_EXP], f[F_UA], f[F_IP], f[F_PROVIDER]}'
/** How many reply elements LUA_PUBLIC_FIELDS makes. */
export const PUBLIC_FIELD_COUNT = 11
/**
 * The IdP binding as the rotate script appends it to its reply (after the public fields
 * and, for grace, the nonce): kept out of LUA_PUBLIC_FIELDS so that no listing or lookup
 * ever carries the sealed token. `idpBindingFromReply` reads it back.
 */
export const LUA_IDP_FIELDS = '{f[F_IDP_TOKEN], f[F_IDP_CHECKED]}'

/** A family's bond to its IdP refresh token (undefined when unbound). */
export function idpBindingFromReply (reply: readonly ReplyValue[], at: number): { readonly sealed: string, readonly checkedAt: number } | undefined {
  const sealed = reply[at] === undefined ? '' : text(reply[at])
  return sealed === '' ? undefined : Object.freeze({ sealed, checkedAt: int(reply[at + 1]) })
}

export type ReplyValue = Buffer | number | string

function text (v: ReplyValue | undefined): string {
  if (v === undefined) throw new TypeError('short reply from a family script')
  return Buffer.isBuffer(v) ? v.toString('utf8') : String(v)
}

function int (v: ReplyValue | undefined): number {
  const n = typeof v === 'number' ? v : Number(text(v))
  if (!Number.isSafeInteger(n)) throw new TypeError('non-integer in a family script reply')
  return n
}

/** The Family in a script reply whose LUA_PUBLIC_FIELDS start at `at`. */
export function familyFromReply (sid: string, reply: readonly ReplyValue[], at = 0): Family {
  const provider = text(reply[at + 10])
  return Object.freeze({
    sid,
    userId: text(reply[at]),
    clientId: text(reply[at + 1]),
    scope: text(reply[at + 2]),
    generation: int(reply[at + 3]),
    createdAt: int(reply[at + 4]),
    lastUsedAt: int(reply[at + 5]),
    idleExpiresAt: int(reply[at + 6]),
    absoluteExpiresAt: int(reply[at + 7]),
    userAgent: decodeUserAgent(text(reply[at + 8])),
    ip: text(reply[at + 9]),
    ...(provider === '' ? {} : { provider })
  })
}

/** A stored family, field by field, as the scripts keep it (hashes and nonce raw, user agent encoded). */
export interface StoredFamily {
  readonly version: number
  readonly userId: string
  readonly clientId: string
  readonly scope: string
  readonly hash: Buffer
  readonly prev: Buffer
  readonly nonce: Buffer
  readonly generation: number
  readonly rotatedAt: number
  readonly createdAt: number
  readonly lastUsedAt: number
  readonly idleExpiresAt: number
  readonly absoluteExpiresAt: number
  /** As stored: encoded by user-agent-codec.ts. */
  readonly userAgent: string
  readonly ip: string
  readonly provider: string
  /** 1: the current token was not yet answered 200 by any gateway (see the format above). */
  readonly pending: number
  /** Sealed IdP refresh token ('' when unbound) and its last check (ms); optional on encode (default unbound). */
  readonly idpToken?: string
  readonly idpCheckedAt?: number
}

/*
 * JavaScript side of the format, for the bench (which writes families in bulk without
 * running a script per family) and for tests (which read what the scripts wrote). It
 * must produce the very bytes `cmsgpack.pack` produces, so it writes only what cmsgpack
 * writes: every Lua string as a MessagePack str (never bin), integers in their smallest
 * encoding, a fixarray or array16. A general MessagePack library chooses bin for bytes
 * and other widths, which would change the stored size the bench measures.
 */

function strHeader (len: number): Buffer {
  if (len < 32) return Buffer.from([0xa0 | len])
  if (len <= 0xff) return Buffer.from([0xd9, len])
  if (len <= 0xffff) { const b = Buffer.alloc(3); b[0] = 0xda; b.writeUInt16BE(len, 1); return b }
  const b = Buffer.alloc(5); b[0] = 0xdb; b.writeUInt32BE(len, 1); return b
}

function packInt (n: number): Buffer {
  if (!Number.isSafeInteger(n)) throw new RangeError('stored family numbers are integers')
  if (n >= 0) {
    if (n <= 0x7f) return Buffer.from([n])
    if (n <= 0xff) return Buffer.from([0xcc, n])
    if (n <= 0xffff) { const b = Buffer.alloc(3); b[0] = 0xcd; b.writeUInt16BE(n, 1); return b }
    if (n <= 0xffffffff) { const b = Buffer.alloc(5); b[0] = 0xce; b.writeUInt32BE(n, 1); return b }
    const b = Buffer.alloc(9); b[0] = 0xcf; b.writeBigUInt64BE(BigInt(n), 1); return b
  }
  if (n >= -32) return Buffer.from([0xe0 | (n + 32)])
  if (n >= -0x80) { const b = Buffer.alloc(2); b[0] = 0xd0; b.writeInt8(n, 1); return b }
  if (n >= -0x8000) { const b = Buffer.alloc(3); b[0] = 0xd1; b.writeInt16BE(n, 1); return b }
  if (n >= -0x80000000) { const b = Buffer.alloc(5); b[0] = 0xd2; b.writeInt32BE(n, 1); return b }
  const b = Buffer.alloc(9); b[0] = 0xd3; b.writeBigInt64BE(BigInt(n), 1); return b
}

function packStr (v: string | Buffer): Buffer {
  const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : v
  return Buffer.concat([strHeader(bytes.length), bytes])
}

/** The stored bytes of `f`, as the scripts would write them (current version). */
export function encodeFamily (f: Omit<StoredFamily, 'version'>): Buffer {
  const values: Array<string | Buffer | number> = [
    FAMILY_FORMAT_VERSION, f.userId, f.clientId, f.scope, f.hash, f.prev, f.nonce, f.generation,
    f.rotatedAt, f.createdAt, f.lastUsedAt, f.idleExpiresAt, f.absoluteExpiresAt, f.userAgent, f.ip, f.provider, f.pending,
    f.idpToken ?? '', f.idpCheckedAt ?? 0
  ]
  const header = values.length < 16 ? Buffer.from([0x90 | values.length]) : Buffer.from([0xdc, values.length >> 8, values.length & 0xff])
  return Buffer.concat([header, ...values.map(v => typeof v === 'number' ? packInt(v) : packStr(v))])
}

/** Read a stored family of any version. Throws on anything else. */
export function decodeFamily (blob: Buffer): StoredFamily {
  let at = 0
  const byte = (): number => {
    const b = blob[at++]
    if (b === undefined) throw new TypeError('truncated stored family')
    return b
  }
  const take = (n: number): Buffer => {
    if (at + n > blob.length) throw new TypeError('truncated stored family')
    const out = blob.subarray(at, at + n)
    at += n
    return out
  }
  const value = (): Buffer | number => {
    const b = byte()
    if (b <= 0x7f) return b
    if (b >= 0xe0) return b - 0x100
    if ((b & 0xe0) === 0xa0) return take(b & 0x1f)
    switch (b) {
      case 0xd9: case 0xc4: return take(byte())
      case 0xda: case 0xc5: return take(take(2).readUInt16BE(0))
      case 0xdb: case 0xc6: return take(take(4).readUInt32BE(0))
      case 0xcc: return byte()
      case 0xcd: return take(2).readUInt16BE(0)
      case 0xce: return take(4).readUInt32BE(0)
      case 0xcf: return Number(take(8).readBigUInt64BE(0))
      case 0xd0: return take(1).readInt8(0)
      case 0xd1: return take(2).readInt16BE(0)
      case 0xd2: return take(4).readInt32BE(0)
      case 0xd3: return Number(take(8).readBigInt64BE(0))
      case 0xcb: return take(8).readDoubleBE(0)
      default: throw new TypeError(`unexpected MessagePack type 0x${b.toString(16)} in a stored family`)
    }
  }
  const head = byte()
  const count = (head & 0xf0) === 0x90 ? head & 0x0f : head === 0xdc ? take(2).readUInt16BE(0) : -1
  if (count < 15) throw new TypeError('not a stored family')
  const v = Array.from({ length: count }, value)
  const bytes = (i: number): Buffer => { const x = v[i]; if (!Buffer.isBuffer(x)) throw new TypeError(`field ${FIELDS[i] ?? i} is not a string`); return x }
  const str = (i: number): string => bytes(i).toString('utf8')
  const num = (i: number): number => { const x = v[i]; if (typeof x !== 'number') throw new TypeError(`field ${FIELDS[i] ?? i} is not a number`); return x }
  return {
    version: num(0),
    userId: str(1),
    clientId: str(2),
    scope: str(3),
    hash: bytes(4),
    prev: bytes(5),
    nonce: bytes(6),
    generation: num(7),
    rotatedAt: num(8),
    createdAt: num(9),
    lastUsedAt: num(10),
    idleExpiresAt: num(11),
    absoluteExpiresAt: num(12),
    userAgent: str(13),
    ip: str(14),
    provider: count > 15 ? str(15) : '',
    pending: count > 16 ? num(16) : 0,
    idpToken: count > 17 ? str(17) : '',
    idpCheckedAt: count > 18 ? num(18) : 0
  }
}
