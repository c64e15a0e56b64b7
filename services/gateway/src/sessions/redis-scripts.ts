/**
 * The family store's Lua scripts, one per operation, registered with ioredis
 * `defineCommand`: ioredis sends EVALSHA and falls back to EVAL on NOSCRIPT (after a
 * SCRIPT FLUSH, a restart or a failover to a replica that never saw the script).
 *
 * Every script takes exactly one key, so it runs in that key's hash slot on a Redis
 * Cluster (docs/contract.md "Refresh-token families" 6); every key a script writes gets its TTL in
 * the same script (rule 5). The stored format and its field names (`F_*`) are in
 * family-codec.ts.
 *
 * Time: every comparison (grace window, idle and absolute expiry) is made against Redis'
 * own clock (`TIME`, read inside the script), never a gateway's: replicas whose clocks
 * disagree still see one grace window, and a rotation queued behind a stalled Redis is
 * stamped when it runs, so the grace window opens when the successor comes into being.
 * Redis ≥ 5 replicates a script's effects, not the script, so reading TIME before a
 * write is allowed. A `now` argument given as a number replaces TIME: the in-process
 * tests move time by hand (ManualClock); the gateway passes '' (see redis-family-store.ts).
 */
import type { Cluster, Redis, Result } from 'ioredis'
import { LUA_FAMILY_PRELUDE, LUA_IDP_FIELDS, LUA_PUBLIC_FIELDS, storedHash, type ReplyValue } from './family-codec.js'
import { clampText, IP_MAX_CHARS, PROVIDER_MAX_CHARS, USER_AGENT_MAX_CHARS, type FamilyLimits } from './family-store.js'
import { encodeUserAgent } from './user-agent-codec.js'

