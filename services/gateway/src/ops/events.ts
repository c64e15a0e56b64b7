/**
 * What happened, said once: audit log lines and metrics hang off these calls so the routes
 * do not repeat them. Lines carry ids (user, sid), never a token, password or secret.
 * Revocations are reported by the session service (sessions/service.ts), which also
 * broadcasts them to the edge: nothing here revokes anything.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { GatewayMetrics } from './metrics.js'

export type RefreshOutcome = 'rotated' | 'grace' | 'invalid'
export type Grant = 'login' | 'refresh_token' | 'client_credentials' | 'password' | 'token_exchange' | 'authorization_code'
/** Which brute-force limit refused: login (ip, username) or client authentication (client_ip, client_id). */
export type RateLimit = 'ip' | 'username' | 'client_ip' | 'client_id'
/**
 * Why sessions ended: user and admin actions, reuse (contract rule 2), a refresh that found
 * its user or client gone or disabled, an identity provider's back-channel logout, and a
 * reloaded users file that removed or disabled the user, changed the password or cut a
 * scope (`user_changed`).
 */
export type RevokeReason = 'logout' | 'logout_all' | 'session_delete' | 'reuse' | 'revoke' | 'user_gone' | 'client_gone' | 'admin' | 'cli' | 'backchannel_logout' | 'user_changed' | 'idp_refused' | 'code_replay'

/** Where a line goes: a Fastify request (its request id comes along) or a plain logger. */
export interface EventSource {
  readonly log: Pick<FastifyBaseLogger, 'info' | 'warn' | 'error'>
}

export interface GatewayEvents {
  loginSucceeded (req: EventSource, userId: string, sid: string): void
  loginFailed (req: EventSource, username: string): void
  refreshed (req: EventSource, outcome: RefreshOutcome, sid?: string): void
  tokenIssued (grant: Grant): void
  rateLimited (req: EventSource, limit: RateLimit): void
  /** The store has revoked the family; the session service broadcasts it. */
  reuseDetected (req: EventSource, sid: string, userId: string): void
  /** The store rolled a family forward to a token newer than it (writes lost in a failover); generations only, never the token. */
  rolledForward (req: EventSource, sid: string, from: number, to: number): void
  /**
   * A grace retry found a successor this gateway cannot derive (sessions/refresh-token.ts
   * `graceSuccessor`): gateways with different refresh-token keys. Answered 503; the sid only.
   */
  graceSuccessorUnderivable (req: EventSource, sid: string): void
  /** Audit line and metric for revoked sessions; the session service broadcasts them. */
  sessionsRevoked (req: EventSource, reason: RevokeReason, sids: readonly string[], userId: string): void
}

/** Usernames are logged for failed logins (they are not secrets) but bounded. */
const LOGGED_USERNAME_MAX_CHARS = 64

export function createGatewayEvents (metrics: GatewayMetrics): GatewayEvents {
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
      // contract rule 2: a warn line with the family and the user, never the token.
      metrics.refreshes.inc({ outcome: 'reuse' })
      metrics.reuseDetections.inc()
      metrics.revocations.inc({ reason: 'reuse' })
      req.log.warn({ event: 'refresh_reuse_detected', sid, user: userId }, 'refresh_reuse_detected: family revoked')
    },
    rolledForward (req, sid, from, to) {
      // Not an attack (only a gateway can make such a token) but lost writes: worth a warning.
      metrics.rolledForward.inc()
      req.log.warn({ event: 'refresh_rolled_forward', sid, generation_stored: from, generation_presented: to }, 'refresh token newer than its family in Redis (rotations lost in a failover): family rolled forward')
    },
    graceSuccessorUnderivable (req, sid) {
      // A misconfiguration, not an attack: only a gateway with another key can have made it.
      req.log.error({ event: 'refresh_grace_underivable', sid }, 'a refresh retried within grace found a successor made under another refresh-token key: do the gateways have different REFRESH_TOKEN_KEY values (or some none)? Answered 503, session kept')
    },
    sessionsRevoked (req, reason, sids, userId) {
      metrics.revocations.inc({ reason }, sids.length)
      req.log.info({ event: 'session_revoked', reason, sids, user: userId }, 'sessions revoked')
    }
  }
}
