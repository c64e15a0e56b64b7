/**
 * GET /.well-known/jwks.json: the public half of the signing keys (RFC 7517 §5), what
 * resource services verify access tokens with. The body is serialised once per key set;
 * a reloaded SIGNING_KEYS_FILE is served at once.
 */
import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import type { SigningKeys } from './signing-keys.js'

export const JWKS_PATH = '/.well-known/jwks.json'

/**
 * How long verifiers and caches may keep the key set. Short enough that a key added
 * with `keys generate --append` reaches every verifier within 5 minutes; a rotation
 * waits at least this long after publishing a key before letting it sign (`--prepend`
 * or moving it first), or verifiers with a stale set would see an unknown kid.
 */
export const JWKS_MAX_AGE_S = 300

export interface JwksRouteOptions {
  readonly keys: SigningKeys
}

const jwksRoute: FastifyPluginAsync<JwksRouteOptions> = async (app, opts) => {
  const { keys } = opts
  // Serialised once per key set: a reloaded key file (SigningKeys.replace) is served from its first request on.
  let served = keys.publicJwks
  let body = JSON.stringify(served)
  const cacheControl = `public, max-age=${JWKS_MAX_AGE_S}`
  app.get(JWKS_PATH, (_request, reply) => {
    if (keys.publicJwks !== served) {
      served = keys.publicJwks
      body = JSON.stringify(served)
    }
    return reply.header('cache-control', cacheControl).type('application/json').send(body)
  })
}

export default fp(jwksRoute, { name: 'latchkey-jwks', fastify: '5.x' })
export { jwksRoute }
