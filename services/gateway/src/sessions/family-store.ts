/**
 * The refresh-token family store: the contract both `RedisFamilyStore` and
 * `MemoryFamilyStore` implement and `test/family-store.contract.ts` checks.
 *
 * docs/contract.md "Refresh-token families":
 *  1. `create` starts a family; `rotate` kills the presented token and issues one successor.
 *  2. A rotated-out token presented after the grace window revokes the family (→ `reuse`).
 *  3. The immediate predecessor within `graceMs` of its rotation gets the *current* successor (→ `grace`).
 *  4. Concurrent rotations of one token: exactly one rotation, never two live branches.
 *  5. Idle expiry slides on each rotation; the absolute expiry counts from `create` and never moves.
 *     Every stored key carries a TTL.
 *  6. Multi-key operations touch one hash slot.
 *  7. Store trouble throws `GW_STORE_UNAVAILABLE`; it is never reported as `invalid` or `reuse`;
 *     a token a gateway made (authenticated generation) ahead of the family, whose writes were
 *     lost in a failover, rolls the family forward instead of being reuse.
 *
 * Tokens reach the store already parsed (`parseRefreshToken`): the store sees the hash
 * and the sid, and the raw string only to derive a successor in memory. To rotate, the
 * token is also recognised under the store's `tokenKey()` (refresh-token.ts): the store
 * trusts the generation it carries, which only `RefreshTokenKey` sets, once its mac verified.
 */
import type { ParsedRefreshToken, RefreshTokenKey } from './refresh-token.js'

/** Longest user agent kept per session (what the sessions list shows); the rest is cut. */
export const USER_AGENT_MAX_CHARS = 200
/** Longest IP text kept (an IPv6 address with a zone id fits). */
export const IP_MAX_CHARS = 64
/** Longest identity-provider name kept. */
export const PROVIDER_MAX_CHARS = 64

/** Trim free text from the request to what a family keeps, without splitting a surrogate pair. */
export function clampText (value: string, max: number): string {
  if (value.length <= max) return value
  return value.slice(0, max).replace(/[\uD800-\uDBFF]$/, '')
}

export interface FamilyLimits {
  /** Idle lifetime: a family not refreshed for this long dies (slides on every rotation). */
  readonly idleTtlMs: number
  /** Absolute lifetime from `create`; never extended. */
  readonly maxTtlMs: number
  /** How long after a rotation its predecessor still gets the current successor; 0 disables. */
  readonly graceMs: number
}

export interface NewFamily {
  readonly userId: string
  /** The OAuth client the family belongs to (the browser client for cookie logins). */
  readonly clientId: string
  readonly scope: string
  readonly userAgent: string
  readonly ip: string
  /** The upstream identity provider that signed the user in; absent for password logins. */
  readonly provider?: string
  /** Bind the family to the IdP's refresh token (identity/oidc: a provider's `idp_refresh`). */
  readonly idp?: IdpBinding
}

/**
 * A federated family's bond to its identity provider: the IdP's refresh token, sealed by
 * the caller (the store never sees it in clear), and when the IdP last vouched for the
 * account (ms). Never part of `Family`, so no listing or lookup carries it.
 */
export interface IdpBinding {
  readonly sealed: string
  readonly checkedAt: number
}

export interface Family {
  /** Session id: `sid` claim, `/auth/sessions` id. */
  readonly sid: string
  readonly userId: string
  readonly clientId: string
  readonly scope: string
  readonly userAgent: string
  readonly ip: string
  /** Rotations so far (0 right after `create`). */
  readonly generation: number
  readonly createdAt: number
  readonly lastUsedAt: number
  /** When the family dies if not refreshed (ms). */
  readonly idleExpiresAt: number
  /** When the family dies whatever happens (ms). */
  readonly absoluteExpiresAt: number
  /** The upstream identity provider that signed the user in; absent for password logins. */
  readonly provider?: string
}

