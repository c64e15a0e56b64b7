/**
 * The family store's Lua scripts, one per operation, registered with ioredis
 * `defineCommand`: ioredis sends EVALSHA and falls back to EVAL on NOSCRIPT (after a
 * SCRIPT FLUSH, a restart or a failover to a replica that never saw the script).
 *
 * Every script takes exactly one key, so it runs in that key's hash slot on a Redis
 * Cluster (SPEC "Refresh-token families" 6); every key a script writes gets its TTL in
 * the same script (rule 5); time comes in as an argument (`now`, ms) from the gateway's
 * injected clock, and stored expiry times are compared against it.
 *
 * A family is one STRING: a MessagePack array (`cmsgpack`, built into Redis' Lua) of
 *
 *   [1] format version (1)   [2] user id        [3] client id     [4] scope
 *   [5] current token hash   [6] previous hash  [7] nonce of the last rotation
 *   [8] generation           [9] rotated at     [10] created at   [11] last used at
 *   [12] idle expiry         [13] absolute expiry                 [14] user agent  [15] ip
 *
 * the nonce as 32 raw bytes, token hashes as the first STORED_HASH_BYTES (16) bytes of
 * their SHA-256 (families written before kept all 32; the scripts compare the presented
 * hash cut to the stored length, so both verify), times in ms, the user agent encoded
 * (user-agent-codec.ts). A packed string rather than a HASH
 * because a hash with any value over 64 bytes (a browser's user agent) leaves the
 * compact listpack encoding and doubles in size (measured: ~1040 vs ~456 bytes).
 */
import type { Cluster, Redis, Result } from 'ioredis'

/** Array positions in the packed family (Lua arrays count from 1). */
const FIELD = {
  VERSION: 1, USER: 2, CLIENT: 3, SCOPE: 4, HASH: 5, PREV: 6, NONCE: 7, GEN: 8,
  ROTATED: 9, CREATED: 10, LAST_USED: 11, IDLE_EXP: 12, ABS_EXP: 13, UA: 14, IP: 15
} as const
export const FAMILY_FORMAT_VERSION = 1

// Named positions at the top of every script that reads a family.
const PRELUDE = `local F_USER, F_CLIENT, F_SCOPE, F_HASH, F_PREV, F_NONCE, F_GEN = ${FIELD.USER}, ${FIELD.CLIENT}, ${FIELD.SCOPE}, ${FIELD.HASH}, ${FIELD.PREV}, ${FIELD.NONCE}, ${FIELD.GEN}
local F_ROTATED, F_CREATED, F_LAST_USED, F_IDLE_EXP, F_ABS_EXP, F_UA, F_IP = ${FIELD.ROTATED}, ${FIELD.CREATED}, ${FIELD.LAST_USED}, ${FIELD.IDLE_EXP}, ${FIELD.ABS_EXP}, ${FIELD.UA}, ${FIELD.IP}
`

/**
 * The public part of a family, in reply order: user, client, scope, generation,
 * created, last used, idle expiry, absolute expiry, user agent, ip.
 */
const PUBLIC_FIELDS = '{f[F_USER], f[F_CLIENT], f[F_SCOPE], f[F_GEN], f[F_CREATED], f[F_LAST_USED], f[F_IDLE_EXP], f[F_ABS_EXP], f[F_UA], f[F_IP]}'

/**
 * create — KEYS[1] family; ARGV: user, client, scope, token hash, now, idle expiry,
 * absolute expiry, user agent, ip. Returns 1, or 0 if the key already exists.
 */
const CREATE = `${PRELUDE}
local now = tonumber(ARGV[5])
local ix, ax = tonumber(ARGV[6]), tonumber(ARGV[7])
-- No previous hash, nonce or rotation yet: empty strings and 0 keep the array dense
-- (a nil would end a Lua array early and cmsgpack would pack a map).
local f = {${FAMILY_FORMAT_VERSION}, ARGV[1], ARGV[2], ARGV[3], ARGV[4], '', '', 0, 0, now, now, ix, ax, ARGV[8], ARGV[9]}
-- NX: a family id is 128 random bits, so a clash is a bug; never overwrite a live family.
-- PX: the key dies with the family (idle expiry is never after absolute expiry).
local ok = redis.call('SET', KEYS[1], cmsgpack.pack(f), 'PX', ix - now, 'NX')
-- SET ... NX answers nil (false in Lua) when the key exists.
if not ok then return 0 end
return 1
`

