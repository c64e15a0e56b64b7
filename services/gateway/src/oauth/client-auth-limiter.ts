/**
 * Throttling failed client authentications at the OAuth endpoints (a wrong secret, a bad
 * assertion), on the same failure counters as the login limits (auth/login-limiter.ts):
 * in Redis when the gateway has it, so counts hold across replicas.
 *
 * Only failures count: a service presenting good credentials hundreds of times a second is
 * never throttled. Two counters per window:
 * - per source IP: past the limit, every client authentication from that IP answers 429
 *   before any credential is checked (a guesser is cut off, and learns nothing more);
 * - per client id: past the limit, failures for that id answer 429 (with Retry-After, so a
 *   misconfigured client with a stale secret backs off) — while good credentials still
 *   pass, so that anyone who knows a client id cannot lock the real client out.
 * An IP learnt to be over its limit is remembered in this process until the window ends,
 * so the check before authentication needs no Redis round trip.
 */
import { createHash } from 'node:crypto'
import type { Clock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import type { AttemptCounter } from '../auth/login-limiter.js'
import type { GatewayEvents } from '../ops/events.js'
import type { ClientAuthThrottle } from './client-auth.js'

export interface ClientAuthLimits {
  readonly perClient: number
  readonly perIp: number
  readonly windowS: number
}

/** IPs remembered as blocked in one process at most (the oldest is forgotten first). */
export const BLOCKED_IPS_MAX = 10_000

function tooMany (retryAfterS: number): Error {
  return gatewayError('GW_RATE_LIMITED', {
    description: 'Too many failed client authentications; retry later.',
    headers: { 'Retry-After': String(Math.max(1, retryAfterS)) }
  })
}

export function createClientAuthThrottle (limits: ClientAuthLimits, counter: AttemptCounter, events: GatewayEvents, clock: Clock): ClientAuthThrottle {
  const windowMs = limits.windowS * 1000
  const blockedIps = new Map<string, number>()

  /** One more failure on `key`: whether it is now over `max`, and the seconds left in its window. */
  async function count (key: string, max: number): Promise<{ exceeded: boolean, ttlS: number }> {
    try {
      const r = await counter.add(key, windowMs)
      return { exceeded: r.count > max, ttlS: Math.ceil(r.ttlMs / 1000) }
    } catch (err) {
      if (isLatchkeyError(err)) throw err
      throw gatewayError('GW_STORE_UNAVAILABLE', { cause: err })
    }
  }

  return {
    before (req) {
      // Nothing blocked (the usual state): not even the peer address is looked up.
      if (blockedIps.size === 0) return
      const until = blockedIps.get(req.ip)
      if (until === undefined) return
      if (clock.now() < until) {
        events.rateLimited(req, 'client_ip')
        throw tooMany(Math.ceil((until - clock.now()) / 1000))
      }
      blockedIps.delete(req.ip)
    },
    async failed (req, clientId) {
      const ip = await count(`ca-ip:${req.ip}`, limits.perIp)
      if (ip.exceeded) {
        blockedIps.delete(req.ip)
        if (blockedIps.size >= BLOCKED_IPS_MAX) blockedIps.delete(blockedIps.keys().next().value as string)
        blockedIps.set(req.ip, clock.now() + ip.ttlS * 1000)
        events.rateLimited(req, 'client_ip')
        throw tooMany(ip.ttlS)
      }
      if (clientId === undefined) return
      // Hashed: ids are not secret, but a key per guessed id should not spell it out.
      const id = await count(`ca-id:${createHash('sha256').update(clientId).digest('base64url').slice(0, 22)}`, limits.perClient)
      if (id.exceeded) {
        events.rateLimited(req, 'client_id')
        throw tooMany(id.ttlS)
      }
    }
  }
}
