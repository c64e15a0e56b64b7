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
 */
import { createHash } from 'node:crypto'
import type { Clock } from '#shared/clock.js'
import { gatewayError } from '../errors.js'
import type { Family, FamilyLimits, FamilyStore, NewFamily, RevokedFamily, RotateResult } from './family-store.js'
import { deriveSuccessor, mintInitialToken, newNonce, NONCE_BYTES, type ParsedRefreshToken } from './refresh-token.js'
import type { RedisClient } from './redis-connection.js'
import { defineFamilyScripts, type FamilyScriptCommands, type PublicFieldsReply } from './redis-scripts.js'

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
    userAgent: text(f[at + 8]),
    ip: text(f[at + 9])
  })
}

/** Script arguments for the optional client binding: flag, client id. */
function clientCheck (clientId: string | undefined): [string, string] {
  return clientId === undefined ? ['0', ''] : ['1', clientId]
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
      // the index would survive logout-all.
      await this.#redis(() => this.#client.lkIndexAdd(this.userIndexKey(input.userId), token.sid, absoluteExpiresAt, now))
      const created = await this.#redis(() => this.#client.lkFamilyCreate(this.familyKey(token.sid),
        input.userId, input.clientId, input.scope, rawHash(token), now, idleExpiresAt, absoluteExpiresAt, userAgent, ip))
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
    const reply = await this.#redis(() => this.#client.lkFamilyRotateBuffer(this.familyKey(presented.sid),
      rawHash(presented), rawHash(successor), Buffer.from(nonce, 'base64url'), this.#now(),
      this.#limits.idleTtlMs, this.#limits.graceMs,
      clampText(seen.ip, IP_MAX_CHARS), clampText(seen.userAgent, USER_AGENT_MAX_CHARS), ...clientCheck(seen.clientId)))
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
    }
  }
}
