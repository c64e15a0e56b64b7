/**
 * GET /.well-known/oauth-authorization-server (RFC 8414 §3): what a standard OAuth client
 * needs to find the token, revocation, introspection and key endpoints. Built per request
 * from the live key set and client directory (both reload in place), so the algorithms
 * and scopes listed are those actually published and grantable.
 */
import type { FastifyInstance } from 'fastify'
import type { GatewayConfig } from '../config.js'
import type { ClientDirectory } from '../identity/clients-file.js'
import type { UserDirectory } from '../identity/user-directory.js'
import type { SigningKeys } from '../keys/signing-keys.js'
import { CLIENT_AUTH_METHODS, CLIENT_AUTH_SIGNING_ALGS } from './client-auth.js'
import { INTROSPECTION_PATH } from './introspect-route.js'
import { GRANT_TYPES_SUPPORTED } from './token-route.js'

/** Metadata changes only with a deploy or a reload; let clients cache it briefly. */
export const DISCOVERY_MAX_AGE_S = 300
export const DISCOVERY_PATH = '/.well-known/oauth-authorization-server'

export interface DiscoverySources {
  readonly config: GatewayConfig
  readonly keys: SigningKeys
  readonly clients: ClientDirectory
  readonly users: UserDirectory
}

export function authorizationServerMetadata (sources: DiscoverySources): Record<string, unknown> {
  const { config, keys, clients, users } = sources
  const base = config.issuer
  return {
    issuer: base,
    // RFC 8252: native apps sign the person in here (through an upstream identity provider).
    authorization_endpoint: `${base}/oauth/authorize`,
    token_endpoint: `${base}/oauth/token`,
    jwks_uri: `${base}/.well-known/jwks.json`,
    revocation_endpoint: `${base}/oauth/revoke`,
    introspection_endpoint: `${base}${INTROSPECTION_PATH}`,
    grant_types_supported: [...GRANT_TYPES_SUPPORTED],
    // The authorization endpoint answers with a code only (RFC 9700 §2.1.2: no implicit flow).
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    // RFC 7636 §4.3, RFC 9700 §2.1.1: PKCE required, S256 only.
    code_challenge_methods_supported: ['S256'],
    // RFC 9207: the authorization response names its issuer.
    authorization_response_iss_parameter_supported: true,
    // §2 RECOMMENDED: the scopes the gateway can grant, to users or to clients.
    scopes_supported: [...new Set([...users.scopes(), ...clients.scopes()])].sort(),
    // `none`: public clients (native apps, RFC 8252 §8.4) send their client_id only.
    token_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS, 'none'],
    token_endpoint_auth_signing_alg_values_supported: [...CLIENT_AUTH_SIGNING_ALGS],
    revocation_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS, 'none'],
    revocation_endpoint_auth_signing_alg_values_supported: [...CLIENT_AUTH_SIGNING_ALGS],
    // RFC 7662 §2.1: introspection always needs an authenticated client.
    introspection_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS],
    introspection_endpoint_auth_signing_alg_values_supported: [...CLIENT_AUTH_SIGNING_ALGS],
    // Only what verifiers can meet: the algorithms of the keys in the JWKS right now.
    access_token_signing_alg_values_supported: [...new Set(keys.publicJwks.keys.map(k => k.alg))]
  }
}

export function registerDiscoveryRoute (app: FastifyInstance, sources: DiscoverySources): void {
  app.get(DISCOVERY_PATH, async (_req, reply) => {
    // Public metadata: the OAuth context's no-store hook does not apply, and a Pragma:
    // no-cache beside a public Cache-Control would contradict it (RFC 9111 §5.4).
    reply.removeHeader('Pragma')
    reply.header('Cache-Control', `public, max-age=${DISCOVERY_MAX_AGE_S}`)
    reply.type('application/json')
    return JSON.stringify(authorizationServerMetadata(sources))
  })
}
