/**
 * The one way a session changes: sign-in starts a family, refresh rotates it, and every
 * revocation (logout, RFC 7009, session delete, logout-all, reuse, offboarding, admin,
 * CLI) goes through here, so none of them can forget the edge. Routes translate the
 * outcome into their own wire errors (cookie flow: 401 `invalid_grant`; token endpoint:
 * RFC 6749 §5.2 `invalid_grant`).
 *
 * Every revocation awaits the edge broadcast: a revocation is answered only once every
 * replica has been told (docs/contract.md "Proxy": refused at every replica within 1 s). When the
 * broadcast cannot be made durable it rejects with `GW_STORE_UNAVAILABLE` (503), never a
 * silent 204.
 *
 * Refresh re-checks the user and the client (docs/contract.md "Browser flow"): a family whose user or
 * client is gone or disabled is revoked everywhere on its next refresh, and the new access
 * token carries only the scopes the family, the user and the client all still hold.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Client } from '../identity/clients-file.js'
import { formatScope, parseScope } from '../identity/scope.js'
import type { User } from '../identity/user-directory.js'
import type { AccessTokenIssuer } from '../keys/access-token.js'
import type { GatewayEvents, RevokeReason } from '../ops/events.js'
import { accessTokenForFamily, type TokenBody } from '../auth/token-response.js'
import { gatewayError } from '../errors.js'
import type { Family, FamilyStore, IdpBinding, RevokedFamily, RotateResult } from './family-store.js'
import { parseRefreshToken, type ParsedRefreshToken } from './refresh-token.js'

/** The client id browser sessions are issued under (RFC 9068 `client_id`). */
export const BROWSER_CLIENT_ID = 'latchkey-browser'

/** Tells every replica's edge that these sessions are revoked; resolves once that is durable. */
export interface EdgeRevocation {
  publish (sids: readonly string[]): Promise<void>
}

/** Who asked, for the audit lines: a Fastify request, or the CLI's logger. */
export interface Caller {
  readonly log: Pick<FastifyBaseLogger, 'info' | 'warn' | 'error'>
}

/** The user a family belongs to, if that user may still hold sessions (undefined: gone or disabled). */
export interface SessionUsers {
  getById (id: string): User | undefined
}

/** The client a family belongs to, if it may still be used (undefined: removed or disabled). */
export interface SessionClients {
  get (id: string): Client | undefined
}

/** Where the session was seen from (kept with the family, shown in `/auth/sessions`). */
export interface Seen {
  readonly ip: string
  /** Raw header value (the store clamps it). */
  readonly userAgent: string | undefined
}

export interface IssuedSession {
  /** The refresh token to hand to the client (cookie or body). */
  readonly refreshToken: string
  readonly family: Family
  readonly body: TokenBody
}

export type RefreshResult =
  | ({ readonly ok: true } & IssuedSession)
  /** Missing, unknown, expired, revoked or reused token, or a user or client no longer allowed. */
  | { readonly ok: false }

export interface SessionRevocationsOptions {
  readonly store: FamilyStore
  readonly edge: EdgeRevocation
  readonly events: GatewayEvents
  /** Audit lines of revocations that have no request (CLI, reload). */
  readonly log: Caller['log']
}

/**
 * Users an upstream identity provider signed in (identity/oidc): not in the users file, so a
 * refresh asks whether their provider is still configured instead.
 */
export interface FederatedUsers {
  /** The configured provider `family` came from, or undefined (not federated, or provider removed). */
  providerOf (family: Family): string | undefined
  /**
   * A bound family (its provider's `idp_refresh`): whether the IdP still vouches for the
   * account. `fresh`: checked within the provider's interval (or the provider no longer
   * binds), nothing asked; `vouched`: the IdP said yes just now, keep `binding` (its rotated
   * token, the new check time); `refused`: the IdP said no. Throws `GW_OIDC_UNAVAILABLE`
   * when the IdP cannot answer.
   */
  checkAtIdp (family: Family, binding: IdpBinding): Promise<IdpCheck>
}

export type IdpCheck =
  | { readonly kind: 'fresh' }
  | { readonly kind: 'vouched', readonly binding: IdpBinding }
  | { readonly kind: 'refused' }

export interface SessionServiceOptions extends SessionRevocationsOptions {
  /** Federated sign-in (PROVIDERS_FILE); absent: every family's user must be in the users file. */
  readonly federated?: FederatedUsers
  readonly users: SessionUsers
  readonly clients: SessionClients
  readonly issuer: AccessTokenIssuer
  /** The audience of user access tokens. */
  readonly audience: string
}

