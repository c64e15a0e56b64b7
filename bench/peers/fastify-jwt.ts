/**
 * Peer: the resource's `GET /api/me` guarded by @fastify/jwt + get-jwks, as the
 * @fastify/jwt README shows it ("JWKS" example): the key looked up by `kid` from the
 * issuer's JWKS, plus the issuer and audience checks any deployment would add.
 * jwk-to-pem (behind `getPublicKey`) has no OKP support, so an EdDSA key is turned into
 * PEM with node:crypto instead — per request, as `getPublicKey` does for EC and RSA keys.
 */
import { createPublicKey, type JsonWebKey } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import buildGetJwks from 'get-jwks'
import { buildShell, type Caller } from './resource-shell.js'
import { host, port, requiredEnv } from './env.js'

const issuer = requiredEnv('ISSUER')
const audience = requiredEnv('AUDIENCE')
const getJwks = buildGetJwks({ issuersWhitelist: [issuer] })

interface Decoded { header: { kid?: string, alg?: string }, payload: { iss?: string } }

const app = await buildShell({
  setup: async (app) => {
    await app.register(fastifyJwt, {
      decode: { complete: true },
      verify: { allowedIss: issuer, allowedAud: audience },
      secret: async (_request: unknown, token: unknown) => {
        const { header: { kid, alg }, payload: { iss } } = token as Decoded
        if (alg === 'EdDSA') {
          const jwk = await getJwks.getJwk({ kid: kid ?? '', alg, domain: iss ?? '' })
          return createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
        }
        return await getJwks.getPublicKey({ kid, alg, domain: iss ?? '' })
      }
    })
  },
  guard: async (request, reply) => {
    try {
      await request.jwtVerify()
    } catch {
      await reply.code(401).send({ error: 'invalid_token' })
    }
  },
  caller: (request) => {
    const user = request.user as Record<string, unknown>
    return {
      sub: String(user.sub),
      client_id: String(user.client_id),
      scope: String(user.scope),
      sid: typeof user.sid === 'string' ? user.sid : null,
      exp: Number(user.exp)
    } satisfies Caller
  }
})
await app.listen({ port: port(), host: host() })
process.stdout.write(`listening on ${host()}:${port()}\n`)
process.once('SIGTERM', () => { void app.close().then(() => process.exit(0)) })
