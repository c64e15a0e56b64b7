/**
 * JWT client assertions (RFC 7523 §2.2 and §3, OIDC Core §9), sent as `client_assertion`
 * with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`:
 *
 * - `private_key_jwt`: signed by the client's own key (its entry's `jwks` or `jwks_uri`);
 *   `iss` = `sub` = client id, `aud` = our issuer or the endpoint's URL, `exp` at most
 *   ASSERTION_MAX_LIFETIME_S ahead, and a `jti` accepted once (§3 item 7), remembered in
 *   the JtiReplayStore until `exp`.
 * - federated (workload identity): signed by an external issuer the client's entry trusts
 *   (e.g. a Kubernetes cluster's service-account issuer), `iss` and `sub` as the entry says,
 *   `aud` as above. The kubelet hands a pod the same token until it rotates it, so these are
 *   reusable until `exp` (bounded by FEDERATED_MAX_LIFETIME_S) and not single-use.
 *
 * Keys: inline JWKS through jose's createLocalJWKSet; remote ones through the shared
 * RemoteJwks (jose's createRemoteJWKSet: cached, one rate-limited refetch on an unknown
 * kid, no redirects, size cap). A federated issuer without `jwks_uri` is asked for its OIDC
 * discovery document (`/.well-known/openid-configuration`) once, then its `jwks_uri`.
 * Algorithms are an allow-list checked before any key is chosen: `none` and HS* never
 * get that far (RFC 8725 §3.1).
 */
import { type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey, createLocalJWKSet, decodeJwt, jwtVerify } from 'jose'
import type { Clock } from '#shared/clock.js'
import { CLOCK_TOLERANCE_S } from '#shared/access-token-verifier.js'
import { classifyJoseError } from '#shared/jose-errors.js'
import { type FetchLike, JwksUnavailableError, RemoteJwks } from '#shared/remote-jwks.js'
import { gatewayError } from '../errors.js'
import type { Client, ClientDirectory } from '../identity/clients-file.js'
import type { FederatedTrust } from '../identity/client-keys.js'
import type { JtiReplayStore } from './jti-replay-store.js'

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
/** RFC 7518 ES256/RS256, RFC 8037 EdDSA and its fully-specified name (RFC 9864) `Ed25519`. */
export const ASSERTION_ALGORITHMS = ['ES256', 'RS256', 'EdDSA', 'Ed25519'] as const
/** A client assertion is made for one request: its `exp` may be at most this far ahead. */
export const ASSERTION_MAX_LIFETIME_S = 300
/** A federated token (e.g. a projected service-account token) may live longer, not forever. */
export const FEDERATED_MAX_LIFETIME_S = 24 * 3600
/** A Kubernetes service-account token is 1–2 KB; anything far larger is refused unparsed. */
export const MAX_ASSERTION_LENGTH = 16 * 1024
/** After a failed discovery, ask the issuer again no sooner than this. */
export const DISCOVERY_FAILURE_BACKOFF_MS = 5_000
export const DISCOVERY_TIMEOUT_MS = 3_000
/** A discovery document is a few KB. */
const MAX_DISCOVERY_BYTES = 64 * 1024
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

export interface ClientAssertionOptions {
  readonly clients: ClientDirectory
  /** Our issuer identifier (an accepted `aud`). */
  readonly issuer: string
  readonly replay: JtiReplayStore
  readonly clock: Clock
  readonly fetch?: FetchLike
}

type Method = 'private_key_jwt' | 'federated'

function invalid (cause?: unknown): Error {
  return gatewayError('GW_INVALID_CLIENT', { cause })
}

export class ClientAssertionVerifier {
  readonly #clients: ClientDirectory
  readonly #issuer: string
  readonly #replay: JtiReplayStore
  readonly #clock: Clock
  readonly #fetch: FetchLike
  /** Inline key sets by client entry: a reloaded entry is a new object, so gets new keys. */
  readonly #local = new WeakMap<object, JWTVerifyGetKey>()
  readonly #remote = new Map<string, RemoteJwks>()
  readonly #discovered = new Map<string, { jwksUri?: string, pending?: Promise<string>, failedUntil: number }>()

  constructor (options: ClientAssertionOptions) {
    this.#clients = options.clients
    this.#issuer = options.issuer
    this.#replay = options.replay
    this.#clock = options.clock
    this.#fetch = options.fetch ?? ((u, init) => fetch(u, init))
  }

