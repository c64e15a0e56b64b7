/**
 * Throttling failed client authentications at the OAuth endpoints (a wrong secret, a bad
 * assertion), on @fastify/rate-limit's store as the login limits (auth/login-limiter.ts):
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
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { createHash } from 'node:crypto'
import type { Clock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import type { GatewayEvents } from '../ops/events.js'
import type { ClientAuthThrottle } from './client-auth.js'

export interface ClientAuthLimits {
  readonly perClient: number
  readonly perIp: number
  readonly windowS: number
}

/** IPs remembered as blocked in one process at most (the oldest is forgotten first). */
export const BLOCKED_IPS_MAX = 10_000

type Check = (req: FastifyRequest) => Promise<{ isAllowed: boolean, isExceeded: boolean, ttlInSeconds: number }>

function tooMany (retryAfterS: number): Error {
  return gatewayError('GW_RATE_LIMITED', {
    description: 'Too many failed client authentications; retry later.',
    headers: { 'Retry-After': String(Math.max(1, retryAfterS)) }
  })
}

/** `app` must have @fastify/rate-limit registered (createLoginLimiter does). */
export function createClientAuthThrottle (app: FastifyInstance, limits: ClientAuthLimits, events: GatewayEvents, clock: Clock): ClientAuthThrottle {
  const clientKey = new WeakMap<FastifyRequest, string>()
  const byIp = app.createRateLimit({ max: limits.perIp, timeWindow: limits.windowS * 1000, keyGenerator: (req) => `ca-ip:${req.ip}` }) as unknown as Check
  // Hashed: ids are not secret, but a key per guessed id should not spell it out.
  const byClient = app.createRateLimit({ max: limits.perClient, timeWindow: limits.windowS * 1000, keyGenerator: (req) => `ca-id:${clientKey.get(req) ?? ''}` }) as unknown as Check
  const blockedIps = new Map<string, number>()

  async function count (req: FastifyRequest, check: Check): Promise<{ exceeded: boolean, ttlS: number }> {
    try {
      const r = await check(req)
      return { exceeded: !r.isAllowed && r.isExceeded, ttlS: r.ttlInSeconds }
    } catch (err) {
      if (isLatchkeyError(err)) throw err
      throw gatewayError('GW_STORE_UNAVAILABLE', { cause: err })
    }
  }

  return {
    async before (req) {
      const until = blockedIps.get(req.ip)
      if (until === undefined) return
      if (clock.now() < until) {
        events.rateLimited(req, 'client_ip')
        throw tooMany(Math.ceil((until - clock.now()) / 1000))
      }
      blockedIps.delete(req.ip)
    },
    async failed (req, clientId) {
      const ip = await count(req, byIp)
      if (ip.exceeded) {
        blockedIps.delete(req.ip)
        if (blockedIps.size >= BLOCKED_IPS_MAX) blockedIps.delete(blockedIps.keys().next().value as string)
        blockedIps.set(req.ip, clock.now() + ip.ttlS * 1000)
        events.rateLimited(req, 'client_ip')
        throw tooMany(ip.ttlS)
      }
      if (clientId === undefined) return
      clientKey.set(req, createHash('sha256').update(clientId).digest('base64url').slice(0, 22))
      const id = await count(req, byClient)
      if (id.exceeded) {
        events.rateLimited(req, 'client_id')
        throw tooMany(id.ttlS)
      }
    }
  }
}
