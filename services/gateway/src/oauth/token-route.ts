/**
 * POST /oauth/token (RFC 6749 §3.2): the refresh_token grant (same families and rules as
 * the cookie flow, the rotated token in the body), authorization_code with PKCE for apps
 * that signed the person in through `/oauth/authorize` (§4.1.3, RFC 7636;
 * identity/oidc/native-sign-in.ts), client_credentials (§4.4), and the password grant
 * (§4.3) for clients allowed it — kept for migration only (RFC 9700 §2.4). Every answer, errors included, carries
 * `Cache-Control: no-store` (§5.1).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { GatewayConfig } from '../config.js'
import { gatewayError } from '../errors.js'
import type { ClientDirectory, Client } from '../identity/clients-file.js'
import type { UserDirectory } from '../identity/user-directory.js'
import type { AccessTokenIssuer } from '../keys/access-token.js'
import type { GatewayEvents } from '../ops/events.js'
import { BROWSER_CLIENT_ID, type SessionService } from '../sessions/service.js'
import type { LoginLimiter } from '../auth/login-limiter.js'
import { TOKEN_RESPONSE_SCHEMA, type TokenBody } from '../auth/token-response.js'
import { checkPassword } from '../auth/password-check.js'
import { type ClientAuthenticator, invalidClient } from './client-auth.js'
import { param, requireParam, type FormParams } from './form-body.js'
import { narrowScope, pickAudience } from './token-scope.js'
import { TOKEN_EXCHANGE_GRANT, type TokenExchange } from './token-exchange.js'
import type { NativeSignIn } from '../identity/oidc/native-sign-in.js'

export const GRANT_TYPES_SUPPORTED = ['authorization_code', 'refresh_token', 'client_credentials', 'password', TOKEN_EXCHANGE_GRANT] as const

export interface TokenRouteOptions {
  readonly config: GatewayConfig
  readonly sessions: SessionService
  readonly users: UserDirectory
  readonly clients: ClientDirectory
  readonly issuer: AccessTokenIssuer
  readonly events: GatewayEvents
  readonly limiter: LoginLimiter
  readonly clientAuth: ClientAuthenticator
  readonly exchange: TokenExchange
  readonly native: NativeSignIn
}

function requireGrant (client: Client | null, grant: string): Client {
  if (client === null) throw invalidClient()
  if (!client.grants.includes(grant)) throw gatewayError('GW_UNAUTHORIZED_CLIENT')
  return client
}

export function registerTokenRoute (app: FastifyInstance, opts: TokenRouteOptions): void {
  const { config, sessions, users, issuer, events, limiter, clientAuth, exchange, native } = opts

  async function refreshGrant (req: FastifyRequest, form: FormParams, client: Client | null): Promise<TokenBody> {
    // RFC 8707 §2: user tokens are always for AUDIENCE; asking for another is invalid_target,
    // checked before the rotation so that a refused request does not use up the token.
    pickAudience(form, [config.audience])
    const raw = requireParam(form, 'refresh_token')
    if (client !== null && !client.grants.includes('refresh_token') && !client.grants.includes('password')) {
      throw gatewayError('GW_UNAUTHORIZED_CLIENT')
    }
    // A family is bound to the client it was issued to (§6): a confidential client's family
    // needs that client's authentication; a browser family is refreshed without one.
    const requested = param(form, 'scope')
    const result = await sessions.refresh(req, raw, {
      clientId: client?.id ?? BROWSER_CLIENT_ID,
      seen: { ip: req.ip, userAgent: req.headers['user-agent'] },
      // §6: a refresh may narrow the scope of the access token, never widen the family's.
      narrow: (allowed) => narrowScope(requested, allowed)
    })
    if (!result.ok) throw gatewayError('GW_OAUTH_INVALID_GRANT')
    return { ...result.body, refresh_token: result.refreshToken }
  }

  function clientCredentialsGrant (form: FormParams, presented: Client | null): TokenBody {
    const client = requireGrant(presented, 'client_credentials')
    const aud = pickAudience(form, client.audiences)
    const scope = narrowScope(param(form, 'scope'), client.scope)
    // A service token: sub is the client itself, and there is no session (no sid).
    const { token, expiresIn } = issuer.issue({ sub: client.id, aud, client_id: client.id, scope })
    events.tokenIssued('client_credentials')
    return { access_token: token, token_type: 'Bearer', expires_in: expiresIn, scope }
  }

  async function passwordGrant (req: FastifyRequest, form: FormParams, presented: Client | null): Promise<TokenBody> {
    const client = requireGrant(presented, 'password')
    pickAudience(form, [config.audience])
    const username = requireParam(form, 'username')
    const password = requireParam(form, 'password')
    const user = await checkPassword({ users, limiter, events }, req, username, password)
    if (user === null) throw gatewayError('GW_OAUTH_INVALID_CREDENTIALS')
    const userScopes = user.scope.split(' ').filter(Boolean)
    const allowed = client.scope.length === 0 ? userScopes : userScopes.filter(s => client.scope.includes(s))
    const scope = narrowScope(param(form, 'scope'), allowed)
    const issued = await sessions.create(req, { user, clientId: client.id, scope, seen: { ip: req.ip, userAgent: req.headers['user-agent'] }, grant: 'password' })
    return { ...issued.body, refresh_token: issued.refreshToken }
  }

  // Cache-Control: no-store (§5.1) is set for every answer by the OAuth context's onRequest hook (routes.ts).
  app.post('/oauth/token', { schema: { response: { 200: TOKEN_RESPONSE_SCHEMA } } }, async (req: FastifyRequest) => {
    const form: FormParams = (req.body as FormParams | undefined) ?? {}
    const grantType = param(form, 'grant_type')
    if (grantType === undefined) throw gatewayError('GW_OAUTH_INVALID_REQUEST', { description: 'Missing parameter grant_type.' })
    if (!(GRANT_TYPES_SUPPORTED as readonly string[]).includes(grantType)) throw gatewayError('GW_UNSUPPORTED_GRANT_TYPE')
    const client = await clientAuth.authenticate(req, form)
    switch (grantType) {
      case 'authorization_code': return native.redeem(req, form, client)
      case 'refresh_token': return refreshGrant(req, form, client)
      case 'client_credentials': return clientCredentialsGrant(form, client)
      case TOKEN_EXCHANGE_GRANT: {
        if (client === null) throw invalidClient()
        const body = await exchange.exchange(form, client)
        events.tokenIssued('token_exchange')
        return body
      }
      default: return passwordGrant(req, form, client)
    }
  })
}
