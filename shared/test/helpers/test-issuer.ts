/**
 * A stand-in token issuer for tests: its own keys (EdDSA, ES256, RS256, made with jose),
 * a JWKS served on a free port by node:http that counts its fetches and can be told to
 * misbehave, and a signer for access tokens shaped like the gateway's (RFC 9068).
 * Independent of the gateway's code on purpose.
 */
import { randomUUID } from 'node:crypto'
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type CryptoKey, type JWK, type JWTPayload, SignJWT, exportJWK, generateKeyPair } from 'jose'

export type Alg = 'EdDSA' | 'ES256' | 'RS256'
export const AUDIENCE = 'latchkey-api'
export const ACCESS_TTL_S = 300

export interface TestKey {
  readonly alg: Alg
  readonly kid: string
  readonly privateKey: CryptoKey
  readonly publicJwk: JWK
}

export type JwksHandler = (req: IncomingMessage, res: ServerResponse) => void

export interface SignOptions {
  readonly alg?: Alg
  /** Sign with this key instead (a foreign key, say); its kid is used unless `header.kid` says otherwise. */
  readonly key?: TestKey
  readonly header?: Record<string, unknown>
  /** Merged over the default user-token claims; `undefined` values delete a claim. */
  readonly claims?: Record<string, unknown>
  /** Seconds since the epoch the token is issued at (defaults to the real clock). */
  readonly nowS?: number
}

export async function makeKey (alg: Alg, kid = `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}`): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }
  return { alg, kid, privateKey, publicJwk }
}

export class TestIssuer {
  readonly keys: Record<Alg, TestKey>
  /** Keys published in the JWKS (defaults to the three above). */
  published: TestKey[]
  fetches = 0
  /** Replace to make the JWKS endpoint misbehave; `undefined` serves `published`. */
  handler: JwksHandler | undefined
  #server: Server | undefined
  #url = ''

  private constructor (keys: Record<Alg, TestKey>) {
    this.keys = keys
    this.published = Object.values(keys)
  }

  static async start (): Promise<TestIssuer> {
    const [EdDSA, ES256, RS256] = await Promise.all([makeKey('EdDSA'), makeKey('ES256'), makeKey('RS256')])
    const issuer = new TestIssuer({ EdDSA, ES256, RS256 })
    await issuer.#listen()
    return issuer
  }

  get url (): string { return this.#url }
  get issuer (): string { return this.#url }
  get jwksUrl (): string { return `${this.#url}/.well-known/jwks.json` }

  async #listen (port = 0): Promise<void> {
    const server = createServer((req, res) => {
      if (req.url !== '/.well-known/jwks.json') {
        res.writeHead(404).end()
        return
      }
      this.fetches++
      if (this.handler !== undefined) {
        this.handler(req, res)
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ keys: this.published.map(k => k.publicJwk) }))
    })
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    this.#server = server
    this.#url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  /** Stop answering (connections refused) but keep the address, until `resume()`. */
  async pause (): Promise<void> {
    const server = this.#server
    this.#server = undefined
    if (server === undefined) return
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  async resume (): Promise<void> {
    if (this.#server !== undefined) return
    await this.#listen(Number(new URL(this.#url).port))
  }

  async close (): Promise<void> {
    await this.pause()
  }

  defaultClaims (nowS: number): JWTPayload {
    return {
      iss: this.issuer,
      sub: 'alice',
      aud: AUDIENCE,
      exp: nowS + ACCESS_TTL_S,
      iat: nowS,
      jti: randomUUID(),
      client_id: 'latchkey-web',
      scope: 'notes:read notes:write',
      sid: 'family-1'
    }
  }

  /** A token shaped like the gateway's: header { alg, kid, typ: at+jwt }. */
  async sign (options: SignOptions = {}): Promise<string> {
    const key = options.key ?? this.keys[options.alg ?? 'EdDSA']
    const nowS = options.nowS ?? Math.floor(Date.now() / 1000)
    const claims: Record<string, unknown> = { ...this.defaultClaims(nowS), ...options.claims }
    for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k]
    const header = { alg: key.alg, kid: key.kid, typ: 'at+jwt', ...options.header }
    for (const [k, v] of Object.entries(header)) if (v === undefined) delete (header as Record<string, unknown>)[k]
    return await new SignJWT(claims as JWTPayload).setProtectedHeader(header as { alg: string }).sign(key.privateKey)
  }

  /** A client-credentials token: sub = client_id, no sid. */
  async signService (options: SignOptions & { clientId?: string, scope?: string } = {}): Promise<string> {
    const clientId = options.clientId ?? 'reporting'
    return await this.sign({ ...options, claims: { sub: clientId, client_id: clientId, scope: options.scope ?? 'internal:read', sid: undefined, ...options.claims } })
  }
}