  /**
   * The client this assertion authenticates, for a request to `endpointUrl`; throws 401
   * GW_INVALID_CLIENT (or 503 when keys or the replay store cannot be reached).
   * `claimedId` is the request's `client_id`, when it sent one (RFC 7523 §3 makes it optional).
   */
  async verify (assertion: string, claimedId: string | undefined, endpointUrl: string): Promise<Client> {
    if (assertion.length > MAX_ASSERTION_LENGTH || !COMPACT_JWS.test(assertion)) throw invalid()
    let unverified: JWTPayload
    try {
      unverified = decodeJwt(assertion)
    } catch (err) {
      throw invalid(err)
    }
    const { iss, sub } = unverified
    if (typeof iss !== 'string' || typeof sub !== 'string') throw invalid()
    const client = claimedId !== undefined
      ? this.#clients.get(claimedId)
      : iss === sub ? this.#clients.get(sub) : this.#clients.findFederated(iss, sub)
    if (client === undefined) throw invalid()
    const method: Method | undefined = client.federated !== undefined && client.federated.issuer === iss
      ? 'federated'
      : (client.jwks !== undefined || client.jwksUri !== undefined) && iss === client.id ? 'private_key_jwt' : undefined
    if (method === undefined) throw invalid()

    const trust = client.federated
    const expected = method === 'federated' && trust !== undefined
      ? { issuer: trust.issuer, subject: trust.subject }
      : { issuer: client.id, subject: client.id }
    let payload: JWTPayload
    try {
      ({ payload } = await jwtVerify(assertion, this.#keysFor(client, method), {
        algorithms: [...ASSERTION_ALGORITHMS],
        issuer: expected.issuer,
        subject: expected.subject,
        audience: [...new Set([this.#issuer, `${this.#issuer}/oauth/token`, endpointUrl])],
        clockTolerance: CLOCK_TOLERANCE_S,
        currentDate: new Date(this.#clock.now()),
        requiredClaims: method === 'private_key_jwt' ? ['exp', 'jti'] : ['exp']
      }))
    } catch (err) {
      if (err instanceof JwksUnavailableError || classifyJoseError(err) === 'unavailable') {
        throw gatewayError('GW_CLIENT_KEYS_UNAVAILABLE', { cause: err })
      }
      throw invalid(err)
    }
    const exp = payload.exp as number
    const maxLifetimeS = method === 'private_key_jwt' ? ASSERTION_MAX_LIFETIME_S : FEDERATED_MAX_LIFETIME_S
    const nowS = this.#clock.now() / 1000
    if (exp - nowS > maxLifetimeS + CLOCK_TOLERANCE_S) throw invalid()
    if (method === 'private_key_jwt') {
      const jti = payload.jti
      if (typeof jti !== 'string' || jti === '' || jti.length > 256) throw invalid()
      // Kept until exp plus the tolerance jose allowed past it.
      if (!await this.#replay.claim(client.id, jti, (exp + CLOCK_TOLERANCE_S) * 1000)) throw invalid()
    }
    return client
  }

  #keysFor (client: Client, method: Method): JWTVerifyGetKey {
    if (method === 'federated') {
      const trust = client.federated as FederatedTrust
      if (trust.jwks !== undefined) return this.#localKeys(trust, trust.jwks)
      if (trust.jwksUri !== undefined) return this.#remoteKeys(trust.jwksUri)
      return async (header, token) => (await this.#remoteKeys(await this.#discover(trust.issuer)))(header, token)
    }
    if (client.jwks !== undefined) return this.#localKeys(client, client.jwks)
    return this.#remoteKeys(client.jwksUri as string)
  }

  #localKeys (owner: object, jwks: JSONWebKeySet): JWTVerifyGetKey {
    let keys = this.#local.get(owner)
    if (keys === undefined) {
      // `EdDSA` and `Ed25519` (RFC 9864) name one algorithm for an Ed25519 key; jose matches
      // a JWK's alg literally, so such a key is left to match either header.
      keys = createLocalJWKSet({ keys: jwks.keys.map(k => k.crv === 'Ed25519' && (k.alg === 'EdDSA' || k.alg === 'Ed25519') ? { ...k, alg: undefined } : k) })
      this.#local.set(owner, keys)
    }
    return keys
  }

  #remoteKeys (url: string): JWTVerifyGetKey {
    let jwks = this.#remote.get(url)
    if (jwks === undefined) {
      jwks = new RemoteJwks(url, { clock: this.#clock, fetch: this.#fetch })
      this.#remote.set(url, jwks)
    }
    return jwks.getKey
  }

  /** The issuer's `jwks_uri` from its OIDC discovery document (OIDC Discovery §4), cached. */
  async #discover (issuer: string): Promise<string> {
    let entry = this.#discovered.get(issuer)
    if (entry === undefined) {
      entry = { failedUntil: Number.NEGATIVE_INFINITY }
      this.#discovered.set(issuer, entry)
    }
    if (entry.jwksUri !== undefined) return entry.jwksUri
    if (this.#clock.now() < entry.failedUntil) throw new JwksUnavailableError('issuer discovery failed recently')
    const current = entry
    current.pending ??= this.#fetchDiscovery(issuer).then((uri) => {
      current.jwksUri = uri
      return uri
    }, (err: unknown) => {
      current.failedUntil = this.#clock.now() + DISCOVERY_FAILURE_BACKOFF_MS
      throw err
    }).finally(() => { current.pending = undefined })
    return await current.pending
  }

  async #fetchDiscovery (issuer: string): Promise<string> {
    const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`
    let doc: unknown
    try {
      const response = await this.#fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(DISCOVERY_TIMEOUT_MS), headers: { accept: 'application/json' } })
      const text = await response.text()
      if (response.status !== 200 || text.length > MAX_DISCOVERY_BYTES) throw new Error(`discovery answered HTTP ${response.status}`)
      doc = JSON.parse(text)
    } catch (err) {
      throw new JwksUnavailableError('issuer discovery failed', { cause: err })
    }
    const { issuer: named, jwks_uri: jwksUri } = (doc ?? {}) as { issuer?: unknown, jwks_uri?: unknown }
    // OIDC Discovery §4.3: the document must name the issuer it was fetched for.
    if (named !== issuer || typeof jwksUri !== 'string') throw new JwksUnavailableError('discovery document does not match the issuer')
    try {
      const u = new URL(jwksUri)
      if (u.protocol !== 'https:' && u.origin !== new URL(issuer).origin) throw new Error('insecure jwks_uri')
    } catch (err) {
      throw new JwksUnavailableError('discovery document names an unusable jwks_uri', { cause: err })
    }
    return jwksUri
  }
}