export type RotateResult =
  /**
   * This call rotated: `token` is the new current token; `idp` the family's IdP binding, if any.
   * `rolledForwardFrom`: the presented token was ahead of the family (writes lost in a failover,
   * see RedisFamilyStore.rotate), which was at this generation and now follows the token.
   */
  | { readonly kind: 'rotated', readonly token: ParsedRefreshToken, readonly family: Family, readonly idp?: IdpBinding, readonly rolledForwardFrom?: number }
  /** The predecessor within grace: `token` is the already-issued current successor. */
  | { readonly kind: 'grace', readonly token: ParsedRefreshToken, readonly family: Family, readonly idp?: IdpBinding }
  /**
   * The predecessor within grace, but the successor the family holds is neither token this
   * gateway can derive from it (`RefreshTokenKey.graceSuccessor`: a gateway with another
   * refresh-token key made it). Nothing was written and nothing may be handed out.
   */
  | { readonly kind: 'underivable', readonly sid: string }
  /** A rotated-out token after grace (or an older one): the family is now revoked. */
  | { readonly kind: 'reuse', readonly sid: string, readonly userId: string }
  /** Unknown, expired or already revoked family: nothing was written. */
  | { readonly kind: 'invalid' }

export interface RevokedFamily {
  readonly sid: string
  readonly userId: string
}

export interface FamilyStore {
  /** Start a family; returns its first token. */
  create (input: NewFamily): Promise<{ token: ParsedRefreshToken, family: Family }>
  /**
   * Rotate `presented` (rules 1–5), in one atomic step. `ip`/`userAgent` update the session's
   * last-seen data. With `clientId`, a family issued to another client is `invalid` and
   * untouched (RFC 6749 §6: a refresh token is bound to its client).
   */
  rotate (presented: ParsedRefreshToken, seen: { ip: string, userAgent: string, clientId?: string }): Promise<RotateResult>
  /**
   * The refresh-token key this store mints under, to recognise a presented token before
   * `rotate` (REFRESH_TOKEN_KEY, or the store's own: see each store). A token recognised as
   * format 1 (`parseRefreshToken` alone, or another key) is rotated as the first release
   * rotates every token: a format-1 successor, never rolled forward.
   */
  tokenKey (): Promise<RefreshTokenKey>
  /**
   * Revoke the family `presented` belongs to (logout, RFC 7009). Null when there was nothing
   * to revoke, or (with `clientId`) when the family belongs to another client.
   */
  revokeByToken (presented: ParsedRefreshToken, options?: { clientId?: string }): Promise<RevokedFamily | null>
  /**
   * The live family whose *current* token is `presented` (RFC 7662 introspection), else
   * null: unknown, expired, revoked, or a rotated-out token (even inside the grace window,
   * where rotating it would hand back the successor, it is no longer the live token).
   * Reads only: never rotates, revokes or extends anything.
   */
  lookup (presented: ParsedRefreshToken): Promise<Family | null>
  /**
   * Take back the rotation that made `successor` the current token (generation
   * `generation`), if it still is: the presented token is current again. For a rotation
   * whose answer could not be given (an IdP check that could not be made): the client's
   * retry with the token it holds then rotates normally instead of counting as reuse.
   */
  undoRotation (successor: ParsedRefreshToken, generation: number): Promise<boolean>
  /**
   * The rotation that made `successor` current (generation `generation`) is answered 200:
   * with pending rotations (REDIS_WAIT_REPLICAS), its predecessor keeps only the grace
   * window from now on; until then it gets `successor` back at any time (rule 3 widened
   * only for a successor nobody was given). Never throws; a lost commit is harmless.
   */
  commitRotation (successor: ParsedRefreshToken, generation: number): Promise<void>
  /** Replace a live family's IdP binding (the IdP's rotated refresh token, a new check time). */
  bindIdp (sid: string, binding: IdpBinding): Promise<boolean>
  /** Revoke one family, only if it belongs to `userId` (DELETE /auth/sessions/:id). */
  revokeSession (userId: string, sid: string): Promise<boolean>
  /** Revoke every live family of the user; returns the revoked sids. */
  revokeAllForUser (userId: string): Promise<string[]>
  /** The user's live families, newest first. */
  listForUser (userId: string): Promise<Family[]>
  /** Throws when the store cannot answer (readiness). */
  ping (): Promise<void>
  close (): Promise<void>
}

export function validateLimits (limits: FamilyLimits): void {
  const { idleTtlMs, maxTtlMs, graceMs } = limits
  if (!Number.isSafeInteger(idleTtlMs) || idleTtlMs <= 0) throw new RangeError('idleTtlMs must be a positive integer')
  if (!Number.isSafeInteger(maxTtlMs) || maxTtlMs <= 0) throw new RangeError('maxTtlMs must be a positive integer')
  if (!Number.isSafeInteger(graceMs) || graceMs < 0) throw new RangeError('graceMs must be a non-negative integer')
}