/**
 * rotate — KEYS[1] family; ARGV: presented hash (all 32 bytes), successor hash (stored form), nonce, now, idle ms,
 * grace ms, ip, user agent, '1' to require a client, client id. The successor was derived by the gateway from the presented
 * token and this nonce; it is stored only if this call rotates.
 *
 * Replies: {'invalid'} | {'rotated', ...public} | {'grace', ...public, stored nonce} |
 * {'reuse', user}.
 */
const ROTATE = `${PRELUDE}
local blob = redis.call('GET', KEYS[1])
-- Unknown, revoked, or dropped by its TTL: nothing to do and nothing written.
if not blob then return {'invalid'} end
local f = cmsgpack.unpack(blob)
local now = tonumber(ARGV[4])
-- Expired by the gateway's clock though the key's TTL has not fired yet: same answer, still no write.
if now >= f[F_IDLE_EXP] or now >= f[F_ABS_EXP] then return {'invalid'} end
-- A refresh token is bound to the client it was issued to (RFC 6749 §6): presented by
-- another client it is unknown there, and the family is left alone (not a replay).
if ARGV[9] == '1' and f[F_CLIENT] ~= ARGV[10] then return {'invalid'} end
-- Is the presented token the one stored as \`stored\`? Stored hashes may be shorter than the
-- presented one (see the format above): compare its first #stored bytes. '' is no token.
local function presented (stored) return stored ~= '' and string.sub(ARGV[1], 1, #stored) == stored end
if presented(f[F_HASH]) then
  -- The current token: rotate. It becomes the previous one (kept only for the grace rule).
  f[F_PREV] = f[F_HASH]
  f[F_HASH] = ARGV[2]
  -- Keep the nonce so a grace retry can re-derive this same successor (never the successor itself).
  f[F_NONCE] = ARGV[3]
  f[F_GEN] = f[F_GEN] + 1
  f[F_ROTATED] = now
  f[F_LAST_USED] = now
  -- Idle expiry slides, but never past the absolute expiry fixed at login.
  f[F_IDLE_EXP] = math.min(now + tonumber(ARGV[5]), f[F_ABS_EXP])
  f[F_IP] = ARGV[7]
  f[F_UA] = ARGV[8]
  -- Value and TTL in one command; the TTL is > 0 because both expiries are after now.
  redis.call('SET', KEYS[1], cmsgpack.pack(f), 'PX', f[F_IDLE_EXP] - now)
  local reply = ${PUBLIC_FIELDS}
  table.insert(reply, 1, 'rotated')
  return reply
end
local grace = tonumber(ARGV[6])
-- The immediate predecessor within the grace window: hand back the nonce of the rotation
-- it already caused, so the caller re-derives the same successor. No write: the lifetimes
-- were extended by that rotation and must not be extended twice, and no branch is made.
if grace > 0 and presented(f[F_PREV]) and now - f[F_ROTATED] <= grace then
  local reply = ${PUBLIC_FIELDS}
  table.insert(reply, 1, 'grace')
  table.insert(reply, f[F_NONCE])
  return reply
end
-- Any other token of this family (the predecessor after grace, an older generation):
-- replay. Revoke the whole family, live successor included; deleting the key also
-- guarantees that no later call can find a grace window in it.
redis.call('DEL', KEYS[1])
return {'reuse', f[F_USER]}
`

/**
 * revoke — KEYS[1] family; ARGV: now, '1' to require an owner, owner user id, '1' to
 * require a client, client id. Returns the user id when a live family was revoked, else nil.
 */
