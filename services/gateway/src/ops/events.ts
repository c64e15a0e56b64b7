/**
 * What happened, said once: audit log lines and the revocation fan-out hang off these
 * calls so the routes do not repeat them. Lines carry ids (user, sid), never a token,
 * password or secret.
 */
import type { FastifyRequest } from 'fastify'
import type { GatewayMetrics } from './metrics.js'

export type RefreshOutcome = 'rotated' | 'grace' | 'invalid'
export type Grant = 'login' | 'refresh_token' | 'client_credentials' | 'password'
/** `user_changed`: a reloaded users file removed or disabled the user, changed the password or cut a scope. */
export type RevokeReason = 'logout' | 'logout_all' | 'session_delete' | 'reuse' | 'revoke' | 'user_changed'

/** Called with the sids of families that were revoked (edge revocation subscribes here). */
export type RevocationListener = (sids: readonly string[]) => void

export interface GatewayEvents {
  loginSucceeded (req: FastifyRequest, userId: string, sid: string): void
  loginFailed (req: FastifyRequest, username: string): void
  refreshed (req: FastifyRequest, outcome: RefreshOutcome, sid?: string): void
  tokenIssued (grant: Grant): void
  rateLimited (req: FastifyRequest, limit: 'ip' | 'username'): void
  reuseDetected (req: FastifyRequest, sid: string, userId: string): void
  /** `req` may be anything with a logger: a config reload revokes outside any request. */
  revoked (req: Pick<FastifyRequest, 'log'>, reason: RevokeReason, sids: readonly string[], userId: string): void
  onRevoked (listener: RevocationListener): void
}

/** Usernames are logged for failed logins (they are not secrets) but bounded. */
const LOGGED_USERNAME_MAX_CHARS = 64

export function createGatewayEvents (metrics: GatewayMetrics): GatewayEvents {
  const listeners: RevocationListener[] = []
  const fanOut = (sids: readonly string[]): void => {
    if (sids.length === 0) return
    for (const l of listeners) l(sids)
  }
  return {
    loginSucceeded (req, userId, sid) {
      metrics.logins.inc({ outcome: 'success' })
      req.log.info({ event: 'login_succeeded', user: userId, sid }, 'login succeeded')
    },
    loginFailed (req, username) {
      metrics.logins.inc({ outcome: 'failure' })
      req.log.info({ event: 'login_failed', username: username.slice(0, LOGGED_USERNAME_MAX_CHARS) }, 'login failed')
    },
    refreshed (req, outcome, sid) {
      metrics.refreshes.inc({ outcome })
      req.log.info({ event: 'refresh', outcome, sid }, 'refresh')
    },
    tokenIssued (grant) {
      metrics.tokensIssued.inc({ grant })
    },
    rateLimited (req, limit) {
      metrics.rateLimited.inc({ limit })
      req.log.warn({ event: 'rate_limited', limit }, 'too many attempts')
    },
    reuseDetected (req, sid, userId) {
      // SPEC rule 2: a warn line with the family and the user, never the token.
      metrics.refreshes.inc({ outcome: 'reuse' })
      metrics.reuseDetections.inc()
      metrics.revocations.inc({ reason: 'reuse' })
      req.log.warn({ event: 'refresh_reuse_detected', sid, user: userId }, 'refresh_reuse_detected: family revoked')
      fanOut([sid])
    },
    revoked (req, reason, sids, userId) {
      metrics.revocations.inc({ reason }, sids.length)
      req.log.info({ event: 'session_revoked', reason, sids, user: userId }, 'sessions revoked')
      fanOut(sids)
    },
    onRevoked (listener) {
      listeners.push(listener)
    }
  }
}
