/**
 * Refresh-token families in this process only (`npm start` without REDIS_URL): the same
 * rules as the Redis store, for one replica whose sessions die with it. Every operation
 * runs without awaiting in between, so it is as atomic as a Lua script.
 *
 * Growth is bounded: expired families are dropped when touched and by a periodic sweep
 * (an unref'd timer, so it never keeps the process alive), and past `maxFamilies` the
 * oldest login is dropped, as a Redis with an eviction policy would.
 */
import type { Clock } from '#shared/clock.js'
import { clampText, IP_MAX_CHARS, PROVIDER_MAX_CHARS, USER_AGENT_MAX_CHARS, validateLimits, type Family, type FamilyLimits, type FamilyStore, type IdpBinding, type NewFamily, type RevokedFamily, type RotateResult } from './family-store.js'
import { hashesEqual, newNonce, RefreshTokenKey, type ParsedRefreshToken } from './refresh-token.js'

export const MEMORY_STORE_MAX_FAMILIES = 100_000
export const MEMORY_STORE_SWEEP_INTERVAL_MS = 60_000

export interface MemoryFamilyStoreOptions {
  readonly limits: FamilyLimits
  readonly clock: Clock
  readonly maxFamilies?: number
  readonly sweepIntervalMs?: number
  /** Write each rotation pending until `commitRotation`, as the Redis store does with REDIS_WAIT_REPLICAS (default false). */
  readonly pendingRotations?: boolean
  /**
   * REFRESH_TOKEN_KEY; absent: a random key for this process. Nothing here is ever lost
   * while the process lives, so no roll forward fires in production; the rule is the Redis
   * store's, kept the same here (and checked by the shared contract), as is trusting the
   * generation of a presented token (recognised by SessionService under `tokenKey()`).
   */
  readonly tokenKey?: RefreshTokenKey
}

interface Entry {
  family: Family
  hash: string
  /** The rotated-out predecessor and the nonce that derived the current token from it. */
  prevHash: string | null
  nonce: string | null
  rotatedAt: number
  /** The current token is a successor not yet answered 200 (see RedisFamilyStore.rotate). */
  pending: boolean
  idp: IdpBinding | undefined
}

export class MemoryFamilyStore implements FamilyStore {
  /** Insertion order = login order, which is what eviction drops first. */
  readonly #families = new Map<string, Entry>()
  readonly #byUser = new Map<string, Set<string>>()
  readonly #limits: FamilyLimits
  readonly #clock: Clock
  readonly #maxFamilies: number
  readonly #timer: NodeJS.Timeout
  readonly #pending: boolean
  readonly #tokens: RefreshTokenKey

  constructor (options: MemoryFamilyStoreOptions) {
    validateLimits(options.limits)
    this.#limits = options.limits
    this.#clock = options.clock
    this.#maxFamilies = options.maxFamilies ?? MEMORY_STORE_MAX_FAMILIES
    this.#pending = options.pendingRotations ?? false
    this.#tokens = options.tokenKey ?? RefreshTokenKey.random()
    this.#timer = setInterval(() => { this.sweep() }, options.sweepIntervalMs ?? MEMORY_STORE_SWEEP_INTERVAL_MS)
    this.#timer.unref()
  }

  /** Families held, live or not yet swept (tests, metrics). */
  get size (): number {
    return this.#families.size
  }

  /** Drop every expired family. */
  sweep (): void {
    const now = this.#clock.now()
    for (const [sid, entry] of this.#families) {
      if (expired(entry.family, now)) this.#delete(sid, entry)
    }
  }

