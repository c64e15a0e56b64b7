/**
 * Fastify plugin: bearer access tokens verified against the issuer's JWKS.
 *
 *   await app.register(accessTokenPlugin, { jwksUrl, issuer, audience })
 *   app.get('/x', { onRequest: app.requireToken(['notes:read']) }, handler)
 *   // handler: request.accessToken.sub, .scopes, .sid ...
 *
 * `requireToken` runs as an `onRequest` hook, before the body is read, so an anonymous
 * request never costs a body parse. Refusals are answered here with RFC 6750 §3 headers
 * and `{ error, error_description }`, without relying on the service's error handler.
 *
 * Two modes:
 * - **JWKS only** (the default): signature, iss, aud, typ, alg and exp are checked in
 *   process; nothing is asked per request. A token whose session was revoked (logout,
 *   reuse, offboarding) is still accepted until its `exp` (ACCESS_TOKEN_TTL, 300 s by
 *   default) when the service is called directly: the gateway refuses it at its edge, but
 *   a signature cannot say it was revoked.
 * - **Introspection** (opt-in: `introspection: { url, clientId, clientSecret, cacheMs }`):
 *   after the local checks pass, the gateway's RFC 7662 endpoint is asked whether the token
 *   is still live (answers cached `cacheMs`, 1 s by default, never past `exp`); inactive →
 *   401 `invalid_token`, gateway unreachable → 503 (fails closed). Costs one HTTP call per
 *   token per cache period.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { errorBody, isLatchkeyError } from './errors.js'
import { type AccessRequirement, type AccessToken, AccessTokenVerifier, type AccessTokenVerifierOptions, type TokenKind } from './access-token-verifier.js'
import { readBearer } from './bearer.js'
import { sharedError } from './http-errors.js'
import { TokenIntrospection, type TokenIntrospectionOptions } from './token-introspection.js'

export type AccessTokenPluginOptions = (AccessTokenVerifierOptions | { readonly verifier: AccessTokenVerifier }) & {
  /** Opt-in revocation checks against the gateway's introspection endpoint (see above). */
  readonly introspection?: TokenIntrospectionOptions | TokenIntrospection
}

export type RequireTokenHook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

declare module 'fastify' {
  interface FastifyInstance {
    /** The verifier behind the plugin (readiness, stats, direct verification). */
    accessTokens: AccessTokenVerifier
    /** A hook that admits requests whose bearer token is valid and carries every scope listed. */
    requireToken: (scopes?: readonly string[], options?: { kind?: TokenKind }) => RequireTokenHook
  }
  interface FastifyRequest {
    /** Set by `requireToken`; null on routes without it. */
    accessToken: AccessToken | null
  }
}

async function accessTokens (app: FastifyInstance, options: AccessTokenPluginOptions): Promise<void> {
  const verifier = 'verifier' in options ? options.verifier : new AccessTokenVerifier(options)
  const introspection = options.introspection === undefined || options.introspection instanceof TokenIntrospection
    ? options.introspection
    : new TokenIntrospection(options.introspection)
  app.decorate('accessTokens', verifier)
  app.decorateRequest('accessToken', null)
  app.decorate('requireToken', (scopes: readonly string[] = [], opts: { kind?: TokenKind } = {}): RequireTokenHook => {
    const requirement: AccessRequirement = Object.freeze({ scopes: Object.freeze([...scopes]), kind: opts.kind })
    return async function requireToken (request, reply) {
      try {
        const token = await verifier.verifyAuthorization(request.headers.authorization)
        verifier.authorize(token, requirement)
        if (introspection !== undefined) {
          const credentials = readBearer(request.headers.authorization)
          // verifyAuthorization has just read this same header as a bearer token.
          const raw = credentials.kind === 'token' ? credentials.token : ''
          if (!(await introspection.isActive(raw, token.exp * 1000))) {
            throw sharedError('AT_REVOKED', { headers: { 'www-authenticate': `Bearer realm="${verifier.realm}", error="invalid_token"` } })
          }
        }
        request.accessToken = token
      } catch (err) {
        if (!isLatchkeyError(err)) throw err
        // The reason helps an operator; the token and its claims stay out of the log.
        const reason = err.cause instanceof Error ? err.cause.message : undefined
        if (err.statusCode >= 500) request.log.warn({ code: err.code, reason }, 'access token check unavailable')
        else request.log.debug({ code: err.code, reason }, 'access token refused')
        // Once the reply is sent Fastify runs no further hook and no handler for this request.
        reply.code(err.statusCode).headers(err.headers).send(errorBody(err))
      }
    }
  })
}

export const accessTokenPlugin = fp(accessTokens, { name: 'latchkey-access-token', fastify: '5.x' })
export default accessTokenPlugin