const REVOKE = `${PRELUDE}
local blob = redis.call('GET', KEYS[1])
-- Nothing to revoke.
if not blob then return false end
local f = cmsgpack.unpack(blob)
-- DELETE /auth/sessions/:id must not touch another user's session.
if ARGV[2] == '1' and f[F_USER] ~= ARGV[3] then return false end
-- RFC 7009 §2.1: a client may only revoke tokens issued to it.
if ARGV[4] == '1' and f[F_CLIENT] ~= ARGV[5] then return false end
redis.call('DEL', KEYS[1])
local now = tonumber(ARGV[1])
-- An already-expired family is removed too, but it was not a live session to report.
if now >= f[F_IDLE_EXP] or now >= f[F_ABS_EXP] then return false end
return f[F_USER]
`

/**
 * read — KEYS[1] family; ARGV: now, optionally a presented token hash (all 32 bytes).
 * Returns the public fields of a live family, else nil; with a hash, only when it is the
 * family's current token (introspection). Writes nothing. A script rather than GET because
 * only Lua unpacks the MessagePack value here.
 */
const READ = `${PRELUDE}
local blob = redis.call('GET', KEYS[1])
if not blob then return false end
local f = cmsgpack.unpack(blob)
local now = tonumber(ARGV[1])
-- Expired by the gateway's clock: treated as gone.
if now >= f[F_IDLE_EXP] or now >= f[F_ABS_EXP] then return false end
-- Stored hashes may be shorter than the presented one (see the format above).
if ARGV[2] and (f[F_HASH] == '' or string.sub(ARGV[2], 1, #f[F_HASH]) ~= f[F_HASH]) then return false end
return ${PUBLIC_FIELDS}
`

/**
 * indexAdd — KEYS[1] a user's session index (ZSET sid → absolute expiry); ARGV: sid,
 * absolute expiry, now. Lives in its own slot, so it is a separate call from create.
 */
const INDEX_ADD = `
local now = tonumber(ARGV[3])
-- Drop sessions past their absolute expiry, so the index cannot grow without bound.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
-- The longest-lived member decides the TTL, so the index outlives every family it lists
-- and the TTL never shrinks below any member's lifetime.
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now))
return 1
`

export const FAMILY_SCRIPTS = {
  lkFamilyCreate: { numberOfKeys: 1, lua: CREATE },
  lkFamilyRotate: { numberOfKeys: 1, lua: ROTATE },
  lkFamilyRevoke: { numberOfKeys: 1, lua: REVOKE },
  lkFamilyRead: { numberOfKeys: 1, lua: READ },
  lkIndexAdd: { numberOfKeys: 1, lua: INDEX_ADD }
} as const

export type FamilyScriptName = keyof typeof FAMILY_SCRIPTS

export type ScriptArg = string | number | Buffer
type Arg = ScriptArg
/** Public family fields as the scripts return them (see PUBLIC_FIELDS). */
export type PublicFieldsReply = [string, string, string, number, number, number, number, number, string, string]

/** The commands `defineCommand` adds, typed (ioredis types them only by augmentation). */
export interface FamilyScriptCommands {
  lkFamilyCreate (key: string, ...args: Arg[]): Result<number, { type: 'default' }>
  /** Buffer replies: the stored nonce in a grace answer is raw bytes. */
  lkFamilyRotateBuffer (key: string, ...args: Arg[]): Result<Array<Buffer | number>, { type: 'default' }>
  lkFamilyRevoke (key: string, ...args: Arg[]): Result<string | null, { type: 'default' }>
  lkFamilyRead (key: string, ...args: Arg[]): Result<PublicFieldsReply | null, { type: 'default' }>
  lkIndexAdd (key: string, ...args: Arg[]): Result<number, { type: 'default' }>
}

/** Register the scripts on `client` (idempotent) and return it with their methods typed. */
export function defineFamilyScripts<C extends Redis | Cluster> (client: C): C & FamilyScriptCommands {
  for (const [name, definition] of Object.entries(FAMILY_SCRIPTS)) {
    if (typeof (client as unknown as Record<string, unknown>)[name] !== 'function') client.defineCommand(name, definition)
  }
  return client as C & FamilyScriptCommands
}
