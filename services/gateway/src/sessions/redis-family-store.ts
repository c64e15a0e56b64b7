/**
 * Refresh-token families in Redis (docs/contract.md "Refresh-token families"). One key per family,
 * `<prefix>f:{<sid>}`, a packed value (family-codec.ts) that dies with the family;
 * one index per user, `<prefix>u:{<hash of user id>}`, a ZSET of sid → absolute expiry,
 * so that logout-all and the sessions list need no KEYS/SCAN. The braces are hash tags:
 * each script touches one key, so one slot, on a Redis Cluster.
 *
 * A rotation is one round trip: the gateway draws the nonce and derives the candidate
 * successor before calling, and the rotate script decides everything atomically. Index
 * maintenance after a revocation is a second, best-effort call: the family key is the
 * source of truth and readers of the index skip sids whose family is gone.
 *
 * With `waitReplicas` (REDIS_WAIT_REPLICAS), a login, a rotation or a revocation is
 * answered only once that many replicas hold it (`WAIT`, see replica-wait.ts).
 *
 * The refresh-token key K (refresh-token.ts) is REFRESH_TOKEN_KEY when configured; else one
 * random key per deployment, kept in `<prefix>refresh-key:{refresh-key}` so that every
 * gateway, worker and the bench use the same one with nothing to set up: made by the first
 * store that needs it, read by the others (the tokenKey script), held in memory from then
 * on, and renewed at most every TOKEN_KEY_RENEW_MS by a login or refresh (sent along, not
 * awaited) with a TTL past any family's lifetime (see `#shareTokenKey`). The renewal proposes
 * the key the store holds, so a key Redis lost comes back unchanged. Anyone who can read
 * Redis can read the key, and with it and any old token of a family forge a token that rolls
 * the family forward; a deployment that does not trust its Redis readers (or its backups)
 * sets REFRESH_TOKEN_KEY instead (README, "Configuration"). Whoever can write Redis can make
 * sessions anyway.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { Cluster } from 'ioredis'
import { systemClock, type Clock } from '#shared/clock.js'
import { gatewayError } from '../errors.js'
import { familyFromReply, idpBindingFromReply, PUBLIC_FIELD_COUNT, storedHash } from './family-codec.js'
import { clampText, IP_MAX_CHARS, PROVIDER_MAX_CHARS, USER_AGENT_MAX_CHARS, validateLimits, type Family, type FamilyLimits, type FamilyStore, type IdpBinding, type NewFamily, type RevokedFamily, type RotateResult } from './family-store.js'
import { newNonce, NONCE_BYTES, REFRESH_TOKEN_KEY_BYTES, RefreshTokenKey, type ParsedRefreshToken } from './refresh-token.js'
import type { RedisClient } from './redis-connection.js'
import { ReplicaWait } from './replica-wait.js'
import { clientCheck, createScriptArgs, defineFamilyScripts, rotateScriptArgs, type FamilyScriptCommands, type ScriptNow } from './redis-scripts.js'

export const DEFAULT_KEY_PREFIX = 'lk:'
/**
 * Whatever ioredis does (cluster redirections, a failover), a store call fails after this
 * so that the request answers 503 within the contract.s 2 s.
 */
export const STORE_CALL_DEADLINE_MS = 1500
/** How often a store renews the refresh-token key it shares through Redis (and puts it back if it is gone), at most. */
export const TOKEN_KEY_RENEW_MS = 60 * 60 * 1000
const SID = /^[A-Za-z0-9_-]{22}$/
const TOKEN_HASH_BYTES = 32

