/**
 * Native and first-party apps without the password grant (RFC 8252, RFC 9700 §2.4): a
 * public client sends the person's browser to `GET /oauth/authorize` (authorization code
 * + PKCE S256), latchkey hands the sign-in to an upstream identity provider (the same
 * relying party, state and claim mapping as the browser flow, routes.ts), and the callback
 * redirects back to the app's registered redirect URI with a one-time code (or, for a
 * person in USERS_FILE, the gateway's own password page does: password-page.ts). The app
 * redeems the code at `/oauth/token` (`grant_type=authorization_code`) with its
 * `code_verifier` and gets a latchkey access token and a refresh token: an ordinary
 * family of that client (rotation, reuse detection, edge revocation, the IdP binding).
 *
 * The code is 256 random bits, kept server-side (the sign-in state store: every replica
 * sees it) for AUTHORIZATION_CODE_TTL_S and taken exactly once. A code presented again
 * after it was redeemed revokes the family it started (RFC 6749 §4.1.2: "SHOULD revoke
 * … all tokens previously issued based on that authorization code"; RFC 9700 §4.5).
 */
import { createHash, randomBytes } from 'node:crypto'
import { sameString } from '#shared/same-string.js'
import type { FastifyRequest } from 'fastify'
import { gatewayError } from '../../errors.js'
import type { Client, ClientDirectory } from '../clients-file.js'
import { redirectUriMatches } from '../clients-file.js'
import { formatScope, parseScope } from '../scope.js'
import type { IdpBinding } from '../../sessions/family-store.js'
import type { IssuedSession, SessionService, SessionUsers } from '../../sessions/service.js'
import type { TokenBody } from '../../auth/token-response.js'
import { invalidClient } from '../../oauth/client-auth.js'
import { param, type FormParams } from '../../oauth/form-body.js'
import type { FederatedLinks, FederatedSubject } from './federated-links.js'
import type { SignInStateStore } from './sign-in-state.js'

/** RFC 6749 §4.1.2 recommends at most 10 minutes; an app redeems its code at once. */
export const AUTHORIZATION_CODE_TTL_S = 60
/** After redemption a code is remembered this long, so a replay can revoke what it started. */
export const REDEEMED_CODE_TTL_S = 600
const CODE_BYTES = 32
/** RFC 7636 §4.1: 43..128 unreserved characters. */
const CODE_VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/
/** RFC 7636 §4.2: BASE64URL(SHA-256) of a verifier. */
const S256_CHALLENGE = /^[A-Za-z0-9_-]{43}$/
const MAX_STATE_CHARS = 1024

/** A checked authorization request, kept with the pending sign-in until the IdP comes back. */
export interface AuthorizeRequest {
  readonly clientId: string
  readonly redirectUri: string
  readonly codeChallenge: string
  /** Space-separated; undefined: everything the client and the user may have. */
  readonly scope: string | undefined
  readonly state: string | undefined
}

/** Who signed in: through a provider (federated), or with a password (a USERS_FILE user). */
export type SignedInPerson =
  | { readonly userId: string, readonly userScope: string, readonly provider: string, readonly subject: FederatedSubject, readonly idp?: IdpBinding }
  | { readonly userId: string, readonly userScope: string, readonly provider?: undefined }

/** What a code stands for until it is redeemed. */
type CodeGrant = { readonly request: AuthorizeRequest, readonly scope: string } & SignedInPerson

/** The app's redirect URI with the answer's parameters (and RFC 9207 `iss`). */
export function redirectWith (redirectUri: string, issuer: string, params: Readonly<Record<string, string | undefined>>): string {
  const url = new URL(redirectUri)
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v)
  url.searchParams.set('iss', issuer)
  return url.href
}

/** Thrown for a request that can be refused at the app's redirect URI (RFC 6749 §4.1.2.1). */
export class AuthorizeRefusal extends Error {
  constructor (readonly error: string, readonly description: string, readonly request: Pick<AuthorizeRequest, 'redirectUri' | 'state'>) {
    super(description)
  }
}

function sha256base64url (text: string): string {
  return createHash('sha256').update(text, 'ascii').digest('base64url')
}

export class NativeSignIn {
  readonly #clients: ClientDirectory
  readonly #state: SignInStateStore
  readonly #sessions: SessionService
  readonly #links: FederatedLinks
  readonly #issuer: string
  readonly #linkTtlMs: number
  readonly #users: SessionUsers

  constructor (options: { clients: ClientDirectory, users: SessionUsers, state: SignInStateStore, sessions: SessionService, links: FederatedLinks, issuer: string, linkTtlMs: number }) {
    this.#clients = options.clients
    this.#users = options.users
    this.#state = options.state
    this.#sessions = options.sessions
    this.#links = options.links
    this.#issuer = options.issuer
    this.#linkTtlMs = options.linkTtlMs
  }