const PRELUDE = `${LUA_FAMILY_PRELUDE}
-- Milliseconds: the caller's when given (tests), else Redis' clock.
local function now_ms (arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

const PUBLIC_FIELDS = LUA_PUBLIC_FIELDS

/**
 * create — KEYS[1] family; ARGV: user, client, scope, token hash, now (ms: Redis' time as
 * the index script answered it), idle expiry, absolute expiry, user agent, ip, provider,
 * sealed IdP refresh token ('' unbound), its check time (ms). Returns 1, or 0 if the key
 * already exists.
 */
const CREATE = `${PRELUDE}
local now = tonumber(ARGV[5])
local ix, ax = tonumber(ARGV[6]), tonumber(ARGV[7])
-- No previous hash, nonce or rotation yet: empty strings and 0 keep the array dense
-- (a nil would end a Lua array early and cmsgpack would pack a map).
local f = {0, ARGV[1], ARGV[2], ARGV[3], ARGV[4], '', '', 0, 0, now, now, ix, ax, ARGV[8], ARGV[9], ARGV[10], 0, ARGV[11] or '', tonumber(ARGV[12] or '0')}
-- NX: a family id is 128 random bits, so a clash is a bug; never overwrite a live family.
-- PX: the key dies with the family (idle expiry is never after absolute expiry).
local ok = redis.call('SET', KEYS[1], pack_family(f), 'PX', ix - now, 'NX')
-- SET ... NX answers nil (false in Lua) when the key exists.
if not ok then return 0 end
return 1
`

/**
 * rotate — KEYS[1] family; ARGV: presented hash (all 32 bytes), successor hash (stored form), nonce, now ('' = TIME), idle ms,
 * grace ms, ip, user agent, '1' to require a client, client id, '1' to store the successor as pending, the presented
 * token's generation if the gateway recognised it as format 2 (its mac verified, refresh-token.ts), else ''. The successor was derived by
 * the gateway from the presented token and this nonce; it is stored only if this call rotates.
 *
 * Pending (REDIS_WAIT_REPLICAS, see redis-family-store.ts): a successor is written pending
 * and the gateway clears the mark (commit) once it answers it with 200, i.e. after its
 * WAIT succeeded and SessionService kept the rotation (an IdP check may still take it back). While the current token is pending, no one can hold it, so its predecessor is not
 * a replay whenever it comes: it gets the same successor, as inside grace. That is what
 * keeps a session whose rotation reached a replica while its WAIT failed (a failover in
 * between, the undo sent to the old master) alive when its client comes back after grace.
 *
 * Rolled forward (REDIS_WAIT_REPLICAS=0, see redis-family-store.ts): a token of this family
 * that is neither current nor a graced predecessor, but whose authenticated generation is
 * above the family's, was made by a gateway from a rotation this Redis no longer holds (a
 * failover discarded it after the old master answered it): it is rotated as if current.
 * Without lost writes the family's generation is never below that of a token a gateway
 * handed out, so this never fires; every other token is reuse, as before.
 *
 * Replies: {'invalid'} | {'rotated', ...public, ...idp} | {'grace', ...public, stored nonce, current hash, ...idp} |
 * {'rolled', ...public, ...idp, the family's generation before} | {'reuse', user}. `idp` is LUA_IDP_FIELDS (the
 * sealed IdP token and its check time).
 */
const ROTATE = `${PRELUDE}
local blob = redis.call('GET', KEYS[1])
-- Unknown, revoked, or dropped by its TTL: nothing to do and nothing written.
if not blob then return {'invalid'} end
local f = load_family(blob)
local now = now_ms(ARGV[4])
-- Expired though the key's TTL has not fired yet: same answer, still no write.
if now >= f[F_IDLE_EXP] or now >= f[F_ABS_EXP] then return {'invalid'} end
-- A refresh token is bound to the client it was issued to (RFC 6749 §6): presented by
-- another client it is unknown there, and the family is left alone (not a replay).
if ARGV[9] == '1' and f[F_CLIENT] ~= ARGV[10] then return {'invalid'} end
-- Is the presented token the one stored as \`stored\`? Stored hashes may be shorter than the
-- presented one (see the format above): compare its first #stored bytes. '' is no token.
local function presented (stored) return stored ~= '' and string.sub(ARGV[1], 1, #stored) == stored end
-- Make the successor current, \`previous\` (the presented token, stored form) its predecessor
-- (kept only for the grace rule), at generation \`gen\`.
local function rotate (kind, previous, gen)
  f[F_PREV] = previous
  f[F_HASH] = ARGV[2]
  -- Keep the nonce so a grace retry can re-derive this same successor (never the successor itself).
  f[F_NONCE] = ARGV[3]
  f[F_GEN] = gen
  f[F_ROTATED] = now
  f[F_LAST_USED] = now
  -- Idle expiry slides, but never past the absolute expiry fixed at login.
  f[F_IDLE_EXP] = math.min(now + tonumber(ARGV[5]), f[F_ABS_EXP])
  f[F_IP] = ARGV[7]
  f[F_UA] = ARGV[8]
  if ARGV[11] == '1' then f[F_PENDING] = 1 else f[F_PENDING] = 0 end
  -- Value and TTL in one command; the TTL is > 0 because both expiries are after now.
  redis.call('SET', KEYS[1], pack_family(f), 'PX', f[F_IDLE_EXP] - now)
  local reply = ${PUBLIC_FIELDS}
  table.insert(reply, 1, kind)
  for _, v in ipairs(${LUA_IDP_FIELDS}) do table.insert(reply, v) end
  return reply
end
-- The current token: rotate. It becomes the previous one.
if presented(f[F_HASH]) then return rotate('rotated', f[F_HASH], f[F_GEN] + 1) end
local grace = tonumber(ARGV[6])
-- The immediate predecessor within the grace window, or at any time while its successor is
-- pending (never handed out, so nobody else can hold the family): hand back the nonce of
-- the rotation it already caused, so the caller re-derives the same successor. No write:
-- the lifetimes were extended by that rotation and must not be extended twice, and no
-- branch is made.
if presented(f[F_PREV]) and ((grace > 0 and now - f[F_ROTATED] <= grace) or f[F_PENDING] == 1) then
  local reply = ${PUBLIC_FIELDS}
  table.insert(reply, 1, 'grace')
  table.insert(reply, f[F_NONCE])
  -- And the successor's hash: a gateway of either release may have made it, in either
  -- format (refresh-token.ts); the caller derives both and hands out the one held here.
  table.insert(reply, f[F_HASH])
  for _, v in ipairs(${LUA_IDP_FIELDS}) do table.insert(reply, v) end
  return reply
end
-- A token a gateway made (authenticated generation) from rotations this Redis lost: it is
-- ahead of the family, so it is the client's current token; roll the family forward to it.
-- Its successor is at its generation + 1 (the gateway derived it so), the family's lost
-- tokens are dropped, and the presented token becomes the predecessor, for grace.
local claimed = tonumber(ARGV[12])
if claimed ~= nil and claimed > f[F_GEN] then
  local before = f[F_GEN]
  local reply = rotate('rolled', string.sub(ARGV[1], 1, #ARGV[2]), claimed + 1)
  table.insert(reply, before)
  return reply
end
-- Any other token of this family (the predecessor after grace, an older generation):
-- replay. Revoke the whole family, live successor included; deleting the key also
-- guarantees that no later call can find a grace window in it.
redis.call('DEL', KEYS[1])
return {'reuse', f[F_USER]}
`

