/**
 * Peer: node-oidc-provider issuing client_credentials access tokens as ES256 JWTs, in
 * memory — the same job as latchkey's client_credentials row (a confidential client,
 * HTTP Basic, one audience, one scope). Its default adapter keeps nothing to look up for
 * a JWT access token, so this is its fastest configuration.
 *
 * Env: PORT, HOST, CLIENT_ID, CLIENT_SECRET, AUDIENCE, SCOPE.
 */
import http from 'node:http'
import { exportJWK, generateKeyPair } from 'jose'
import Provider from 'oidc-provider'
import { host, listenAndAnnounce, port, requiredEnv } from './env.js'

const clientId = requiredEnv('CLIENT_ID')
const clientSecret = requiredEnv('CLIENT_SECRET')
const audience = requiredEnv('AUDIENCE')
const scope = requiredEnv('SCOPE')
const RESOURCE = `urn:latchkey:${audience}`
const { privateKey } = await generateKeyPair('ES256', { extractable: true })
const signingKey = { ...(await exportJWK(privateKey)), alg: 'ES256', use: 'sig', kid: 'bench-es256' }

const provider = new Provider(`http://${host()}:${port()}`, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    // Only an ES256 key is configured; the default (RS256) would make the client invalid.
    id_token_signed_response_alg: 'ES256',
    scope
  }],
  jwks: { keys: [signingKey] },
  scopes: [scope],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Resource indicators must be absolute URIs (RFC 8707 §2); the token's aud is AUDIENCE.
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({ scope, audience, accessTokenTTL: 300, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } })
    }
  }
})
// The provider logs a warning per request without a trusted proxy setting; none is wanted here.
provider.proxy = false

const callback = provider.callback()
const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.end('ok')
    return
  }
  callback(req, res)
})
server.keepAliveTimeout = 72_000
listenAndAnnounce(server)