/** A live session as the sessions APIs show it (`/auth/sessions`, admin API, CLI). */
export interface SessionView {
  readonly id: string
  readonly client_id: string
  readonly created_at: string
  readonly last_used_at: string
  readonly user_agent: string
  readonly ip: string
}

export function sessionView (f: Family): SessionView {
  return {
    id: f.sid,
    client_id: f.clientId,
    created_at: new Date(f.createdAt).toISOString(),
    last_used_at: new Date(f.lastUsedAt).toISOString(),
    user_agent: f.userAgent,
    ip: f.ip
  }
}

/** `scope` as a list; a stored scope is valid by construction, so an invalid one counts as none. */
function scopeList (scope: string | readonly string[]): readonly string[] {
  return typeof scope === 'string' ? (parseScope(scope) ?? []) : scope
}

/**
 * Listing and ending sessions: all that a process which only administers them needs (the
 * CLI holds no signing key and issues nothing).
 */
export class SessionRevocations {
  protected readonly store: FamilyStore
  protected readonly events: GatewayEvents
  readonly #edge: EdgeRevocation
  readonly #system: Caller

  constructor (options: SessionRevocationsOptions) {
    this.store = options.store
    this.events = options.events
    this.#edge = options.edge
    this.#system = { log: options.log }
  }

  /** Logout, RFC 7009: the family `raw` belongs to, if it is `clientId`'s. Null when nothing was revoked. */
  async revokeByToken (raw: string | undefined, options: { clientId: string, reason: 'logout' | 'revoke' }, caller: Caller = this.#system): Promise<RevokedFamily | null> {
    const presented = parseRefreshToken(raw)
    if (presented === null) return null
    const revoked = await this.store.revokeByToken(presented, { clientId: options.clientId })
    if (revoked !== null) await this.broadcast(caller, options.reason, [revoked.sid], revoked.userId)
    return revoked
  }

  /** One session of `userId`; false when it is not a live session of that user. */
  async revokeSession (userId: string, sid: string, reason: RevokeReason, caller: Caller = this.#system): Promise<boolean> {
    if (!(await this.store.revokeSession(userId, sid))) return false
    await this.broadcast(caller, reason, [sid], userId)
    return true
  }

  /** Every session of `userId`; returns the revoked sids. */
  async revokeAllForUser (userId: string, reason: RevokeReason, caller: Caller = this.#system): Promise<string[]> {
    const sids = await this.store.revokeAllForUser(userId)
    await this.broadcast(caller, reason, sids, userId)
    return sids
  }

  /** The live family whose current token is `presented` (introspection, RFC 7009 §2.1); read-only. */
  async lookup (presented: ParsedRefreshToken): Promise<Family | null> {
    return await this.store.lookup(presented)
  }

  /** The user's live sessions, newest first. */
  async list (userId: string): Promise<Family[]> {
    return this.store.listForUser(userId)
  }

  /** The audit line, then every replica's edge. */
  protected async broadcast (caller: Caller, reason: RevokeReason, sids: readonly string[], userId: string): Promise<void> {
    if (sids.length === 0) return
    this.events.sessionsRevoked(caller, reason, sids, userId)
    await this.publish(sids)
  }

  /** Every replica's edge; resolves once the broadcast is durable, rejects (503) when it cannot be. */
  protected async publish (sids: readonly string[]): Promise<void> {
    await this.#edge.publish(sids)
  }
}

/** Sign-in and refresh on top of the revocations: what the gateway's routes use. */
export class SessionService extends SessionRevocations {
  readonly #users: SessionUsers
  readonly #clients: SessionClients
  readonly #issuer: AccessTokenIssuer
  readonly #audience: string
  readonly #federated: FederatedUsers | undefined

  constructor (options: SessionServiceOptions) {
    super(options)
    this.#federated = options.federated
    this.#users = options.users
    this.#clients = options.clients
    this.#issuer = options.issuer
    this.#audience = options.audience
  }

