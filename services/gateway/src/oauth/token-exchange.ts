/**
 * OAuth 2.0 Token Exchange (RFC 8693) at the token endpoint, for delegation: a client that
 * received a user's access token presents it as `subject_token` and gets a token for
 * another audience the client's entry allows (`exchange.audiences`), with the same or a
 * narrower scope. The new token keeps the user's `sub` and `sid` (so logout and offboarding
 * still bite at the edge of every replica), names the client in `act` (§4.1; the subject
 * token's own `act` nests inside, so a chain stays visible), and expires no later than the
 * subject token.
 *
 * The subject token is checked by the shared AccessTokenVerifier over the gateway's own
 * keys with the edge-revocation set, exactly as the proxy checks tokens; its audience must
 * be one of the client's own audiences (the client must be a party the token was meant
 * for, not any holder of it). Only user tokens (with a session) are exchanged.
 *
 * Errors (§2.2.2, RFC 6749 §5.2): a bad or unusable subject token or token type →
 * invalid_request; a scope beyond the subject token's → invalid_scope; an audience the
 * policy does not list → invalid_target; a client without an exchange policy →
 * unauthorized_client.
 */
import type { Clock } from '#shared/clock.js'
import { type AccessToken, AccessTokenVerifier } from '#shared/access-token-verifier.js'
import { isLatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import type { Client } from '../identity/clients-file.js'
import type { AccessTokenIssuer, ActorClaim } from '../keys/access-token.js'
import type { SigningKeys } from '../keys/signing-keys.js'
import type { RevokedSids } from '../auth/bearer.js'
import { signingKeyResolver } from '../keys/verification-keys.js'
import type { TokenBody } from '../auth/token-response.js'
import { param, requireParam, type FormParams } from './form-body.js'
import { narrowScope, pickAudience } from './token-scope.js'

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange'
/** RFC 8693 §3: the only token type exchanged (and issued) here. */
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
/** A chain of delegations longer than this is refused (each hop nests one `act`). */
export const MAX_ACTOR_DEPTH = 5

export interface TokenExchangeOptions {
  readonly keys: SigningKeys
  readonly issuer: string
  readonly accessTokens: AccessTokenIssuer
  readonly revoked: RevokedSids
  readonly clock: Clock
}

/** §2.2.1: `issued_token_type` is required in an exchange's response. */
export interface ExchangedTokenBody extends TokenBody {
  issued_token_type: string
}

function invalidRequest (description: string): Error {
  return gatewayError('GW_OAUTH_INVALID_REQUEST', { description })
}

function actorOf (claims: Readonly<Record<string, unknown>>): ActorClaim | undefined {
  const act = claims.act
  if (act === undefined) return undefined
  if (typeof act !== 'object' || act === null || typeof (act as { sub?: unknown }).sub !== 'string') throw invalidRequest('The subject token has a malformed act claim.')
  return act as ActorClaim
}

function depth (act: ActorClaim | undefined): number {
  let n = 0
  for (let a = act; a !== undefined; a = a.act) n++
  return n
}

export class TokenExchange {
  readonly #options: TokenExchangeOptions
  /** One verifier per client entry (its audiences): a reloaded entry gets a new one. */
  readonly #verifiers = new WeakMap<Client, AccessTokenVerifier>()

  constructor (options: TokenExchangeOptions) {
    this.#options = options
  }

  async exchange (form: FormParams, client: Client): Promise<ExchangedTokenBody> {
    const allowed = client.exchangeAudiences
    if (allowed === undefined) throw gatewayError('GW_UNAUTHORIZED_CLIENT')
    const subjectToken = requireParam(form, 'subject_token')
    if (requireParam(form, 'subject_token_type') !== ACCESS_TOKEN_TYPE) throw invalidRequest('Only access tokens can be exchanged.')
    if (param(form, 'actor_token') !== undefined || param(form, 'actor_token_type') !== undefined) {
      throw invalidRequest('actor_token is not supported: the authenticated client is the actor.')
    }
    const requestedType = param(form, 'requested_token_type')
    if (requestedType !== undefined && requestedType !== ACCESS_TOKEN_TYPE) throw invalidRequest('Only access tokens can be issued.')

    const subject = await this.#verify(subjectToken, client)
    if (subject.sid === undefined) throw invalidRequest('Only a user\'s token can be exchanged.')
    const prior = actorOf(subject.claims)
    if (depth(prior) >= MAX_ACTOR_DEPTH) throw invalidRequest('The delegation chain is too long.')
    const nowS = Math.floor(this.#options.clock.now() / 1000)
    if (subject.exp <= nowS) throw invalidRequest('The subject token is expired.')

    const aud = pickAudience(form, allowed)
    const scope = narrowScope(param(form, 'scope'), [...subject.scopes])
    const act: ActorClaim = prior === undefined ? { sub: client.id } : { sub: client.id, act: prior }
    const { token, expiresIn } = this.#options.accessTokens.issue({
      sub: subject.sub, aud, client_id: client.id, scope, sid: subject.sid, act, notAfter: subject.exp
    })
    return { access_token: token, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: expiresIn, scope }
  }

  async #verify (token: string, client: Client): Promise<AccessToken> {
    let verifier = this.#verifiers.get(client)
    if (verifier === undefined) {
      const { revoked } = this.#options
      verifier = new AccessTokenVerifier({
        keys: signingKeyResolver(this.#options.keys),
        issuer: this.#options.issuer,
        audience: client.audiences,
        clock: this.#options.clock,
        isRevoked: (t) => t.sid !== undefined && revoked.has(t.sid)
      })
      this.#verifiers.set(client, verifier)
    }
    try {
      return await verifier.verify(token)
    } catch (err) {
      if (isLatchkeyError(err) && err.statusCode < 500) throw invalidRequest('The subject token is invalid, expired, revoked, or not meant for this client.')
      throw err
    }
  }
}