/**
 * revoke — KEYS[1] family; ARGV: now ('' = TIME), '1' to require an owner, owner user id, '1' to
 * require a client, client id. Returns the user id when a live family was revoked, else nil.
 */
const REVOKE = `${PRELUDE}
local blob = redis.call('GET', KEYS[1])
-- Nothing to revoke.
if not blob then return false end
local f = load_family(blob)
-- DELETE /auth/sessions/:id must not touch another user's session.
if ARGV[2] == '1' and f[F_USER] ~= ARGV[3] then return false end
-- RFC 7009 §2.1: a client may only revoke tokens issued to it.
if ARGV[4] == '1' and f[F_CLIENT] ~= ARGV[5] then return false end
redis.call('DEL', KEYS[1])
local now = now_ms(ARGV[1])
-- An already-expired family is removed too, but it was not a live session to report.
if now >= f[F_IDLE_EXP] or now >= f[F_ABS_EXP] then return false end
return f[F_USER]
`

/**
 * read — KEYS[1] family; ARGV: now ('' = TIME), optionally a presented token hash (all 32
 * bytes). Returns the public fields of a live family, else nil; with a hash, only when it
 * is the family's current token (introspection). Writes nothing. A script rather than GET
 * because only Lua unpacks the MessagePack value here.
 */
const READ = `${PRELUDE}
local blob = redis.call('GET', KEYS[1])
if not blob then return false end
local f = load_family(blob)
local now = now_ms(ARGV[1])
-- Expired: treated as gone.
if now >= f[F_IDLE_EXP] or now >= f[F_ABS_EXP] then return false end
-- Stored hashes may be shorter than the presented one (see the format above).
if ARGV[2] and (f[F_HASH] == '' or string.sub(ARGV[2], 1, #f[F_HASH]) ~= f[F_HASH]) then return false end
return ${PUBLIC_FIELDS}
`

/**
 * indexAdd — KEYS[1] a user's session index (ZSET sid → absolute expiry); ARGV: sid,
 * session lifetime (ms), now ('' = TIME). Lives in its own slot, so it is a separate call
 * from create; it runs first and answers the time it used, which create then stamps on
 * the family, so both agree on when the session ends.
 */
const INDEX_ADD = `${PRELUDE}
local now = now_ms(ARGV[3])
-- Drop sessions past their absolute expiry, so the index cannot grow without bound.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
-- The longest-lived member decides the TTL, so the index outlives every family it lists
-- and the TTL never shrinks below any member's lifetime.
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now))
return now
`

/**
 * undo — KEYS[1] family; ARGV: successor hash (stored form), generation it was given.
 * Takes back a rotation whose answer could not be given: its WAIT failed (REDIS_WAIT_REPLICAS,
 * see redis-family-store.ts) or SessionService could not make the IdP check (`undoRotation`).
 * The one way to take a rotation back; only if that successor is still the current token,
 * so nothing made after it is lost.
 * The presented token becomes current again; the older predecessor and its grace are
 * dropped (it is two rotations old to the client, which never got the successor). The
 * idle expiry stays slid: the client did present a live token. Returns 1 if undone.
 */
