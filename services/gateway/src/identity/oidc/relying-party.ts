/**
 * One upstream OpenID provider seen from latchkey, the relying party, through openid-client:
 * discovery (OIDC Discovery 1.0) done once and cached; the authorization request with PKCE
 * S256, `state` and `nonce` (RFC 9700 §2.1.1, OIDC Core §3.1.2.1); the code exchange and ID
 * token validation (iss, aud, azp, exp, iat, nonce, and the pinned alg: OIDC Core
 * §3.1.3.7, done by openid-client); and logout-token validation (Back-Channel Logout 1.0
 * §2.6), which openid-client does not offer, with jose against the provider's JWKS.
 *
 * Discovery is lazy and never on a request's critical path once it has succeeded: it is
 * started at boot without waiting, shared by concurrent callers while in flight, and after
 * a failure not retried for `DISCOVERY_RETRY_MS`, so an IdP outage costs one fetch per
 * interval, not one per sign-in.
 */
import * as client from 'openid-client'
import { importJWK, jwtVerify } from 'jose'
import type { Clock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { classifyJoseError } from '#shared/jose-errors.js'
import { RemoteJwks } from '#shared/remote-jwks.js'
import { gatewayError } from '../../errors.js'
import { issuerAllowsHttp, type ProviderEntry } from './providers-file.js'
import type { AuthorizeRequest } from './native-sign-in.js'

/** After a failed discovery, how long sign-ins answer 503 before the next attempt. */
export const DISCOVERY_RETRY_MS = 5_000
/** Every call to the IdP (discovery, token, UserInfo) gives up after this long. */
export const IDP_TIMEOUT_S = 5
/** A logout token older than this (by `iat`) is refused (Back-Channel Logout §2.6 step 7). */
export const LOGOUT_TOKEN_MAX_AGE_S = 300
/** Back-Channel Logout 1.0 §2.4: the member of `events` that makes a JWT a logout token. */
export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout'

export interface PendingSignIn {
  readonly provider: string
  readonly codeVerifier: string
  readonly nonce: string
  readonly returnTo: string
  /** A native app's authorization request (native-sign-in.ts): the callback answers it with a code. */
  readonly authorize?: AuthorizeRequest
}

export interface SignedInClaims {
  /** ID token claims, with UserInfo's merged under them when the provider asks for it. */
  readonly claims: Readonly<Record<string, unknown>>
  readonly sub: string
  /** The IdP's session id (`sid`), when its ID token carries one. */
  readonly idpSid: string | undefined
  /** The IdP's refresh token, asked for only when the provider sets `idp_refresh`. A secret: never logged. */
  readonly idpRefreshToken: string | undefined
}

/** An IdP refresh (RFC 6749 §6) made for a bound family: the IdP still vouches for the account, or not. */
export type IdpRefreshOutcome =
  /** `refreshToken`: the IdP's rotated token (undefined: it kept the old one, RFC 6749 §5.1). */
  | { readonly ok: true, readonly refreshToken: string | undefined }
  | { readonly ok: false }

export interface LogoutRequest {
  readonly sub: string | undefined
  readonly idpSid: string | undefined
  readonly jti: string
}

function isObj (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** openid-client's and oauth4webapi's protocol errors: the IdP's answer (or the browser's redirect) is bad. */
function isProtocolError (err: unknown): boolean {
  if (err instanceof client.ResponseBodyError || err instanceof client.AuthorizationResponseError || err instanceof client.WWWAuthenticateChallengeError) return true
  const code = isObj(err) ? err.code : undefined
  return typeof code === 'string' && code.startsWith('OAUTH_')
}

export class RelyingParty {
  readonly entry: ProviderEntry
  readonly redirectUri: string
  readonly #clock: Clock
  #config: client.Configuration | undefined
  #inFlight: Promise<client.Configuration> | undefined
  #failedAt = Number.NEGATIVE_INFINITY
  #jwks: RemoteJwks | undefined

  constructor (entry: ProviderEntry, options: { redirectUri: string, clock: Clock }) {
    this.entry = entry
    this.redirectUri = options.redirectUri
    this.#clock = options.clock
  }

  /** Start discovery without waiting for it (boot). */
  warm (onError: (err: unknown) => void): void {
    this.configuration().catch(onError)
  }

  /** The discovered configuration; throws `GW_OIDC_UNAVAILABLE` while the IdP cannot be discovered. */
  async configuration (): Promise<client.Configuration> {
    if (this.#config !== undefined) return this.#config
    if (this.#inFlight !== undefined) return await this.#inFlight
    if (this.#clock.now() - this.#failedAt < DISCOVERY_RETRY_MS) throw gatewayError('GW_OIDC_UNAVAILABLE')
    this.#inFlight = this.#discover()
    try {
      this.#config = await this.#inFlight
      return this.#config
    } catch (err) {
      this.#failedAt = this.#clock.now()
      throw gatewayError('GW_OIDC_UNAVAILABLE', { cause: err })
    } finally {
      this.#inFlight = undefined
    }
  }

  async #discover (): Promise<client.Configuration> {
    const e = this.entry
    const metadata: Partial<client.ClientMetadata> = {
      id_token_signed_response_alg: e.idTokenAlg,
      token_endpoint_auth_method: e.auth.method
    }
    let auth: client.ClientAuth
    if (e.auth.method === 'private_key_jwt') {
      const jwk = e.auth.jwk
      const key = await importJWK(jwk, typeof jwk.alg === 'string' ? jwk.alg : undefined)
      if (!(key instanceof CryptoKey)) throw new TypeError('private_key_jwt: not an asymmetric private key')
      auth = client.PrivateKeyJwt(typeof jwk.kid === 'string' ? { key, kid: jwk.kid } : key)
    } else {
      auth = e.auth.method === 'client_secret_post' ? client.ClientSecretPost(e.auth.secret) : client.ClientSecretBasic(e.auth.secret)
    }
    const config = await client.discovery(new URL(e.issuer), e.clientId, metadata, auth, {
      timeout: IDP_TIMEOUT_S,
      ...(issuerAllowsHttp(e.issuer) ? { execute: [client.allowInsecureRequests] } : {})
    })
    config.timeout = IDP_TIMEOUT_S
    const jwksUri = config.serverMetadata().jwks_uri
    if (jwksUri !== undefined) this.#jwks = new RemoteJwks(jwksUri, { clock: this.#clock })
    return config
  }

  /** A new authorization request: where to send the browser, and what to keep until it returns. */
  async start (returnTo: string): Promise<{ url: URL, state: string, pending: PendingSignIn }> {
    const config = await this.configuration()
    const codeVerifier = client.randomPKCECodeVerifier()
    const state = client.randomState()
    const nonce = client.randomNonce()
    const bind = this.entry.idpRefresh
    // OIDC Core §11: offline_access asks for a refresh token usable without the user, and
    // needs prompt=consent; providers that ask otherwise (Google: access_type=offline) set
    // authorization_params instead.
    const scopes = bind?.offlineAccess === true && !this.entry.scopes.includes('offline_access') ? [...this.entry.scopes, 'offline_access'] : this.entry.scopes
    const url = client.buildAuthorizationUrl(config, {
      ...bind?.authorizationParams,
      ...(bind?.offlineAccess === true ? { prompt: 'consent' } : {}),
      redirect_uri: this.redirectUri,
      response_type: 'code',
      scope: scopes.join(' '),
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      nonce
    })
    return { url, state, pending: { provider: this.entry.id, codeVerifier, nonce, returnTo } }
  }

  /**
   * The browser came back with `query` for the request `pending`, whose `state` the caller
   * has already matched and consumed. Exchanges the code and validates the ID token.
   */
  async finish (query: URLSearchParams, state: string, pending: PendingSignIn): Promise<SignedInClaims> {
    const config = await this.configuration()
    const currentUrl = new URL(this.redirectUri)
    for (const [k, v] of query) currentUrl.searchParams.append(k, v)
    let claims: Record<string, unknown>
    let idpRefreshToken: string | undefined
    try {
      const tokens = await client.authorizationCodeGrant(config, currentUrl, {
        pkceCodeVerifier: pending.codeVerifier,
        expectedState: state,
        expectedNonce: pending.nonce,
        idTokenExpected: true
      })
      const idClaims = tokens.claims()
      if (idClaims === undefined) throw gatewayError('GW_OIDC_INVALID_RESPONSE')
      claims = { ...idClaims }
      idpRefreshToken = this.entry.idpRefresh === undefined ? undefined : tokens.refresh_token
      if (this.entry.userinfo) {
        // OIDC Core §5.3.2: UserInfo's `sub` must equal the ID token's (checked by openid-client).
        const info = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub)
        claims = { ...info, ...idClaims }
      }
    } catch (err) {
      throw this.#translate(err)
    }
    const sub = claims.sub as string
    return { claims, sub, idpSid: typeof claims.sid === 'string' ? claims.sid : undefined, idpRefreshToken }
  }

  /**
   * Refresh at the IdP (RFC 6749 §6) with a bound family's IdP refresh token: does the IdP
   * still vouch for the account? `invalid_grant` (RFC 6749 §5.2: revoked, expired, or the
   * account disabled) is a no; anything else the IdP or the network does throws
   * `GW_OIDC_UNAVAILABLE`, which never counts as a no.
   */
  async refresh (refreshToken: string): Promise<IdpRefreshOutcome> {
    const config = await this.configuration()
    try {
      const tokens = await client.refreshTokenGrant(config, refreshToken)
      return { ok: true, refreshToken: tokens.refresh_token }
    } catch (err) {
      if (err instanceof client.ResponseBodyError && err.error === 'invalid_grant') return { ok: false }
      // Name and message only: nothing of the request (the token) may ride along into a log line.
      throw gatewayError('GW_OIDC_UNAVAILABLE', { cause: err instanceof Error ? new Error(`${err.name}: ${err.message}`) : undefined })
    }
  }

  /** Back-Channel Logout 1.0 §2.6: validate a logout token; throws `GW_OIDC_LOGOUT_TOKEN`. */
  async verifyLogoutToken (token: string): Promise<LogoutRequest> {
    const config = await this.configuration()
    if (this.#jwks === undefined) throw gatewayError('GW_OIDC_UNAVAILABLE')
    let payload: Record<string, unknown>
    try {
      ({ payload } = await jwtVerify(token, this.#jwks.getKey, {
        issuer: config.serverMetadata().issuer,
        audience: this.entry.clientId,
        algorithms: [this.entry.idTokenAlg],
        requiredClaims: ['iat', 'jti', 'events'],
        maxTokenAge: LOGOUT_TOKEN_MAX_AGE_S,
        currentDate: new Date(this.#clock.now())
      }))
    } catch (err) {
      if (classifyJoseError(err) === 'unavailable') throw gatewayError('GW_OIDC_UNAVAILABLE', { cause: err })
      throw gatewayError('GW_OIDC_LOGOUT_TOKEN', { cause: err })
    }
    const events = payload.events
    const sub = typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : undefined
    const idpSid = typeof payload.sid === 'string' && payload.sid !== '' ? payload.sid : undefined
    // §2.4: the event member must be a JSON object; §2.6 step 5-6: sub and/or sid; no nonce,
    // so an ID token can never pass for a logout token.
    if (!isObj(events) || !isObj(events[BACKCHANNEL_LOGOUT_EVENT]) || (sub === undefined && idpSid === undefined) ||
        payload.nonce !== undefined || typeof payload.jti !== 'string') {
      throw gatewayError('GW_OIDC_LOGOUT_TOKEN')
    }
    return { sub, idpSid, jti: payload.jti }
  }

  #translate (err: unknown): Error {
    if (isLatchkeyError(err)) return err
    // The IdP answered, but its answer (or the redirect) failed a check: never a session.
    if (isProtocolError(err)) return gatewayError('GW_OIDC_INVALID_RESPONSE', { cause: err })
    return gatewayError('GW_OIDC_UNAVAILABLE', { cause: err })
  }
}
