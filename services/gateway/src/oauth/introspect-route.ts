/**
 * POST /oauth/introspect (RFC 7662): lets a resource service called directly (not through
 * the gateway's proxy) learn whether a token is still live, revocations included.
 *
 * - The caller must authenticate as a client, with the token endpoint's methods (§2.1);
 *   without credentials → 401 invalid_client.
 * - Access tokens go through the one shared verifier (signature with the gateway's own
 *   keys, iss, aud, typ, exp) plus the edge-revocation set, so a logged-out, replayed or
 *   offboarded session reads `active: false` at every replica within the revocation
 *   promise (1 s). Anything not live, expired, forged or foreign is `{"active": false}`
 *   with no reason (§2.2: nothing more may be said about an inactive token).
 * - Which tokens a client may introspect (§4 lets the server decide, answering inactive
 *   otherwise): an access token only if its `aud` is among the client's own allowed
 *   audiences (the audiences it could ask tokens for), so a service learns about tokens
 *   meant for it and nothing else; a refresh token only if it was issued to this same
 *   client (RFC 6749 §6 binds refresh tokens to their client), never a browser session's.
 * - Refresh tokens: active while the presented token is the current one of a live family
 *   (`FamilyStore.lookup` through the session service, read-only: introspection never rotates or extends a session).
 */
import type { FastifyInstance } from 'fastify'
import type { Clock } from '#shared/clock.js'
import { type AccessToken, AccessTokenVerifier } from '#shared/access-token-verifier.js'
import { isLatchkeyError } from '#shared/errors.js'
import type { GatewayConfig } from '../config.js'
import type { SigningKeys } from '../keys/signing-keys.js'
import type { RevokedSids } from '../auth/bearer.js'
import { signingKeyResolver } from '../keys/verification-keys.js'
import type { Family } from '../sessions/family-store.js'
import type { SessionRevocations } from '../sessions/service.js'
import { parseRefreshToken } from '../sessions/refresh-token.js'
import { type ClientAuthenticator, invalidClient } from './client-auth.js'
import { requireParam, type FormParams } from './form-body.js'

export const INTROSPECTION_PATH = '/oauth/introspect'
/** One verifier (and verified-token cache) per distinct audience set of the clients asking. */
export const INTROSPECTION_VERIFIERS_MAX = 256

/** The verifier's refusals that mean "not a live token"; anything else is a server fault. */
const INACTIVE_CODES: ReadonlySet<string> = new Set(['AT_INVALID', 'AT_EXPIRED', 'AT_REVOKED'])
const INACTIVE = Object.freeze({ active: false })

export interface IntrospectRouteOptions {
  readonly config: GatewayConfig
  readonly sessions: SessionRevocations
  readonly clientAuth: ClientAuthenticator
  readonly keys: SigningKeys
  readonly revoked: RevokedSids
  readonly clock: Clock
}

export type IntrospectionResponse = Readonly<Record<string, unknown>> & { readonly active: boolean }

function seconds (ms: number): number {
  return Math.floor(ms / 1000)
}

/** §2.2 members for a live access token. */
function accessTokenInfo (token: AccessToken): IntrospectionResponse {
  return {
    active: true,
    scope: token.scope,
    client_id: token.client_id,
    sub: token.sub,
    aud: token.aud,
    iss: token.iss,
    exp: token.exp,
    iat: token.iat,
    jti: token.jti,
    ...(token.sid === undefined ? {} : { sid: token.sid }),
    token_type: 'Bearer'
  }
}

function refreshTokenInfo (family: Family, issuer: string): IntrospectionResponse {
  return {
    active: true,
    scope: family.scope,
    client_id: family.clientId,
    sub: family.userId,
    iss: issuer,
    // The session's lifetime: the sooner of its idle and absolute expiry.
    exp: seconds(Math.min(family.idleExpiresAt, family.absoluteExpiresAt)),
    iat: seconds(family.createdAt),
    sid: family.sid
  }
}

/** A live access token of this gateway whose `aud` is among `audiences`, else null. */
export type AccessTokenCheck = (token: string, audiences: readonly string[]) => Promise<AccessToken | null>

/**
 * The shared verifier with the gateway's own keys (asked per verification) and the
 * edge-revocation set, one instance (and verified-token cache) per audience set asked for.
 */
export function createAccessTokenCheck (opts: Pick<IntrospectRouteOptions, 'config' | 'keys' | 'revoked' | 'clock'>): AccessTokenCheck {
  const { config, keys, revoked, clock } = opts
  const verifiers = new Map<string, AccessTokenVerifier>()

  function verifierFor (audiences: readonly string[]): AccessTokenVerifier {
    const id = JSON.stringify([...audiences].sort())
    let verifier = verifiers.get(id)
    if (verifier === undefined) {
      // Clients reload in place; a bounded map keeps old audience sets from piling up.
      if (verifiers.size >= INTROSPECTION_VERIFIERS_MAX) verifiers.clear()
      verifier = new AccessTokenVerifier({
        keys: signingKeyResolver(keys),
        issuer: config.issuer,
        audience: audiences,
        clock,
        isRevoked: (token) => token.sid !== undefined && revoked.has(token.sid)
      })
      verifiers.set(id, verifier)
    }
    return verifier
  }

  return async (token, audiences) => {
    if (audiences.length === 0) return null
    try {
      return await verifierFor(audiences).verify(token)
    } catch (err) {
      if (isLatchkeyError(err) && INACTIVE_CODES.has(err.code)) return null
      throw err
    }
  }
}

export function registerIntrospectRoute (app: FastifyInstance, opts: IntrospectRouteOptions & { readonly checkAccessToken: AccessTokenCheck }): void {
  const { config, sessions, clientAuth, revoked, checkAccessToken } = opts

  app.post(INTROSPECTION_PATH, async (req) => {
    const form: FormParams = (req.body as FormParams | undefined) ?? {}
    const client = await clientAuth.authenticate(req, form)
    // §2.1: the endpoint requires authorization; an anonymous caller learns nothing.
    // RFC 7662 §2.1: the caller is authorized; a public client proves nothing about itself.
    if (client === null || client.public === true) throw invalidClient()
    const token = requireParam(form, 'token')
    // `token_type_hint` (§2.1) needs no lookup: the two kinds have disjoint formats.
    const presented = parseRefreshToken(token)
    if (presented === null) {
      const live = await checkAccessToken(token, client.audiences)
      return live === null ? INACTIVE : accessTokenInfo(live)
    }
    const family = await sessions.lookup(presented)
    if (family === null || family.clientId !== client.id || revoked.has(family.sid)) return INACTIVE
    return refreshTokenInfo(family, config.issuer)
  })
}