const UNDO = `${PRELUDE}
local blob = redis.call('GET', KEYS[1])
if not blob then return 0 end
local f = load_family(blob)
if f[F_HASH] ~= ARGV[1] or f[F_GEN] ~= tonumber(ARGV[2]) then return 0 end
f[F_HASH] = f[F_PREV]
f[F_PREV] = ''
f[F_NONCE] = ''
f[F_GEN] = f[F_GEN] - 1
f[F_ROTATED] = 0
f[F_PENDING] = 0
redis.call('SET', KEYS[1], pack_family(f), 'KEEPTTL')
return 1
`

/**
 * commit — KEYS[1] family; ARGV: successor hash (stored form), generation it was given.
 * Clears the pending mark once a gateway answers that successor with 200 (see rotate;
 * `commitRotation`, called by SessionService);
 * only if it is still the current token. From then on its predecessor has only the grace
 * window. Returns 1 if cleared.
 */
const COMMIT = `${PRELUDE}
local blob = redis.call('GET', KEYS[1])
if not blob then return 0 end
local f = load_family(blob)
if f[F_PENDING] ~= 1 or f[F_HASH] ~= ARGV[1] or f[F_GEN] ~= tonumber(ARGV[2]) then return 0 end
f[F_PENDING] = 0
redis.call('SET', KEYS[1], pack_family(f), 'KEEPTTL')
return 1
`

/**
 * bindIdp — KEYS[1] family; ARGV: sealed IdP refresh token, check time (ms), now ('' = TIME).
 * Replaces a live family's IdP binding; its TTL and everything else stay. Returns 1, or 0
 * when the family is gone (revoked or expired meanwhile: nothing to bind).
 */
const BIND_IDP = `${PRELUDE}
local blob = redis.call('GET', KEYS[1])
if not blob then return 0 end
local f = load_family(blob)
local now = now_ms(ARGV[3])
if now >= f[F_IDLE_EXP] or now >= f[F_ABS_EXP] then return 0 end
f[F_IDP_TOKEN] = ARGV[1]
f[F_IDP_CHECKED] = tonumber(ARGV[2])
redis.call('SET', KEYS[1], pack_family(f), 'KEEPTTL')
return 1
`

/**
 * tokenKey — KEYS[1] the deployment's refresh-token key (K, refresh-token.ts; only without
 * REFRESH_TOKEN_KEY); ARGV: the key to store if there is none, TTL ms. Returns the stored key,
 * its TTL raised to at least ARGV[2] (the key lives as long as the families it may have to
 * vouch for; redis-family-store.ts renews it). A gateway that already holds K proposes it,
 * so a key Redis lost (a failover right after it was made, an eviction) comes back as it was.
 * One of another length is not a key this code made: replaced.
 */
const TOKEN_KEY = `
local k = redis.call('GET', KEYS[1])
local ttl = tonumber(ARGV[2])
if not k or #k ~= #ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  return ARGV[1]
end
-- PTTL is -1 for a key without a TTL: every key gets one (docs/contract.md rule 5).
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return k
`

export const FAMILY_SCRIPTS = {
  lkFamilyCreate: { numberOfKeys: 1, lua: CREATE },
  lkFamilyRotate: { numberOfKeys: 1, lua: ROTATE },
  lkFamilyRevoke: { numberOfKeys: 1, lua: REVOKE },
  lkFamilyRead: { numberOfKeys: 1, lua: READ },
  lkIndexAdd: { numberOfKeys: 1, lua: INDEX_ADD },
  lkFamilyUndo: { numberOfKeys: 1, lua: UNDO },
  lkFamilyCommit: { numberOfKeys: 1, lua: COMMIT },
  lkFamilyBindIdp: { numberOfKeys: 1, lua: BIND_IDP },
  lkTokenKey: { numberOfKeys: 1, lua: TOKEN_KEY }
} as const

export type FamilyScriptName = keyof typeof FAMILY_SCRIPTS

export type ScriptArg = string | number | Buffer
type Arg = ScriptArg
/** Public family fields as the scripts return them (LUA_PUBLIC_FIELDS). */
export type PublicFieldsReply = ReplyValue[]

