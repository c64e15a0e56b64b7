/**
 * Brute-force limits for password checks (POST /auth/login and the password grant): one
 * counter per client IP and one per username, in Redis when the gateway has Redis (so the
 * limit holds across replicas) and in process otherwise. Built on @fastify/rate-limit's
 * stores; every attempt counts, whatever its outcome, so a success cannot be used to reset
 * a counter, and each user's counter is its own.
 *
 * When Redis cannot answer, the limit cannot be checked: the attempt is refused with 503
 * rather than let through, so a Redis outage never opens an unthrottled password oracle.
 */
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import { createHash } from 'node:crypto'
import { isLatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import type { GatewayEvents } from '../ops/events.js'

export interface LoginLimits {
  readonly perUsername: number
  readonly perIp: number
  readonly windowS: number
}

export interface LoginLimiter {
  /** Counts one attempt; throws 429 (with Retry-After) when a limit is exceeded. */
  check (req: FastifyRequest, username: string): Promise<void>
}

type Check = (req: FastifyRequest) => Promise<{ isAllowed: boolean, isExceeded: boolean, ttlInSeconds: number }>

/** Register the store once on `app` and return the limiter. */
export async function createLoginLimiter (
  app: FastifyInstance,
  limits: LoginLimits,
  redis: Redis | Cluster | undefined,
  events: GatewayEvents
): Promise<LoginLimiter> {
  await app.register(rateLimit, {
    global: false,
    timeWindow: limits.windowS * 1000,
    skipOnError: false,
    nameSpace: 'rl:',
    ...(redis === undefined ? {} : { redis: redis as Redis })
  })
  const byIp = app.createRateLimit({ max: limits.perIp, keyGenerator: (req) => `ip:${req.ip}` }) as unknown as Check
  const usernameKey = new WeakMap<FastifyRequest, string>()
  const byUser = app.createRateLimit({
    max: limits.perUsername,
    // Hashed: usernames are not secret, but Redis key names should not collect them either.
    keyGenerator: (req) => `user:${usernameKey.get(req) ?? ''}`
  }) as unknown as Check

  async function run (req: FastifyRequest, check: Check, limit: 'ip' | 'username'): Promise<void> {
    let result
    try {
      result = await check(req)
    } catch (err) {
      if (isLatchkeyError(err)) throw err
      throw gatewayError('GW_STORE_UNAVAILABLE', { cause: err })
    }
    if (!result.isAllowed && result.isExceeded) {
      events.rateLimited(req, limit)
      throw gatewayError('GW_RATE_LIMITED', { headers: { 'Retry-After': String(Math.max(1, result.ttlInSeconds)) } })
    }
  }

  return {
    async check (req, username) {
      usernameKey.set(req, createHash('sha256').update(username).digest('base64url').slice(0, 22))
      await run(req, byIp, 'ip')
      await run(req, byUser, 'username')
    }
  }
}
