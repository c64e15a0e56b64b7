/**
 * Client authentication at the token, revocation and introspection endpoints:
 * - `client_secret_basic` (RFC 6749 §2.3.1: HTTP Basic, id and secret form-urlencoded
 *   before base64) or `client_secret_post` (in the body);
 * - `private_key_jwt` and federated workload identity: a JWT `client_assertion`
 *   (RFC 7523 §2.2, OIDC Core §9; see client-assertion.ts).
 * Using more than one at once is refused (RFC 6749 §2.3: "MUST NOT use more than one
 * authentication method in each request").
 */
import type { FastifyRequest } from 'fastify'
import { isLatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import type { Client, ClientDirectory } from '../identity/clients-file.js'
import { CLIENT_ASSERTION_TYPE, type ClientAssertionVerifier, ASSERTION_ALGORITHMS } from './client-assertion.js'
import { param, type FormParams } from './form-body.js'

export const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'] as const
/** RFC 8414 §2 `token_endpoint_auth_signing_alg_values_supported`. */
export const CLIENT_AUTH_SIGNING_ALGS: readonly string[] = ASSERTION_ALGORITHMS

/** RFC 6749 §5.2: a 401 invalid_client answers with the scheme the client should use. */
export const BASIC_CHALLENGE = 'Basic realm="latchkey", charset="UTF-8"'

/**
 * 401 invalid_client. §5.2 asks for a `WWW-Authenticate` challenge when the client tried the
 * Authorization header (or sent no credentials); a client that authenticated in the body
 * (`client_secret_post`) gets none: a Basic challenge there makes standard clients
 * (oauth4webapi, openid-client) report a challenge instead of the invalid_client error.
 */
export function invalidClient (cause?: unknown, options: { challenge?: boolean } = {}): Error {
  return gatewayError('GW_INVALID_CLIENT', { cause, headers: options.challenge === false ? {} : { 'WWW-Authenticate': BASIC_CHALLENGE } })
}

/**
 * Throttling of failed client authentications (client-auth-limiter.ts): asked before
 * any credential is checked, and told of each failure.
 */
export interface ClientAuthThrottle {
  /**
   * Throws 429 when this request's source is over its failure limit. Synchronous: it reads
   * only what this process remembers, so a good client's request is not made to wait a tick.
   */
  before (req: FastifyRequest, clientId: string | undefined): void
  /** Counts a failure; throws 429 instead of the failure when a limit is now exceeded. */
  failed (req: FastifyRequest, clientId: string | undefined): Promise<void>
}

interface PresentedCredentials { id: string, secret: string }

function decodeComponent (s: string): string {
  // Nothing to decode (the common case: ids and generated secrets are URL-safe already).
  if (!s.includes('%') && !s.includes('+')) return s
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '))
  } catch {
    throw invalidClient()
  }
}

function basicCredentials (req: FastifyRequest): PresentedCredentials | undefined {
  const header = req.headers.authorization
  if (header === undefined) return undefined
  const m = /^Basic ([A-Za-z0-9+/]+=*)$/i.exec(header.trim())
  if (m === null) throw invalidClient()
  const decoded = Buffer.from(m[1] as string, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) throw invalidClient()
  return { id: decodeComponent(decoded.slice(0, colon)), secret: decodeComponent(decoded.slice(colon + 1)) }
}

export interface ClientAuthenticatorOptions {
  readonly clients: ClientDirectory
  /** Our issuer: endpoint URLs (an accepted assertion `aud`) are built on it. */
  readonly issuer: string
  readonly assertions: ClientAssertionVerifier
  readonly throttle?: ClientAuthThrottle
}

export class ClientAuthenticator {
  readonly #clients: ClientDirectory
  readonly #issuer: string
  readonly #assertions: ClientAssertionVerifier
  readonly #throttle: ClientAuthThrottle | undefined

  constructor (options: ClientAuthenticatorOptions) {
    this.#clients = options.clients
    this.#issuer = options.issuer
    this.#assertions = options.assertions
    this.#throttle = options.throttle
  }

  /**
   * The authenticated client; without credentials, the public client its `client_id` names
   * (RFC 6749 §2.1, §3.2.1: identified, not authenticated; `client.public` says so), else
   * null (the browser). Wrong credentials throw 401 invalid_client (429 when throttled).
   */
  async authenticate (req: FastifyRequest, form: FormParams): Promise<Client | null> {
    let bodyId: string | undefined
    let claimedId: string | undefined
    const basicTried = req.headers.authorization !== undefined
    try {
      bodyId = param(form, 'client_id')
      const basic = basicCredentials(req)
      claimedId = basic?.id ?? bodyId
      const postSecret = param(form, 'client_secret')
      const assertion = param(form, 'client_assertion')
      const assertionType = param(form, 'client_assertion_type')
      const methods = [basic, postSecret, assertion ?? assertionType].filter(m => m !== undefined).length
      if (methods > 1) throw gatewayError('GW_OAUTH_INVALID_REQUEST', { description: 'Use one client authentication method, not two.' })
      if (methods === 0) return this.#clients.getPublic(bodyId) ?? null
      this.#throttle?.before(req, claimedId)
      if (assertion !== undefined || assertionType !== undefined) {
        if (assertionType !== CLIENT_ASSERTION_TYPE || assertion === undefined) throw invalidClient()
        const url = `${this.#issuer}${req.routeOptions.url ?? '/oauth/token'}`
        const client = await this.#assertions.verify(assertion, bodyId, url)
        return client
      }
      let presented: PresentedCredentials | undefined = basic
      if (presented === undefined && postSecret !== undefined) {
        if (bodyId === undefined) throw invalidClient()
        presented = { id: bodyId, secret: postSecret }
      }
      if (presented === undefined) return null
      // A body client_id must agree with the Basic one (RFC 6749 §3.2.1 lets clients send both).
      if (bodyId !== undefined && bodyId !== presented.id) throw invalidClient()
      const client = this.#clients.authenticate(presented.id, presented.secret)
      if (client === null) throw invalidClient()
      return client
    } catch (err) {
      if (isLatchkeyError(err) && err.code === 'GW_INVALID_CLIENT') {
        await this.#throttle?.failed(req, claimedId)
        // §5.2: the Basic challenge only where the client used (or tried) the Authorization
        // header; a client_secret_post or assertion failure gets none (see invalidClient).
        throw invalidClient(err.cause, { challenge: basicTried })
      }
      throw err
    }
  }
}
