/**
 * Refresh-token families in Redis (SPEC "Refresh-token families"). One key per family,
 * `<prefix>f:{<sid>}`, a packed value (see redis-scripts.ts) that dies with the family;
 * one index per user, `<prefix>u:{<hash of user id>}`, a ZSET of sid → absolute expiry,
 * so that logout-all and the sessions list need no KEYS/SCAN. The braces are hash tags:
 * each script touches one key, so one slot, on a Redis Cluster.
 *
 * A rotation is one round trip: the gateway draws the nonce and derives the candidate
 * successor before calling, and the rotate script decides everything atomically. Index
 * maintenance after a revocation is a second, best-effort call: the family key is the
 * source of truth and readers of the index skip sids whose family is gone.
 *
 * With `waitReplicas` (REDIS_WAIT_REPLICAS), a login or a rotation is answered only once
 * that many replicas hold it (`WAIT`, see replica-wait.ts).
 */
import { createHash } from 'node:crypto'
import { Cluster } from 'ioredis'
import type { Clock } from '#shared/clock.js'
import { gatewayError } from '../errors.js'
import type { Family, FamilyLimits, FamilyStore, NewFamily, RevokedFamily, RotateResult } from './family-store.js'
import { deriveSuccessor, mintInitialToken, newNonce, NONCE_BYTES, type ParsedRefreshToken } from './refresh-token.js'
import type { RedisClient } from './redis-connection.js'
import { ReplicaWait } from './replica-wait.js'
import { defineFamilyScripts, type FamilyScriptCommands, type PublicFieldsReply, type ScriptArg } from './redis-scripts.js'
import { decodeUserAgent, encodeUserAgent } from './user-agent-codec.js'

export const DEFAULT_KEY_PREFIX = 'lk:'
/** Longest user agent kept per session (what the sessions list shows); the rest is cut. */
export const USER_AGENT_MAX_CHARS = 200
/** Longest IP text kept (an IPv6 address with a zone id fits). */
export const IP_MAX_CHARS = 64
/**
 * Whatever ioredis does (cluster redirections, a failover), a store call fails after this
 * so that the request answers 503 within SPEC's 2 s.
 */
export const STORE_CALL_DEADLINE_MS = 1500
const SID = /^[A-Za-z0-9_-]{22}$/
const TOKEN_HASH_BYTES = 32
/**
 * Bytes of a token's SHA-256 kept in Redis. Finding a token for a stored 128-bit prefix
 * still takes ~2^128 work (the token holds 256 random bits), and the 32 bytes saved per
 * family (current and previous hash) keep a session under the 400-byte budget (npm run bench).
 */
export const STORED_HASH_BYTES = 16

export interface RedisFamilyStoreOptions {
  readonly client: RedisClient
  readonly limits: FamilyLimits
  readonly clock: Clock
  /**
   * The prefix of this store's keys as they appear in Redis (default `lk:`). When the
   * client already applies an ioredis `keyPrefix`, only what this adds to it is prepended
   * again, so passing the same prefix to both does not double it.
   */
  readonly keyPrefix?: string
  /** `close()` quits the client (default true: the gateway builds one client for the store). */
  readonly closeClient?: boolean
  /**
   * REDIS_WAIT_REPLICAS: replicas that must hold a new family or a rotation before it is
   * answered (default 0: Redis' asynchronous replication, no wait). Fewer within
   * REDIS_WAIT_TIMEOUT_MS → GW_STORE_UNAVAILABLE. The script and its WAIT share
   * STORE_CALL_DEADLINE_MS.
   */
  readonly waitReplicas?: number
}

/** Trim free text from the request to what we keep, without splitting a surrogate pair. */
export function clampText (value: string, max: number): string {
  if (value.length <= max) return value
  return value.slice(0, max).replace(/[\uD800-\uDBFF]$/, '')
}

export function validateLimits (limits: FamilyLimits): void {
  const { idleTtlMs, maxTtlMs, graceMs } = limits
  if (!Number.isSafeInteger(idleTtlMs) || idleTtlMs <= 0) throw new RangeError('idleTtlMs must be a positive integer')
  if (!Number.isSafeInteger(maxTtlMs) || maxTtlMs <= 0) throw new RangeError('maxTtlMs must be a positive integer')
  if (!Number.isSafeInteger(graceMs) || graceMs < 0) throw new RangeError('graceMs must be a non-negative integer')
}

/** Store errors leave as GW_STORE_UNAVAILABLE; the cause keeps name and message only (ioredis attaches the command's arguments). */
function unavailable (err: unknown): Error {
  const e = err instanceof Error ? err : new Error(String(err))
  const cause = new Error(e.message)
  cause.name = e.name
  return gatewayError('GW_STORE_UNAVAILABLE', { cause })
}

