/**
 * Which latchkey families an upstream sign-in produced, so OIDC Back-Channel Logout 1.0 can
 * find them: a logout token names the IdP's session (`sid`) and/or subject (`sub`), never a
 * latchkey sid or user id (§2.4). One hash per IdP session and one per IdP subject, field =
 * latchkey sid, value = latchkey user id. Entries live as long as a family can
 * (SESSION_MAX_TTL); one pointing at a family already gone is harmless (revoking it is a
 * no-op). Redis when the gateway has it (each key on its own slot; TTL on every write),
 * this process otherwise.
 */
import { createHash } from 'node:crypto'
import type { Clock } from '#shared/clock.js'
import { gatewayError } from '../../errors.js'
import type { RedisClient } from '../../sessions/redis-connection.js'

export interface FederatedLink {
  readonly userId: string
  readonly sid: string
}

export interface FederatedSubject {
  /** The IdP's `sub` (unique within its issuer, OIDC Core §2). */
  readonly sub: string
  /** The IdP's session id from the ID token, when it sent one (Back-Channel Logout §2.1). */
  readonly idpSid?: string
}

export interface FederatedLinks {
  add (provider: string, who: FederatedSubject, link: FederatedLink, ttlMs: number): Promise<void>
  /** Families for the IdP session `idpSid` when given, else for the IdP subject `sub`. */
  find (provider: string, who: { sub?: string, idpSid?: string }): Promise<FederatedLink[]>
}

function keysOf (provider: string, who: { sub?: string, idpSid?: string }): { bySub?: string, bySid?: string } {
  const h = (kind: string, v: string): string =>
    `oidc:l:{${createHash('sha256').update(`${provider}\n${kind}\n${v}`).digest('base64url').slice(0, 32)}}`
  return {
    ...(who.sub === undefined ? {} : { bySub: h('sub', who.sub) }),
    ...(who.idpSid === undefined ? {} : { bySid: h('sid', who.idpSid) })
  }
}

function unavailable (err: unknown): Error {
  return gatewayError('GW_STORE_UNAVAILABLE', { cause: err instanceof Error ? new Error(err.message) : undefined })
}

export class RedisFederatedLinks implements FederatedLinks {
  readonly #client: RedisClient
  constructor (client: RedisClient) { this.#client = client }

  async add (provider: string, who: FederatedSubject, link: FederatedLink, ttlMs: number): Promise<void> {
    const { bySub, bySid } = keysOf(provider, who)
    try {
      // One key per MULTI: each is its own hash slot under Cluster.
      for (const key of [bySub, bySid]) {
        if (key !== undefined) await this.#client.multi().hset(key, link.sid, link.userId).pexpire(key, ttlMs).exec()
      }
    } catch (err) { throw unavailable(err) }
  }

  async find (provider: string, who: { sub?: string, idpSid?: string }): Promise<FederatedLink[]> {
    const { bySub, bySid } = keysOf(provider, who)
    const key = bySid ?? bySub
    if (key === undefined) return []
    let all: Record<string, string>
    try { all = await this.#client.hgetall(key) } catch (err) { throw unavailable(err) }
    return Object.entries(all).map(([sid, userId]) => ({ sid, userId }))
  }
}

export class MemoryFederatedLinks implements FederatedLinks {
  readonly #links = new Map<string, { entries: Map<string, string>, expiresAt: number }>()
  readonly #clock: Clock
  constructor (clock: Clock) { this.#clock = clock }

  async add (provider: string, who: FederatedSubject, link: FederatedLink, ttlMs: number): Promise<void> {
    const now = this.#clock.now()
    for (const [k, v] of this.#links) if (v.expiresAt <= now) this.#links.delete(k)
    const { bySub, bySid } = keysOf(provider, who)
    for (const key of [bySub, bySid]) {
      if (key === undefined) continue
      const entry = this.#links.get(key) ?? { entries: new Map<string, string>(), expiresAt: 0 }
      entry.entries.set(link.sid, link.userId)
      entry.expiresAt = now + ttlMs
      this.#links.set(key, entry)
    }
  }

  async find (provider: string, who: { sub?: string, idpSid?: string }): Promise<FederatedLink[]> {
    const { bySub, bySid } = keysOf(provider, who)
    const key = bySid ?? bySub
    const entry = key === undefined ? undefined : this.#links.get(key)
    if (entry === undefined || entry.expiresAt <= this.#clock.now()) return []
    return [...entry.entries].map(([sid, userId]) => ({ sid, userId }))
  }
}