  /**
   * Check `GET /oauth/authorize`'s query. An unknown client or an unregistered redirect URI
   * throws `GW_AUTHORIZE_BAD_CLIENT` (never redirected to); anything else wrong throws an
   * AuthorizeRefusal to send back to the app.
   */
  check (query: URLSearchParams): AuthorizeRequest {
    const one = (name: string): string | undefined => {
      const all = query.getAll(name)
      if (all.length > 1) throw gatewayError('GW_AUTHORIZE_BAD_CLIENT', { description: `Parameter ${name} is repeated.` })
      return all[0]
    }
    const client = this.#clients.get(one('client_id') ?? '')
    const redirectUri = one('redirect_uri') ?? ''
    // RFC 9700 §2.1: exact matching (loopback: any port); a redirect_uri is always required here.
    const registered = client?.redirectUris?.some(r => redirectUriMatches(r, redirectUri)) === true
    if (client === undefined || !client.grants.includes('authorization_code') || !registered) throw gatewayError('GW_AUTHORIZE_BAD_CLIENT')
    const state = one('state')
    const back = { redirectUri, state: state !== undefined && state.length <= MAX_STATE_CHARS ? state : undefined }
    if (state !== undefined && state.length > MAX_STATE_CHARS) throw new AuthorizeRefusal('invalid_request', 'state is too long.', back)
    if (one('response_type') !== 'code') throw new AuthorizeRefusal('unsupported_response_type', 'Only response_type=code is supported.', back)
    const challenge = one('code_challenge')
    // RFC 9700 §2.1.1 and RFC 7636 §4.4.1: PKCE is required, and only S256 (plain would show the verifier).
    if (challenge === undefined || one('code_challenge_method') !== 'S256' || !S256_CHALLENGE.test(challenge)) {
      throw new AuthorizeRefusal('invalid_request', 'PKCE is required: code_challenge with code_challenge_method=S256.', back)
    }
    const scope = one('scope')
    if (scope !== undefined) {
      const tokens = parseScope(scope)
      if (tokens === null || tokens.length === 0 || !tokens.every(s => client.scope.includes(s))) {
        throw new AuthorizeRefusal('invalid_scope', 'The requested scope is invalid or exceeds what the client may ask for.', back)
      }
    }
    return { clientId: client.id, redirectUri, codeChallenge: challenge, scope, ...{ state: back.state } }
  }

  /**
   * The person is signed in (the provider's mapping gave `userScope`): a one-time code, and
   * where to send the browser. The scope is what the request asked (or all) ∩ the client's
   * ∩ the mapped user's.
   */
  async issue (request: AuthorizeRequest, signedIn: SignedInPerson): Promise<string> {
    const client = this.#clients.get(request.clientId)
    // Removed or disabled while the person was at the IdP.
    if (client === undefined) throw gatewayError('GW_AUTHORIZE_BAD_CLIENT')
    const user = new Set(parseScope(signedIn.userScope) ?? [])
    const wanted = request.scope === undefined ? client.scope : (parseScope(request.scope) ?? [])
    const scope = formatScope(wanted.filter(s => user.has(s) && client.scope.includes(s)))
    const code = randomBytes(CODE_BYTES).toString('base64url')
    const grant: CodeGrant = { ...signedIn, request, scope }
    await this.#state.put(`code:${code}`, JSON.stringify(grant), AUTHORIZATION_CODE_TTL_S * 1000)
    return redirectWith(request.redirectUri, this.#issuer, { code, state: request.state })
  }

  /**
   * `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.6): the code is taken
   * first, so whatever is wrong with this request it cannot be tried again; then client,
   * redirect_uri and code_verifier must all match. Every refusal is `invalid_grant`.
   */
  async redeem (req: FastifyRequest, form: FormParams, client: Client | null): Promise<TokenBody> {
    if (client === null) throw invalidClient()
    if (!client.grants.includes('authorization_code')) throw gatewayError('GW_UNAUTHORIZED_CLIENT')
    const code = param(form, 'code')
    if (code === undefined) throw gatewayError('GW_OAUTH_INVALID_REQUEST', { description: 'Missing parameter code.' })
    const stored = await this.#state.take(`code:${code}`)
    if (stored === null) {
      await this.#replayed(req, code)
      throw gatewayError('GW_OAUTH_INVALID_GRANT')
    }
    const grant = JSON.parse(stored) as CodeGrant
    const verifier = param(form, 'code_verifier') ?? ''
    const ok = grant.request.clientId === client.id &&
      param(form, 'redirect_uri') === grant.request.redirectUri &&
      CODE_VERIFIER.test(verifier) && sameString(sha256base64url(verifier), grant.request.codeChallenge)
    if (!ok) throw gatewayError('GW_OAUTH_INVALID_GRANT')
    const issued = await this.#start(req, grant, client)
    await this.#state.put(`redeemed:${code}`, JSON.stringify({ userId: grant.userId, sid: issued.family.sid }), REDEEMED_CODE_TTL_S * 1000)
    return { ...issued.body, refresh_token: issued.refreshToken }
  }

  /** The family: federated (and linked for back-channel logout), or a USERS_FILE user's. */
  async #start (req: FastifyRequest, grant: CodeGrant, client: Client): Promise<IssuedSession> {
    const seen = { ip: req.ip, userAgent: req.headers['user-agent'] }
    if (grant.provider === undefined) {
      // Removed or disabled in the 60 s since the password was checked.
      const user = this.#users.getById(grant.userId)
      if (user === undefined) throw gatewayError('GW_OAUTH_INVALID_GRANT')
      return await this.#sessions.create(req, { user, clientId: client.id, scope: grant.scope, seen, grant: 'authorization_code' })
    }
    const issued = await this.#sessions.createFederated(req, {
      userId: grant.userId,
      scope: grant.scope,
      provider: grant.provider,
      clientId: client.id,
      seen,
      ...(grant.idp === undefined ? {} : { idp: grant.idp })
    })
    await this.#links.add(grant.provider, grant.subject, { userId: grant.userId, sid: issued.family.sid }, this.#linkTtlMs)
    return issued
  }

  /** A redeemed code presented again: someone else holds it; end what it started. */
  async #replayed (req: FastifyRequest, code: string): Promise<void> {
    const redeemed = await this.#state.take(`redeemed:${code}`)
    if (redeemed === null) return
    const { userId, sid } = JSON.parse(redeemed) as { userId: string, sid: string }
    await this.#sessions.revokeSession(userId, sid, 'code_replay', req)
  }
}