export interface RedisFamilyStoreOptions {
  readonly client: RedisClient
  readonly limits: FamilyLimits
  /**
   * Leave unset (or pass `systemClock`) in production: every time comparison is then made
   * by Redis' own clock, so gateways with skewed clocks agree (see redis-scripts.ts). A
   * hand-moved clock (tests) replaces Redis' clock instead.
   */
  readonly clock?: Clock
  /**
   * The prefix of this store's keys as they appear in Redis (default `lk:`). When the
   * client already applies an ioredis `keyPrefix`, only what this adds to it is prepended
   * again, so passing the same prefix to both does not double it.
   */
  readonly keyPrefix?: string
  /** `close()` quits the client (default true: the gateway builds one client for the store). */
  readonly closeClient?: boolean
  /**
   * REDIS_WAIT_REPLICAS: replicas that must hold a new family, a rotation or a revocation
   * before it is answered (default 0: Redis' asynchronous replication, no wait). Fewer
   * within REDIS_WAIT_TIMEOUT_MS → GW_STORE_UNAVAILABLE. The script and its WAIT share
   * STORE_CALL_DEADLINE_MS.
   */
  readonly waitReplicas?: number
  /**
   * Write each rotation *pending* until `commitRotation` (see `rotate`). Default: on exactly
   * when `waitReplicas` > 0, the case it exists for; the contract tests turn it on alone.
   */
  readonly pendingRotations?: boolean
  /** REFRESH_TOKEN_KEY; absent: the key shared through Redis (see the file comment). */
  readonly tokenKey?: RefreshTokenKey
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

/**
 * The successor a grace reply hands back: re-derived with the nonce of the rotation the token
 * already caused, in the format of the one the family holds (the reply's current hash; a
 * gateway of the first release makes format-1 successors, refresh-token.ts). Undefined when
 * neither candidate is it.
 */
function graceSuccessor (tokens: RefreshTokenKey, presented: ParsedRefreshToken, reply: ReadonlyArray<Buffer | number>): ParsedRefreshToken | undefined {
  const nonce = reply[1 + PUBLIC_FIELD_COUNT]
  const current = reply[2 + PUBLIC_FIELD_COUNT]
  if (!Buffer.isBuffer(nonce) || nonce.length !== NONCE_BYTES) throw new TypeError('grace reply without a nonce')
  if (!Buffer.isBuffer(current) || current.length === 0 || current.length > TOKEN_HASH_BYTES) throw new TypeError('grace reply without the current hash')
  // Stored hashes may be shorter than a token's (family-codec.ts): compare that many bytes.
  return tokens.graceSuccessor(presented, nonce.toString('base64url'), (candidate) => timingSafeEqual(rawHash(candidate).subarray(0, current.length), current))
}

/** The family's IdP binding from a rotate reply, spread into the result (nothing when unbound). */
function idpOf (reply: ReadonlyArray<Buffer | number>, at: number): { idp?: IdpBinding } {
  const idp = idpBindingFromReply(reply, at)
  return idp === undefined ? {} : { idp }
}

/** The family's generation before a roll forward, from the rotate reply. */
function generationBefore (v: Buffer | number | undefined): number {
  const n = Number(text(v))
  if (!Number.isSafeInteger(n)) throw new TypeError('a rolled-forward reply without the generation before')
  return n
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
  /** Undefined: Redis' clock decides (production). */
  readonly #clock: Clock | undefined
  readonly #prefix: string
  readonly #closeClient: boolean
  readonly #replicaWait: ReplicaWait | undefined
  readonly #pending: boolean
  /** K once known: REFRESH_TOKEN_KEY, or the key in Redis once read. */
  #tokens: RefreshTokenKey | undefined
  readonly #sharedKey: boolean
  #keyLoad: Promise<RefreshTokenKey> | undefined
  /** When the shared key is next renewed (the store's clock: a test moves it). */
  #keyRenewAt = 0
  readonly #wallClock: Clock

  constructor (options: RedisFamilyStoreOptions) {
    validateLimits(options.limits)
    const prefix = options.keyPrefix ?? DEFAULT_KEY_PREFIX
    // A brace in the prefix would become every key's hash tag: one slot for the whole cluster.
    if (/[{}]/.test(prefix)) throw new RangeError('keyPrefix must not contain { or }')
    const clientPrefix = options.client.options.keyPrefix ?? ''
    this.#prefix = clientPrefix !== '' && prefix.startsWith(clientPrefix) ? prefix.slice(clientPrefix.length) : prefix
    this.#client = defineFamilyScripts(options.client)
    this.#limits = options.limits
    this.#clock = options.clock === systemClock ? undefined : options.clock
    this.#wallClock = options.clock ?? systemClock
    this.#closeClient = options.closeClient ?? true
    const waitReplicas = options.waitReplicas ?? 0
    if (!Number.isSafeInteger(waitReplicas) || waitReplicas < 0) throw new RangeError('waitReplicas must be a non-negative integer')
    this.#replicaWait = waitReplicas === 0 ? undefined : new ReplicaWait(options.client, waitReplicas)
    this.#pending = options.pendingRotations ?? waitReplicas > 0
    this.#tokens = options.tokenKey
    this.#sharedKey = options.tokenKey === undefined
  }

  /** The family's key (as sent; the client may prepend its own prefix). */
  familyKey (sid: string): string {
    return `${this.#prefix}f:{${sid}}`
  }

  /** Where the shared refresh-token key lives (without REFRESH_TOKEN_KEY). */
  tokenKeyKey (): string {
    return `${this.#prefix}refresh-key:{refresh-key}`
  }

  /** The user's index key: the user id is hashed so that any id is a safe, bounded hash tag. */
  userIndexKey (userId: string): string {
    return `${this.#prefix}u:{${createHash('sha256').update(userId).digest('base64url').slice(0, 22)}}`
  }

  /** The scripts' `now`: '' = Redis' TIME. */
  #now (): ScriptNow {
    return this.#clock === undefined ? '' : Math.floor(this.#clock.now())
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
   * answered. Too few acknowledgements throw (→ 503). An unanswered login leaves an orphan
   * family that dies by its TTL; an unanswered rotation is undone (see `rotate`); an
   * unanswered revocation stays done on the master and the client may repeat it.
   */
  async #replicated (key: string): Promise<void> {
    await this.#replicaWait?.after(key)
  }