function text (v: Buffer | number | string | undefined): string {
  if (v === undefined) throw new TypeError('short reply from a family script')
  return Buffer.isBuffer(v) ? v.toString('utf8') : String(v)
}

function int (v: Buffer | number | string | undefined): number {
  const n = typeof v === 'number' ? v : Number(text(v))
  if (!Number.isSafeInteger(n)) throw new TypeError('non-integer in a family script reply')
  return n
}

function familyOf (sid: string, f: ReadonlyArray<Buffer | number | string>, at = 0): Family {
  return Object.freeze({
    sid,
    userId: text(f[at]),
    clientId: text(f[at + 1]),
    scope: text(f[at + 2]),
    generation: int(f[at + 3]),
    createdAt: int(f[at + 4]),
    lastUsedAt: int(f[at + 5]),
    idleExpiresAt: int(f[at + 6]),
    absoluteExpiresAt: int(f[at + 7]),
    userAgent: decodeUserAgent(text(f[at + 8])),
    ip: text(f[at + 9])
  })
}

/** Script arguments for the optional client binding: flag, client id. */
function clientCheck (clientId: string | undefined): [string, string] {
  return clientId === undefined ? ['0', ''] : ['1', clientId]
}

/** The stored form of a token hash (see STORED_HASH_BYTES). */
export function storedHash (hash: Buffer): Buffer {
  return hash.subarray(0, STORED_HASH_BYTES)
}

export interface FamilyRecord {
  readonly userId: string
  readonly clientId: string
  readonly scope: string
  /** The first token's full SHA-256. */
  readonly tokenHash: Buffer
  readonly now: number
  readonly idleExpiresAt: number
  readonly absoluteExpiresAt: number
  readonly userAgent: string
  readonly ip: string
}

/** ARGV of the create script. Exported so that the bench writes sessions in bulk in exactly the store's format. */
export function createScriptArgs (r: FamilyRecord): ScriptArg[] {
  return [
    r.userId, r.clientId, r.scope, storedHash(r.tokenHash), r.now, r.idleExpiresAt, r.absoluteExpiresAt,
    encodeUserAgent(clampText(r.userAgent, USER_AGENT_MAX_CHARS)), clampText(r.ip, IP_MAX_CHARS)
  ]
}

export interface Rotation {
  /** Full SHA-256 of the presented token, and of the successor derived with `nonce`. */
  readonly presentedHash: Buffer
  readonly successorHash: Buffer
  readonly nonce: Buffer
  readonly now: number
  readonly limits: FamilyLimits
  readonly ip: string
  readonly userAgent: string
  readonly clientId?: string
}

/** ARGV of the rotate script (exported for the bench, as createScriptArgs). */
export function rotateScriptArgs (r: Rotation): ScriptArg[] {
  return [
    r.presentedHash, storedHash(r.successorHash), r.nonce, r.now, r.limits.idleTtlMs, r.limits.graceMs,
    clampText(r.ip, IP_MAX_CHARS), encodeUserAgent(clampText(r.userAgent, USER_AGENT_MAX_CHARS)), ...clientCheck(r.clientId)
  ]
}

function rawHash (token: ParsedRefreshToken): Buffer {
  const bytes = Buffer.from(token.hash, 'base64url')
  // parseRefreshToken/mint produce SHA-256 hashes; anything else is a caller bug.
  if (bytes.length !== TOKEN_HASH_BYTES) throw new TypeError('not a refresh-token hash')
  return bytes
}

export class RedisFamilyStore implements FamilyStore {
  readonly #client: RedisClient & FamilyScriptCommands
  readonly #limits: FamilyLimits
  readonly #clock: Clock
  readonly #prefix: string
  readonly #closeClient: boolean
  readonly #replicaWait: ReplicaWait | undefined

  constructor (options: RedisFamilyStoreOptions) {
    validateLimits(options.limits)
    const prefix = options.keyPrefix ?? DEFAULT_KEY_PREFIX
    // A brace in the prefix would become every key's hash tag: one slot for the whole cluster.
    if (/[{}]/.test(prefix)) throw new RangeError('keyPrefix must not contain { or }')
    const clientPrefix = options.client.options.keyPrefix ?? ''
    this.#prefix = clientPrefix !== '' && prefix.startsWith(clientPrefix) ? prefix.slice(clientPrefix.length) : prefix
    this.#client = defineFamilyScripts(options.client)
    this.#limits = options.limits
    this.#clock = options.clock
    this.#closeClient = options.closeClient ?? true
    const waitReplicas = options.waitReplicas ?? 0
    if (!Number.isSafeInteger(waitReplicas) || waitReplicas < 0) throw new RangeError('waitReplicas must be a non-negative integer')
    this.#replicaWait = waitReplicas === 0 ? undefined : new ReplicaWait(options.client, waitReplicas)
  }