  #delete (sid: string, entry: Entry): void {
    this.#families.delete(sid)
    const sids = this.#byUser.get(entry.family.userId)
    sids?.delete(sid)
    if (sids?.size === 0) this.#byUser.delete(entry.family.userId)
  }

  /** The live entry for `sid`; an expired one is dropped on the way. */
  #live (sid: string, now: number): Entry | undefined {
    const entry = this.#families.get(sid)
    if (entry === undefined) return undefined
    if (!expired(entry.family, now)) return entry
    this.#delete(sid, entry)
    return undefined
  }

  async create (input: NewFamily): Promise<{ token: ParsedRefreshToken, family: Family }> {
    const now = this.#clock.now()
    if (this.#families.size >= this.#maxFamilies) this.sweep()
    while (this.#families.size >= this.#maxFamilies) {
      const [sid, entry] = this.#families.entries().next().value as [string, Entry]
      this.#delete(sid, entry)
    }
    const token = this.#tokens.mint()
    const absoluteExpiresAt = now + this.#limits.maxTtlMs
    const provider = input.provider === undefined ? '' : clampText(input.provider, PROVIDER_MAX_CHARS)
    const family: Family = Object.freeze({
      sid: token.sid,
      userId: input.userId,
      clientId: input.clientId,
      scope: input.scope,
      userAgent: clampText(input.userAgent, USER_AGENT_MAX_CHARS),
      ip: clampText(input.ip, IP_MAX_CHARS),
      generation: 0,
      createdAt: now,
      lastUsedAt: now,
      idleExpiresAt: Math.min(now + this.#limits.idleTtlMs, absoluteExpiresAt),
      absoluteExpiresAt,
      ...(provider === '' ? {} : { provider })
    })
    this.#families.set(token.sid, { family, hash: token.hash, prevHash: null, nonce: null, rotatedAt: 0, pending: false, idp: input.idp })
    let sids = this.#byUser.get(input.userId)
    if (sids === undefined) this.#byUser.set(input.userId, sids = new Set())
    sids.add(token.sid)
    return { token, family }
  }

  async rotate (presented: ParsedRefreshToken, seen: { ip: string, userAgent: string, clientId?: string }): Promise<RotateResult> {
    const now = this.#clock.now()
    const entry = this.#live(presented.sid, now)
    if (entry === undefined) return { kind: 'invalid' }
    // Bound to its client (RFC 6749 §6): from another client it is unknown, not a replay.
    if (seen.clientId !== undefined && seen.clientId !== entry.family.clientId) return { kind: 'invalid' }
    // Make the presented token's successor current at `generation` (as the rotate script).
    const rotate = (generation: number): Extract<RotateResult, { kind: 'rotated' }> => {
      const nonce = newNonce()
      const successor = this.#tokens.successor(presented, nonce)
      const f = entry.family
      entry.family = Object.freeze({
        ...f,
        ip: clampText(seen.ip, IP_MAX_CHARS),
        userAgent: clampText(seen.userAgent, USER_AGENT_MAX_CHARS),
        generation,
        lastUsedAt: now,
        // Slides, but never past the absolute expiry fixed at login.
        idleExpiresAt: Math.min(now + this.#limits.idleTtlMs, f.absoluteExpiresAt)
      })
      entry.prevHash = presented.hash
      entry.hash = successor.hash
      entry.nonce = nonce
      entry.rotatedAt = now
      entry.pending = this.#pending
      return { kind: 'rotated', token: successor, family: entry.family, ...idpOf(entry) }
    }
    if (hashesEqual(presented.hash, entry.hash)) return rotate(entry.family.generation + 1)
    const { graceMs } = this.#limits
    if (entry.prevHash !== null && entry.nonce !== null && hashesEqual(presented.hash, entry.prevHash) &&
        ((graceMs > 0 && now - entry.rotatedAt <= graceMs) || entry.pending)) {
      // The rotation this token already caused (within grace, or never answered 200),
      // handed out again; nothing changes. Whichever release made it (refresh-token.ts).
      const current = entry.hash
      const token = this.#tokens.graceSuccessor(presented, entry.nonce, (candidate) => hashesEqual(candidate.hash, current))
      if (token === undefined) return { kind: 'underivable', sid: presented.sid }
      return { kind: 'grace', token, family: entry.family, ...idpOf(entry) }
    }
    // A gateway-made token ahead of the family: writes were lost; roll forward (see
    // RedisFamilyStore.rotate for why this never fires otherwise).
    const claimed = presented.generation
    const before = entry.family.generation
    if (claimed !== undefined && claimed > before) return { ...rotate(claimed + 1), rolledForwardFrom: before }
    // Replay: the family dies, live successor included, and with it any grace window.
    this.#delete(presented.sid, entry)
    return { kind: 'reuse', sid: presented.sid, userId: entry.family.userId }
  }

  async tokenKey (): Promise<RefreshTokenKey> {
    return this.#tokens
  }

  async undoRotation (successor: ParsedRefreshToken, generation: number): Promise<boolean> {
    const entry = this.#live(successor.sid, this.#clock.now())
    // Only if that successor is still current: nothing made after it is lost.
    if (entry === undefined || entry.prevHash === null || entry.family.generation !== generation || !hashesEqual(successor.hash, entry.hash)) return false
    entry.hash = entry.prevHash
    entry.prevHash = null
    entry.nonce = null
    entry.rotatedAt = 0
    entry.pending = false
    entry.family = Object.freeze({ ...entry.family, generation: generation - 1 })
    return true
  }

  async commitRotation (successor: ParsedRefreshToken, generation: number): Promise<void> {
    const entry = this.#live(successor.sid, this.#clock.now())
    if (entry !== undefined && entry.family.generation === generation && hashesEqual(successor.hash, entry.hash)) entry.pending = false
  }

  async bindIdp (sid: string, binding: IdpBinding): Promise<boolean> {
    const entry = this.#live(sid, this.#clock.now())
    if (entry === undefined) return false
    entry.idp = binding
    return true
  }

  async revokeByToken (presented: ParsedRefreshToken, options: { clientId?: string } = {}): Promise<RevokedFamily | null> {
    const entry = this.#live(presented.sid, this.#clock.now())
    if (entry === undefined) return null
    // RFC 7009 §2.1: a client may only revoke tokens issued to it.
    if (options.clientId !== undefined && options.clientId !== entry.family.clientId) return null
    this.#delete(presented.sid, entry)
    return { sid: presented.sid, userId: entry.family.userId }
  }

  async lookup (presented: ParsedRefreshToken): Promise<Family | null> {
    const entry = this.#live(presented.sid, this.#clock.now())
    return entry !== undefined && hashesEqual(presented.hash, entry.hash) ? entry.family : null
  }

  async revokeSession (userId: string, sid: string): Promise<boolean> {
    const entry = this.#live(sid, this.#clock.now())
    if (entry === undefined || entry.family.userId !== userId) return false
    this.#delete(sid, entry)
    return true
  }

  async revokeAllForUser (userId: string): Promise<string[]> {
    const now = this.#clock.now()
    const revoked: string[] = []
    for (const sid of [...this.#byUser.get(userId) ?? []]) {
      const entry = this.#families.get(sid)
      if (entry === undefined) continue
      if (!expired(entry.family, now)) revoked.push(sid)
      this.#delete(sid, entry)
    }
    return revoked
  }

  async listForUser (userId: string): Promise<Family[]> {
    const now = this.#clock.now()
    const live: Family[] = []
    for (const sid of [...this.#byUser.get(userId) ?? []]) {
      const entry = this.#live(sid, now)
      if (entry !== undefined) live.push(entry.family)
    }
    return live.sort((a, b) => b.createdAt - a.createdAt || (a.sid < b.sid ? -1 : 1))
  }

  async ping (): Promise<void> {}

  async close (): Promise<void> {
    clearInterval(this.#timer)
  }
}

function idpOf (entry: Entry): { idp?: IdpBinding } {
  return entry.idp === undefined ? {} : { idp: entry.idp }
}

function expired (family: Family, now: number): boolean {
  return now >= family.idleExpiresAt || now >= family.absoluteExpiresAt
}