/** The commands `defineCommand` adds, typed (ioredis types them only by augmentation). */
export interface FamilyScriptCommands {
  lkFamilyCreate (key: string, ...args: Arg[]): Result<number, { type: 'default' }>
  /** Buffer replies: the stored nonce in a grace answer is raw bytes. */
  lkFamilyRotateBuffer (key: string, ...args: Arg[]): Result<Array<Buffer | number>, { type: 'default' }>
  lkFamilyRevoke (key: string, ...args: Arg[]): Result<string | null, { type: 'default' }>
  lkFamilyRead (key: string, ...args: Arg[]): Result<PublicFieldsReply | null, { type: 'default' }>
  lkIndexAdd (key: string, ...args: Arg[]): Result<number, { type: 'default' }>
  lkFamilyUndo (key: string, ...args: Arg[]): Result<number, { type: 'default' }>
  lkFamilyCommit (key: string, ...args: Arg[]): Result<number, { type: 'default' }>
  lkFamilyBindIdp (key: string, ...args: Arg[]): Result<number, { type: 'default' }>
  /** Buffer reply: the key's raw bytes. */
  lkTokenKeyBuffer (key: string, ...args: Arg[]): Result<Buffer, { type: 'default' }>
}

/** Register the scripts on `client` (idempotent) and return it with their methods typed. */
export function defineFamilyScripts<C extends Redis | Cluster> (client: C): C & FamilyScriptCommands {
  for (const [name, definition] of Object.entries(FAMILY_SCRIPTS)) {
    if (typeof (client as unknown as Record<string, unknown>)[name] !== 'function') client.defineCommand(name, definition)
  }
  return client as C & FamilyScriptCommands
}

/** The `now` argument: '' lets the script read Redis' clock (the gateway); a number replaces it (tests). */
export type ScriptNow = number | ''

export interface FamilyRecord {
  readonly userId: string
  readonly clientId: string
  readonly scope: string
  /** The first token's full SHA-256. */
  readonly tokenHash: Buffer
  /** Redis' time when the index entry was written (the index script's reply). */
  readonly now: number
  readonly idleExpiresAt: number
  readonly absoluteExpiresAt: number
  readonly userAgent: string
  readonly ip: string
  readonly provider?: string
  /** The IdP binding: sealed token and check time (absent: unbound). */
  readonly idp?: { readonly sealed: string, readonly checkedAt: number }
}

/** ARGV of the create script. Exported so that the bench writes sessions in exactly the store's format. */
export function createScriptArgs (r: FamilyRecord): ScriptArg[] {
  return [
    r.userId, r.clientId, r.scope, storedHash(r.tokenHash), r.now, r.idleExpiresAt, r.absoluteExpiresAt,
    encodeUserAgent(clampText(r.userAgent, USER_AGENT_MAX_CHARS)), clampText(r.ip, IP_MAX_CHARS), clampText(r.provider ?? '', PROVIDER_MAX_CHARS),
    r.idp?.sealed ?? '', r.idp?.checkedAt ?? 0
  ]
}

export interface Rotation {
  /** Full SHA-256 of the presented token, and of the successor derived with `nonce`. */
  readonly presentedHash: Buffer
  readonly successorHash: Buffer
  readonly nonce: Buffer
  readonly now: ScriptNow
  readonly limits: FamilyLimits
  readonly ip: string
  readonly userAgent: string
  readonly clientId?: string
  /** Store the successor as pending until a commit (REDIS_WAIT_REPLICAS; default false). */
  readonly pending?: boolean
  /** The presented token's generation, only once its mac verified (`RefreshTokenKey.recognise`). */
  readonly authenticGeneration?: number
}

/** Script arguments for the optional client binding: flag, client id. */
export function clientCheck (clientId: string | undefined): [string, string] {
  return clientId === undefined ? ['0', ''] : ['1', clientId]
}

/** ARGV of the rotate script (exported for the bench, as createScriptArgs). */
export function rotateScriptArgs (r: Rotation): ScriptArg[] {
  return [
    r.presentedHash, storedHash(r.successorHash), r.nonce, r.now, r.limits.idleTtlMs, r.limits.graceMs,
    clampText(r.ip, IP_MAX_CHARS), encodeUserAgent(clampText(r.userAgent, USER_AGENT_MAX_CHARS)), ...clientCheck(r.clientId),
    r.pending === true ? '1' : '0', r.authenticGeneration ?? ''
  ]
}
