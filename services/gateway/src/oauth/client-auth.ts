/**
 * Client authentication at the token and revocation endpoints (RFC 6749 §2.3.1):
 * `client_secret_basic` (HTTP Basic, id and secret form-urlencoded before base64) or
 * `client_secret_post` (in the body). Using both at once is refused (§2.3: "MUST NOT use
 * more than one authentication method in each request").
 */
import type { FastifyRequest } from 'fastify'
import { gatewayError } from '../errors.js'
import type { Client, ClientDirectory } from '../identity/clients-file.js'
import { param, type FormParams } from './form-body.js'

export const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_post'] as const

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

interface PresentedCredentials { id: string, secret: string }

function decodeComponent (s: string): string {
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

/**
 * The authenticated client, or null when the request carries no client credentials at all
 * (a public client). Wrong credentials throw 401 invalid_client.
 */
export function authenticateClient (req: FastifyRequest, form: FormParams, clients: ClientDirectory): Client | null {
  const basic = basicCredentials(req)
  const postSecret = param(form, 'client_secret')
  if (basic !== undefined && postSecret !== undefined) {
    throw gatewayError('GW_OAUTH_INVALID_REQUEST', { description: 'Use one client authentication method, not two.' })
  }
  let presented: PresentedCredentials | undefined = basic
  if (presented === undefined && postSecret !== undefined) {
    const id = param(form, 'client_id')
    if (id === undefined) throw invalidClient(undefined, { challenge: false })
    presented = { id, secret: postSecret }
  }
  if (presented === undefined) return null
  const challenge = basic !== undefined
  // A body client_id must agree with the Basic one (RFC 6749 §3.2.1 lets clients send both).
  const bodyId = param(form, 'client_id')
  if (bodyId !== undefined && bodyId !== presented.id) throw invalidClient(undefined, { challenge })
  const client = clients.authenticate(presented.id, presented.secret)
  if (client === null) throw invalidClient(undefined, { challenge })
  return client
}