  /**
   * K, once at hand; when the shared key's renewal is due, it is sent along (not awaited: the
   * key held stays right meanwhile). Undefined until the first read (`#shareTokenKey`).
   */
  #heldTokenKey (): RefreshTokenKey | undefined {
    if (this.#sharedKey && this.#tokens !== undefined && this.#wallClock.now() >= this.#keyRenewAt) {
      this.#shareTokenKey().catch(() => {}) // retried by the next call: still due
    }
    return this.#tokens
  }

  /**
   * K, read (or made) in Redis, proposing the key already held; one read at a time. Its TTL
   * outlives every family: a family's absolute expiry is at most SESSION_MAX_TTL after the last
   * login or refresh of it, and a login or refresh renews the key when its last renewal is
   * TOKEN_KEY_RENEW_MS old.
   */
  async #shareTokenKey (): Promise<RefreshTokenKey> {
    this.#keyLoad ??= (async () => {
      const key = this.tokenKeyKey()
      const proposed = this.#tokens?.bytes() ?? randomBytes(REFRESH_TOKEN_KEY_BYTES)
      // Not WAITed for, even with REDIS_WAIT_REPLICAS: there, rotations are not lost in the
      // first place; and a key a failover lost only stops tokens made under it from rolling
      // forward at gateways that came to hold another, until their next rotation.
      const stored = await this.#redis(() => this.#client.lkTokenKeyBuffer(key, proposed, this.#limits.maxTtlMs + TOKEN_KEY_RENEW_MS))
      // Another gateway's key, if it put one back first: from now on, this one's too (a
      // token made under the other key is only not rolled forward here; see refresh-token.ts).
      const tokens = new RefreshTokenKey(stored)
      this.#tokens = tokens
      this.#keyRenewAt = this.#wallClock.now() + TOKEN_KEY_RENEW_MS
      return tokens
    })().finally(() => { this.#keyLoad = undefined })
    return await this.#keyLoad
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
    const userAgent = clampText(input.userAgent, USER_AGENT_MAX_CHARS)
    const ip = clampText(input.ip, IP_MAX_CHARS)
    const provider = input.provider === undefined ? undefined : clampText(input.provider, PROVIDER_MAX_CHARS)
    const tokens = await this.tokenKey()
    for (let attempt = 0; attempt < 3; attempt++) {
      const token = tokens.mint()
      // Index first: a listed sid without a family is harmless, a family missing from
      // the index would survive logout-all — so with WAIT the index entry is replicated
      // too (on a Cluster it lives on another node than the family). The index script
      // answers the time it used: the family's lifetimes count from it.
      const indexKey = this.userIndexKey(input.userId)
      const now = await this.#redis(async () => {
        const at = await this.#client.lkIndexAdd(indexKey, token.sid, this.#limits.maxTtlMs, this.#now())
        await this.#replicated(indexKey)
        return Number(at)
      })
      const absoluteExpiresAt = now + this.#limits.maxTtlMs
      const idleExpiresAt = Math.min(now + this.#limits.idleTtlMs, absoluteExpiresAt)
      const familyKey = this.familyKey(token.sid)
      const created = await this.#redis(async () => {
        const reply = await this.#client.lkFamilyCreate(familyKey, ...createScriptArgs({
          userId: input.userId, clientId: input.clientId, scope: input.scope, tokenHash: rawHash(token), now, idleExpiresAt, absoluteExpiresAt, userAgent, ip, provider, idp: input.idp
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
        absoluteExpiresAt,
        ...(provider === undefined || provider === '' ? {} : { provider })
      })
      return { token, family }
    }
    throw gatewayError('GW_INTERNAL', { description: 'could not allocate a session id' })
  }

  /**
   * A refresh that is not answered 200 never turns the client's token into reuse:
   *
   *  - Redis stalled (frozen, paused, slow): the gateway gives up after the command
   *    timeout, but Redis may run the rotation later. It is stamped with Redis' clock when
   *    it runs, so the grace window opens then; the client's retry with the token it
   *    holds gets that same successor (rule 3), however long the stall lasted.
   *  - The rotation ran but too few replicas acknowledged it (REDIS_WAIT_REPLICAS): it is
   *    taken back at once on the master (the undo script, only if that successor is still
   *    current), so the presented token is the current one again and the client's retry
   *    rotates it normally — however long the replica stays away. A failover before the
   *    undo promotes a replica that never saw the rotation: the same state.
   *  - The undo cannot help when it lands on the wrong node: the rotation reached the
   *    replica, the replica was promoted before its acknowledgement counted, and the undo
   *    went to the old master, whose writes the failover then discards. So with
   *    REDIS_WAIT_REPLICAS the successor is written *pending* and marked done
   *    (`commitRotation`) only once the gateway answers it 200 — after its WAIT succeeded
   *    and SessionService's checks kept it (an IdP that cannot be asked takes it back with
   *    `undoRotation`, the same undo script); while it is pending, its predecessor gets it
   *    back at any time, as inside grace (the rotate script). Measured under SENTINEL
   *    FAILOVER with the clients back after grace: 5 of 6 sessions lost without it, 0 with it.
   *
   * Reuse detection stays exact: reuse is still "a token older than the current one's
   * predecessor, or the predecessor after grace once its successor was handed out", where
   * "current" only ever names a token that was handed out with a 200 (or is being retried
   * inside grace). The one case no longer called reuse — the predecessor of a successor
   * nobody was given — is not a replay: nobody else holds the family, so nobody is racing
   * the client. A commit that is itself lost (a failover right after the 200) leaves the
   * predecessor good only until the successor is presented, which rotates it again.
   *
   * Without REDIS_WAIT_REPLICAS, a failover can discard rotations the old master answered 200
   * (asynchronous replication; in a planned failover the old master takes writes for a moment
   * after the replica's promotion). The client then holds a successor the family never heard
   * of. A format-2 token states its generation under a mac only a gateway can make
   * (refresh-token.ts); when that mac verified (SessionService recognised the token under
   * `tokenKey()`, so it carries its generation) and the generation is above the family's, the
   * rotate script *rolls the family forward*: the token is rotated as if current (its
   * successor one generation further, itself the predecessor for grace), the answer is
   * `rotated` with `rolledForwardFrom`, and SessionService logs `refresh_rolled_forward`.
   *
   * Why reuse detection stays exact. Every token is made from its predecessor at the
   * predecessor's generation + 1, and every write of a family sets its generation to that of
   * the token it makes current (create 0, rotate +1, undo −1 back to the predecessor's, a
   * roll forward to the successor's), so the current token's generation is the family's (a
   * replica of the previous release adds 1 too, and makes format-1 tokens, which state none). A
   * token leaves a gateway only in a 200 — the current token, or one a later rotation made
   * the predecessor or older — so while the family has lost no write, no token a client can
   * hold is above its generation, and the roll forward cannot fire: every token that was
   * reuse is still reuse. (The one way down, undo, takes back a successor nobody was answered
   * with — or, if a grace answer raced it, one that was answered 200, which it is then right to
   * roll forward to.) A forged mac, a format-1 token, another key's mac, or a generation not
   * above the family's: reuse as before. After lost writes, the first token presented from
   * the lost range continues the family and any other branch presented later is older or
   * equal, so reuse, which revokes the family: a thief holding a token the failover forgot is
   * caught when the client comes back, exactly as a thief holding a stolen current token is.
   * Not rescued: a login lost in a failover (no family: 401, not reuse), and format-1 tokens
   * (sessions from before the upgrade, or rotated by a replica of the previous release during
   * it, until they end).
   */
  async rotate (presented: ParsedRefreshToken, seen: { ip: string, userAgent: string, clientId?: string }): Promise<RotateResult> {
    const tokens = await this.tokenKey()
    const nonce = newNonce()
    const successor = tokens.successor(presented, nonce)
    const key = this.familyKey(presented.sid)
    const reply = await this.#redis(async () => {
      const r = await this.#client.lkFamilyRotateBuffer(key, ...rotateScriptArgs({
        presentedHash: rawHash(presented), successorHash: rawHash(successor), nonce: Buffer.from(nonce, 'base64url'),
        now: this.#now(), limits: this.#limits, ip: seen.ip, userAgent: seen.userAgent, clientId: seen.clientId,
        pending: this.#pending, authenticGeneration: presented.generation
      }))
      // Only answers that hand out a token wait for replicas; 'invalid' hands out nothing,
      // and a reuse must be reported (logged, broadcast) whatever the replicas say.
      const kind = text(r[0])
      if (kind === 'grace') await this.#replicated(key)
      if (kind === 'rotated' || kind === 'rolled') {
        try {
          await this.#replicated(key)
        } catch (err) {
          // Best effort: not undone, the rotation stays on the master and the client's
          // retry gets its successor (inside grace, or at any time while it is pending).
          await this.#undo(key, successor, Number(text(r[4]))).catch(() => 0)
          throw err
        }
      }
      return r
    })
    let userId: string
    try {
      switch (text(reply[0])) {
        case 'invalid':
          return { kind: 'invalid' }
        case 'rotated':
          return { kind: 'rotated', token: successor, family: familyFromReply(presented.sid, reply, 1), ...idpOf(reply, 1 + PUBLIC_FIELD_COUNT) }
        case 'rolled':
          // After the IdP binding's two fields: the generation the family was at.
          return { kind: 'rotated', token: successor, family: familyFromReply(presented.sid, reply, 1), ...idpOf(reply, 1 + PUBLIC_FIELD_COUNT), rolledForwardFrom: generationBefore(reply[3 + PUBLIC_FIELD_COUNT]) }
        case 'grace': {
          const token = graceSuccessor(tokens, presented, reply)
          if (token === undefined) return { kind: 'underivable', sid: presented.sid }
          return { kind: 'grace', token, family: familyFromReply(presented.sid, reply, 1), ...idpOf(reply, 3 + PUBLIC_FIELD_COUNT) }
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

  /** K (see the file comment): the held key, or the one in Redis on the first call. */
  async tokenKey (): Promise<RefreshTokenKey> {
    return this.#heldTokenKey() ?? await this.#shareTokenKey()
  }

  /**
   * The successor was answered 200 (SessionService calls this once it keeps the rotation:
   * its WAIT succeeded and no IdP check took it back): clear its pending mark, so its
   * predecessor keeps only the grace window (see the rotate script). Never throws and need
   * not be awaited: the answer does not depend on it, and a commit that is lost (the
   * gateway dies, a failover forgets it) leaves the predecessor good only until the
   * successor is next presented. Nothing to do without pending rotations.
   */
  async commitRotation (successor: ParsedRefreshToken, generation: number): Promise<void> {
    if (!this.#pending) return
    await this.#client.lkFamilyCommit(this.familyKey(successor.sid), storedHash(rawHash(successor)), generation).catch(() => 0)
  }

  /**
   * Take back a rotation whose answer is not given: the one undo path, for a rotation that
   * was not replicated (`rotate`, best effort) and for one SessionService could not keep (an
   * IdP check that could not be made). The undo script also clears a pending mark; should the
   * undo itself be lost (a failover), a pending successor still keeps the retry from being
   * reuse (see `rotate`), which is why SessionService commits only after its checks.
   */
  async undoRotation (successor: ParsedRefreshToken, generation: number): Promise<boolean> {
    const key = this.familyKey(successor.sid)
    return (await this.#redis(async () => {
      const r = await this.#undo(key, successor, generation)
      if (r === 1) await this.#replicated(key)
      return r
    })) === 1
  }

  async #undo (key: string, successor: ParsedRefreshToken, generation: number): Promise<number> {
    return await this.#client.lkFamilyUndo(key, storedHash(rawHash(successor)), generation)
  }

  async bindIdp (sid: string, binding: IdpBinding): Promise<boolean> {
    if (!SID.test(sid)) return false
    const key = this.familyKey(sid)
    return (await this.#redis(async () => {
      const r = await this.#client.lkFamilyBindIdp(key, binding.sealed, binding.checkedAt, this.#now())
      if (r === 1) await this.#replicated(key)
      return r
    })) === 1
  }

  async revokeByToken (presented: ParsedRefreshToken, options: { clientId?: string } = {}): Promise<RevokedFamily | null> {
    const key = this.familyKey(presented.sid)
    const userId = await this.#redis(async () => {
      const r = await this.#client.lkFamilyRevoke(key, this.#now(), '0', '', ...clientCheck(options.clientId))
      if (r !== null) await this.#replicated(key)
      return r
    })
    if (userId === null) return null
    await this.#unindex(userId, [presented.sid])
    return { sid: presented.sid, userId }
  }

  async lookup (presented: ParsedRefreshToken): Promise<Family | null> {
    const reply = await this.#redis(() => this.#client.lkFamilyRead(this.familyKey(presented.sid), this.#now(), rawHash(presented)))
    if (reply === null) return null
    try {
      return familyFromReply(presented.sid, reply)
    } catch (err) {
      throw unavailable(err)
    }
  }

  async revokeSession (userId: string, sid: string): Promise<boolean> {
    // The sid comes from a URL: never let it shape a key (or its hash tag) it should not.
    if (!SID.test(sid)) return false
    const key = this.familyKey(sid)
    const revoked = await this.#redis(async () => {
      const r = await this.#client.lkFamilyRevoke(key, this.#now(), '1', userId, '0', '')
      if (r !== null) await this.#replicated(key)
      return r
    })
    if (revoked === null) return false
    await this.#unindex(userId, [sid])
    return true
  }

  async revokeAllForUser (userId: string): Promise<string[]> {
    const indexKey = this.userIndexKey(userId)
    const sids = (await this.#redis(() => this.#client.zrange(indexKey, 0, -1))).filter(sid => SID.test(sid))
    const now = this.#now()
    // One atomic revoke per family (each its own slot); sent together (auto-pipelined outside a Cluster), and
    // their WAITs group-committed per connection.
    const results = await Promise.all(sids.map(sid => this.#redis(async () => {
      const key = this.familyKey(sid)
      const r = await this.#client.lkFamilyRevoke(key, now, '1', userId, '0', '')
      if (r !== null) await this.#replicated(key)
      return r
    })))
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
        family = reply === null ? null : familyFromReply(sid, reply)
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