  /** The family's key (as sent; the client may prepend its own prefix). */
  familyKey (sid: string): string {
    return `${this.#prefix}f:{${sid}}`
  }

  /** The user's index key: the user id is hashed so that any id is a safe, bounded hash tag. */
  userIndexKey (userId: string): string {
    return `${this.#prefix}u:{${createHash('sha256').update(userId).digest('base64url').slice(0, 22)}}`
  }

  #now (): number {
    return Math.floor(this.#clock.now())
  }

  /** Run one Redis call with the store's deadline and error mapping. */
  async #redis<T> (call: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new Error(`no answer from Redis within ${STORE_CALL_DEADLINE_MS} ms`)) }, STORE_CALL_DEADLINE_MS)
    })
    try {
      return await Promise.race([call(), deadline])
    } catch (err) {
      throw unavailable(err)
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * REDIS_WAIT_REPLICAS (see replica-wait.ts): call right after a write to `key` was
   * answered. Too few acknowledgements throw (→ 503). The write may then exist on the
   * master alone, which is safe: a client retrying a rotation inside the grace window gets
   * the same successor (and waits again), and an unanswered login leaves an orphan family
   * that dies by its TTL.
   */
  async #replicated (key: string): Promise<void> {
    await this.#replicaWait?.after(key)
  }

  /** Index cleanup after a revocation: best effort (see the file comment). */
  async #unindex (userId: string, sids: string[]): Promise<void> {
    if (sids.length === 0) return
    try {
      await this.#redis(() => this.#client.zrem(this.userIndexKey(userId), ...sids))
    } catch {
      // The family is already gone; readers skip its sid and the index prunes it at the
      // session's absolute expiry.
    }
  }

  async create (input: NewFamily): Promise<{ token: ParsedRefreshToken, family: Family }> {
    const now = this.#now()
    const absoluteExpiresAt = now + this.#limits.maxTtlMs
    const idleExpiresAt = Math.min(now + this.#limits.idleTtlMs, absoluteExpiresAt)
    const userAgent = clampText(input.userAgent, USER_AGENT_MAX_CHARS)
    const ip = clampText(input.ip, IP_MAX_CHARS)
    for (let attempt = 0; attempt < 3; attempt++) {
      const token = mintInitialToken()
      // Index first: a listed sid without a family is harmless, a family missing from
      // the index would survive logout-all — so with WAIT the index entry is replicated
      // too (on a Cluster it lives on another node than the family).
      const indexKey = this.userIndexKey(input.userId)
      await this.#redis(async () => {
        await this.#client.lkIndexAdd(indexKey, token.sid, absoluteExpiresAt, now)
        await this.#replicated(indexKey)
      })
      const familyKey = this.familyKey(token.sid)
      const created = await this.#redis(async () => {
        const reply = await this.#client.lkFamilyCreate(familyKey, ...createScriptArgs({
          userId: input.userId, clientId: input.clientId, scope: input.scope, tokenHash: rawHash(token), now, idleExpiresAt, absoluteExpiresAt, userAgent, ip
        }))
        if (reply === 1) await this.#replicated(familyKey)
        return reply
      })
      if (created !== 1) continue // a 128-bit id clash: draw another
      const family: Family = Object.freeze({
        sid: token.sid,
        userId: input.userId,
        clientId: input.clientId,
        scope: input.scope,
        userAgent,
        ip,
        generation: 0,
        createdAt: now,
        lastUsedAt: now,
        idleExpiresAt,
        absoluteExpiresAt
      })
      return { token, family }
    }
    throw gatewayError('GW_INTERNAL', { description: 'could not allocate a session id' })
  }

  async rotate (presented: ParsedRefreshToken, seen: { ip: string, userAgent: string, clientId?: string }): Promise<RotateResult> {
    const nonce = newNonce()
    const successor = deriveSuccessor(presented, nonce)
    const key = this.familyKey(presented.sid)
    const reply = await this.#redis(async () => {
      const r = await this.#client.lkFamilyRotateBuffer(key, ...rotateScriptArgs({
        presentedHash: rawHash(presented), successorHash: rawHash(successor), nonce: Buffer.from(nonce, 'base64url'),
        now: this.#now(), limits: this.#limits, ip: seen.ip, userAgent: seen.userAgent, clientId: seen.clientId
      }))
      // Only answers that hand out a token wait for replicas; 'reuse' and 'invalid' hand out
      // nothing, and a reuse must be reported (logged, broadcast) whatever the replicas say.
      // A grace answer re-hands a rotation: in this process it was made on this same
      // connection, so WAIT covers it. One made by another gateway replica is covered by
      // that replica's WAIT; if it is lost anyway, the client's next refresh is taken for
      // reuse and the session ends — it fails closed, never into two live branches.
      const kind = text(r[0])
      if (kind === 'rotated' || kind === 'grace') await this.#replicated(key)
      return r
    })
    let userId: string
    try {
      switch (text(reply[0])) {
        case 'invalid':
          return { kind: 'invalid' }
        case 'rotated':
          return { kind: 'rotated', token: successor, family: familyOf(presented.sid, reply, 1) }
        case 'grace': {
          const stored = reply[11]
          if (!Buffer.isBuffer(stored) || stored.length !== NONCE_BYTES) throw new TypeError('grace reply without a nonce')
          // The nonce of the rotation this token already caused: the same successor again.
          return { kind: 'grace', token: deriveSuccessor(presented, stored.toString('base64url')), family: familyOf(presented.sid, reply, 1) }
        }
        case 'reuse':
          userId = text(reply[1])
          break
        default:
          throw new TypeError('unknown reply from the rotate script')
      }
    } catch (err) {
      throw unavailable(err)
    }
    // Reuse: the script already deleted the family; drop it from the user's index.
    await this.#unindex(userId, [presented.sid])
    return { kind: 'reuse', sid: presented.sid, userId }
  }

  async revokeByToken (presented: ParsedRefreshToken, options: { clientId?: string } = {}): Promise<RevokedFamily | null> {
    const userId = await this.#redis(() => this.#client.lkFamilyRevoke(this.familyKey(presented.sid), this.#now(), '0', '', ...clientCheck(options.clientId)))
    if (userId === null) return null
    await this.#unindex(userId, [presented.sid])
    return { sid: presented.sid, userId }
  }

  async lookup (presented: ParsedRefreshToken): Promise<Family | null> {
    const reply = await this.#redis(() => this.#client.lkFamilyRead(this.familyKey(presented.sid), this.#now(), rawHash(presented)))
    if (reply === null) return null
    try {
      return familyOf(presented.sid, reply)
    } catch (err) {
      throw unavailable(err)
    }
  }

  async revokeSession (userId: string, sid: string): Promise<boolean> {
    // The sid comes from a URL: never let it shape a key (or its hash tag) it should not.
    if (!SID.test(sid)) return false
    const revoked = await this.#redis(() => this.#client.lkFamilyRevoke(this.familyKey(sid), this.#now(), '1', userId, '0', ''))
    if (revoked === null) return false
    await this.#unindex(userId, [sid])
    return true
  }

  async revokeAllForUser (userId: string): Promise<string[]> {
    const indexKey = this.userIndexKey(userId)
    const sids = (await this.#redis(() => this.#client.zrange(indexKey, 0, -1))).filter(sid => SID.test(sid))
    const now = this.#now()
    // One atomic revoke per family (each its own slot); sent together, auto-pipelined.
    const results = await Promise.all(sids.map(sid => this.#redis(() => this.#client.lkFamilyRevoke(this.familyKey(sid), now, '1', userId, '0', ''))))
    // Remove exactly the sids read, never the whole key: a login racing this call stays listed.
    await this.#unindex(userId, sids)
    return sids.filter((_sid, i) => results[i] !== null)
  }

  async listForUser (userId: string): Promise<Family[]> {
    const indexKey = this.userIndexKey(userId)
    const now = this.#now()
    const sids = (await this.#redis(() => this.#client.zrange(indexKey, 0, -1))).filter(sid => SID.test(sid))
    const replies = await Promise.all(sids.map(sid => this.#redis(() => this.#client.lkFamilyRead(this.familyKey(sid), now))))
    const live: Family[] = []
    const gone: string[] = []
    replies.forEach((reply, i) => {
      const sid = sids[i] as string
      let family: Family | null = null
      try {
        family = reply === null ? null : familyOf(sid, reply as PublicFieldsReply)
      } catch (err) {
        throw unavailable(err)
      }
      // Another user's family under this index would mean a hash clash of user ids: never show it.
      if (family !== null && family.userId === userId) live.push(family)
      else if (family === null) gone.push(sid)
    })
    await this.#unindex(userId, gone)
    return live.sort((a, b) => b.createdAt - a.createdAt || (a.sid < b.sid ? -1 : 1))
  }

  async ping (): Promise<void> {
    await this.#redis(() => this.#client.ping())
  }

  async close (): Promise<void> {
    if (!this.#closeClient) return
    // Never connected, or already closed: nothing to say goodbye to.
    if (this.#client.status === 'wait' || this.#client.status === 'end') {
      this.#client.disconnect()
      return
    }
    try {
      await this.#client.quit()
    } catch {
      // Not connected (or no answer): drop the socket and stop reconnecting.
      this.#client.disconnect()
      return
    }
    // A Sentinel client's failover detector (+switch-master subscriptions, one connection
    // per sentinel) survives QUIT and reconnects forever, holding the process open
    // (ioredis#1362, ioredis 5.11); disconnect() after QUIT closes only those.
    if (!(this.#client instanceof Cluster)) this.#client.disconnect()
  }
}