  /** Start a family for a user who has just proved who they are (login, password grant, the password page's code). */
  async create (caller: Caller, input: { user: User, clientId: string, scope: string, seen: Seen, grant: 'login' | 'password' | 'authorization_code' }): Promise<IssuedSession> {
    const { token, family } = await this.store.create({
      userId: input.user.id, clientId: input.clientId, scope: input.scope, userAgent: input.seen.userAgent ?? '', ip: input.seen.ip
    })
    const body = accessTokenForFamily(this.#issuer, family, this.#audience)
    this.events.loginSucceeded(caller, input.user.id, family.sid)
    this.events.tokenIssued(input.grant)
    return { refreshToken: token.raw, family, body }
  }

  /**
   * Start a family for a user an upstream identity provider has just signed in; `scope` is
   * what the provider's mapping granted. Same family rules as any other.
   */
  async createFederated (caller: Caller, input: { userId: string, scope: string, provider: string, seen: Seen, idp?: IdpBinding, clientId?: string }): Promise<IssuedSession> {
    const { token, family } = await this.store.create({
      userId: input.userId,
      clientId: input.clientId ?? BROWSER_CLIENT_ID,
      scope: input.scope,
      userAgent: input.seen.userAgent ?? '',
      ip: input.seen.ip,
      provider: input.provider,
      ...(input.idp === undefined ? {} : { idp: input.idp })
    })
    const body = accessTokenForFamily(this.#issuer, family, this.#audience)
    this.events.loginSucceeded(caller, input.userId, family.sid)
    this.events.tokenIssued(input.clientId === undefined ? 'login' : 'authorization_code')
    return { refreshToken: token.raw, family, body }
  }

  /**
   * The refresh sequence, for the cookie flow and the `refresh_token` grant alike: parse,
   * rotate, branch on the outcome, re-check user and client, issue. `clientId` binds the
   * token to its client (RFC 6749 §6); `narrow` picks the access token's scope out of what
   * is still allowed (the grant's `scope` parameter) and may throw `invalid_scope`.
   */
  async refresh (caller: Caller, raw: string | undefined, options: { clientId: string, seen: Seen, narrow?: (allowed: readonly string[]) => string }): Promise<RefreshResult> {
    const shaped = parseRefreshToken(raw)
    if (shaped === null) {
      this.events.refreshed(caller, 'invalid')
      return { ok: false }
    }
    // Format 2 and its generation, if the mac verifies (refresh-token.ts); no I/O once the key is held.
    const presented = (await this.store.tokenKey()).recognise(shaped)
    const result = await this.store.rotate(presented, { ip: options.seen.ip, userAgent: options.seen.userAgent ?? '', clientId: options.clientId })
    if (result.kind === 'reuse') {
      // contract rule 2: the store has revoked the family; its access tokens die at the edge too.
      this.events.reuseDetected(caller, result.sid, result.userId)
      await this.publish([result.sid])
      return { ok: false }
    }
    if (result.kind === 'invalid') {
      this.events.refreshed(caller, 'invalid')
      return { ok: false }
    }
    if (result.kind === 'underivable') {
      // A grace retry whose successor another key made: no token the store does not hold
      // leaves here, and the family stays as it is (a retry at that gateway gets it).
      this.events.graceSuccessorUnderivable(caller, result.sid)
      throw gatewayError('GW_REFRESH_KEY_MISMATCH')
    }
    if (result.kind === 'rotated' && result.rolledForwardFrom !== undefined) {
      this.events.rolledForward(caller, result.family.sid, result.rolledForwardFrom, result.family.generation - 1)
    }
    const { family } = result
    // Federated: recorded as such (any client: the browser, or a native app through
    // authorization_code), or an older browser family whose user is not in the users file.
    if (this.#federated !== undefined && (family.provider !== undefined ||
        (family.clientId === BROWSER_CLIENT_ID && this.#users.getById(family.userId) === undefined))) {
      return await this.#refreshFederated(caller, result, options)
    }
    const user = this.#users.getById(family.userId)
    const client = family.clientId === BROWSER_CLIENT_ID ? undefined : this.#clients.get(family.clientId)
    if (user === undefined || (family.clientId !== BROWSER_CLIENT_ID && client === undefined)) {
      await this.#revokeFamily(caller, family, user === undefined ? 'user_gone' : 'client_gone')
      this.events.refreshed(caller, 'invalid', family.sid)
      return { ok: false }
    }
    return await this.#answer(caller, result, this.#currentScope(family, user, client), options)
  }

  /** Every check passed: the access token for `allowed` (narrowed by the grant's `scope`), and the rotation committed. */
  async #answer (caller: Caller, result: Extract<RotateResult, { kind: 'rotated' | 'grace' }>, allowed: readonly string[], options: { narrow?: (allowed: readonly string[]) => string }): Promise<RefreshResult> {
    const { family } = result
    const scope = options.narrow === undefined ? formatScope(allowed) : options.narrow(allowed)
    const body = accessTokenForFamily(this.#issuer, { ...family, scope }, this.#audience)
    this.events.refreshed(caller, result.kind, family.sid)
    this.events.tokenIssued('refresh_token')
    this.#answered(result)
    return { ok: true, refreshToken: result.token.raw, family, body }
  }

  /**
   * The refresh is answered 200 with `result.token`: commit its rotation (the store's
   * pending mark, REDIS_WAIT_REPLICAS). Only here, after every check that could still take
   * the rotation back (`undoRotation`), so that an undo lost in a failover leaves a
   * pending successor, whose predecessor the client's retry may still present, and never a
   * committed one, which would make that retry reuse. Not awaited; it never throws.
   */
  #answered (result: Extract<RotateResult, { kind: 'rotated' | 'grace' }>): void {
    this.store.commitRotation(result.token, result.family.generation).catch(() => {})
  }

  /**
   * A federated family: its user is not in the users file, its scope was mapped at sign-in.
   * Refused (and revoked) once its provider is no longer configured, or its client is gone;
   * a family bound to its IdP is refused (and revoked) once the IdP no longer vouches for
   * the account.
   */
  async #refreshFederated (caller: Caller, result: Extract<RotateResult, { kind: 'rotated' | 'grace' }>, options: { narrow?: (allowed: readonly string[]) => string }): Promise<RefreshResult> {
    const { family } = result
    const federated = this.#federated
    const client = family.clientId === BROWSER_CLIENT_ID ? undefined : this.#clients.get(family.clientId)
    if (federated?.providerOf(family) === undefined || (family.clientId !== BROWSER_CLIENT_ID && client === undefined)) {
      await this.#revokeFamily(caller, family, client === undefined && family.clientId !== BROWSER_CLIENT_ID ? 'client_gone' : 'user_gone')
      this.events.refreshed(caller, 'invalid', family.sid)
      return { ok: false }
    }
    // Only the call that rotated asks the IdP: a grace retry gets the successor that call
    // is answering with, and must not spend the IdP's token a second time.
    if (result.kind === 'rotated' && result.idp !== undefined && !(await this.#idpVouches(caller, result, federated))) {
      await this.#revokeFamily(caller, family, 'idp_refused')
      this.events.refreshed(caller, 'invalid', family.sid)
      return { ok: false }
    }
    return await this.#answer(caller, result, scopeList(family.scope).filter(s => client === undefined || client.scope.includes(s)), options)
  }

  /**
   * Ask the IdP when the family's last check is older than its provider's interval, and keep
   * its rotated token. When the IdP cannot answer, the rotation is taken back before the
   * 503 (GW_OIDC_UNAVAILABLE): the client retries with the token it holds, which then
   * rotates normally instead of counting as reuse, and the family lives on unrefreshed.
   */
  async #idpVouches (caller: Caller, result: Extract<RotateResult, { kind: 'rotated' }>, federated: FederatedUsers): Promise<boolean> {
    const binding = result.idp as IdpBinding
    try {
      const check = await federated.checkAtIdp(result.family, binding)
      if (check.kind === 'refused') return false
      if (check.kind === 'vouched') await this.store.bindIdp(result.family.sid, check.binding)
      return true
    } catch (err) {
      caller.log.warn({ event: 'idp_check_failed', sid: result.family.sid, provider: result.family.provider }, 'the identity provider could not be asked about a bound session; refresh refused with 503, session kept')
      await this.store.undoRotation(result.token, result.family.generation).catch(() => false)
      throw err
    }
  }

  /** Family ∩ user's current scopes (∩ the client's, for a client's family), in the family's order. */
  #currentScope (family: Family, user: User, client: Client | undefined): readonly string[] {
    const userScopes = new Set(scopeList(user.scope))
    const clientScopes = client === undefined ? undefined : new Set(scopeList(client.scope))
    return scopeList(family.scope).filter(s => userScopes.has(s) && (clientScopes?.has(s) ?? true))
  }

  async #revokeFamily (caller: Caller, family: Family, reason: RevokeReason): Promise<void> {
    await this.store.revokeSession(family.userId, family.sid)
    // Broadcast even if the store found nothing left to revoke: the access tokens already
    // issued to this family must stop at the edge either way.
    await this.broadcast(caller, reason, [family.sid], family.userId)
  }
}
