/**
 * OAuth clients (`CLIENTS_FILE`), edited by `latchkey clients add`:
 *
 *   {
 *     "clients": [
 *       {
 *         "id": "svc-a",                          // client_id: 1..64 of A-Z a-z 0-9 . _ ~ -
 *         "secret": "hs256$<salt>$<digest>",       // never the secret itself
 *         "scope": "internal:read",               // RFC 6749 §3.3, the most it may ask for
 *         "audiences": ["latchkey-api"],          // non-empty; what `audience`/`resource` may pick
 *         "grants": ["client_credentials"],       // subset of GRANT_TYPES, non-empty
 *         "disabled": true,                        // optional: refused at once (invalid_client)
 *         "previous_secret": "hs256$<salt>$<digest>",       // optional, with the next key:
 *         "previous_secret_expires_at": "2026-12-05T05:00:00.000Z"  // the old secret until then
 *       }
 *     ]
 *   }
 *
 * Optional, for service-to-service without a shared secret (identity/client-keys.ts):
 *   "jwks": {"keys": [...]} or "jwks_uri": "https://..."   // private_key_jwt (RFC 7523)
 *   "federated": {"issuer": "https://...", "subject": "system:serviceaccount:ns:name",
 *                 "jwks_uri"?: "...", "jwks"?: {...}}       // workload identity
 *   "exchange": {"audiences": ["billing"]}                  // token exchange (RFC 8693) into these
 * A client with keys or a federated trust may have no "secret" at all.
 *
 * A native or first-party app is a public client (RFC 6749 §2.1): it holds no secret, signs
 * the person in with authorization code + PKCE (RFC 8252, RFC 9700 §2.1.1) and refreshes
 * with its client_id alone (the families' rotation and reuse detection protect its tokens):
 *   {"id": "notes-app", "public": true, "scope": "notes:read notes:write",
 *    "audiences": ["latchkey-api"], "grants": ["authorization_code", "refresh_token"],
 *    "redirect_uris": ["http://127.0.0.1/callback", "https://app.example.com/oauth/callback"]}
 * Redirect URIs: a loopback IP literal over http (any port matches, RFC 8252 §7.3; never
 * `localhost`, §8.3), an https URL the app claims (§7.2), or a private-use scheme in
 * reverse-domain form (§7.1); no fragment (RFC 6749 §3.1.2).
 *
 * Secrets are 256 random bits (base64url, 43 chars), shown once by `addClient`. Being
 * uniformly random they cannot be guessed offline, so a slow password hash would buy
 * nothing and cost a CPU-bound KDF per token request; a keyed fast hash suffices:
 * `hs256$` + base64url(salt, 32 random bytes) + `$` + base64url(HMAC-SHA256(salt, secret)).
 * Comparison is constant-time, and an unknown client id is compared against a dummy so
 * it costs the same as a wrong secret.
 *
 * A service presents the same secret on every token request, so the directory remembers,
 * per client and per stored hash, a digest of the secret it last accepted (SHA-256 under a
 * key made at start, in memory only): a repeat is two constant-time compares of digests
 * instead of two HMACs (about 3 µs of a client_credentials token). A secret not
 * remembered takes the full path, so a wrong one costs what it always did; a reload
 * starts from nothing, and the previous secret's expiry is checked on every call.
 *
 * `clients rotate-secret` moves the current hash to `previous_secret` with an expiry (the
 * overlap, 24 h by default) and stores a new one: both authenticate until the expiry, so
 * callers can be redeployed with the new secret without an outage; then only the new one.
 *
 * `:` is kept out of ids because HTTP Basic (RFC 6749 §2.3.1, RFC 7617) splits on it and
 * many clients do not form-encode the id first.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { ConfigError } from '#shared/errors.js'
import type { JSONWebKeySet } from 'jose'
import { type Clock, systemClock } from '#shared/clock.js'
import { parseJsonConfig } from '#shared/config-file.js'
import { readJsonFile, writeFileAtomic } from './json-file.js'
import { checkKeyUrl, parseFederatedTrust, parsePublicJwks, serialiseFederatedTrust, type FederatedTrust } from './client-keys.js'
import { formatScope, parseScope } from './scope.js'

const VARIABLE = 'CLIENTS_FILE'
export const GRANT_TYPES = ['client_credentials', 'password', 'refresh_token', 'authorization_code'] as const
/** What a public client may use: it cannot keep a secret, so no grant that needs one (RFC 9700 §2.4: no password). */
const PUBLIC_CLIENT_GRANTS: readonly string[] = ['authorization_code', 'refresh_token']
export type GrantType = typeof GRANT_TYPES[number]
/** 256 bits, as for refresh tokens (docs/contract.md "Tokens"). */
export const CLIENT_SECRET_BYTES = 32
const SALT_BYTES = 32
const DIGEST_BYTES = 32
const HASH_FORMAT = /^hs256\$([A-Za-z0-9_-]{43})\$([A-Za-z0-9_-]{43})$/
const ID_FORMAT = /^[A-Za-z0-9._~-]{1,64}$/
const AUDIENCE_FORMAT = /^[\x21-\x7E]{1,256}$/
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/
const CLIENT_KEYS = new Set([
  'id', 'secret', 'scope', 'audiences', 'grants', 'jwks', 'jwks_uri', 'federated', 'exchange', 'disabled', 'previous_secret', 'previous_secret_expires_at',
  'public', 'redirect_uris'
])
const MAX_REDIRECT_URI_CHARS = 2048
/** How long `rotate-secret` keeps the old secret working by default. */
export const SECRET_OVERLAP_MS = 24 * 3600_000
/** Presented ids/secrets longer than this are refused cheaply (the dummy compare still runs). */
const MAX_INPUT_LENGTH = 256

export interface Client {
  readonly id: string
  /** The scopes it may be granted (RFC 6749 §3.3 tokens). */
  readonly scope: string[]
  readonly audiences: string[]
  /** A subset of GRANT_TYPES. */
  readonly grants: string[]
  /** Public keys for `private_key_jwt`: inline, or where to fetch them. */
  readonly jwks?: JSONWebKeySet
  readonly jwksUri?: string
  /** Workload identity: the external issuer and subject that stand for this client. */
  readonly federated?: FederatedTrust
  /** RFC 8693: the audiences this client may exchange a user's token into. */
  readonly exchangeAudiences?: readonly string[]
  /** A public client (RFC 6749 §2.1): identified by its client_id alone, never authenticated. */
  readonly public?: true
  /** Where the authorization endpoint may send its code (authorization_code clients). */
  readonly redirectUris?: readonly string[]
}

export interface StoredClient extends Client {
  /** `hs256$<salt>$<digest>`; absent for clients that authenticate with keys only. */
  readonly secret?: string
  /** Kept in the file, unknown to the gateway (absent means enabled). */
  readonly disabled?: boolean
  /** The secret before the last rotation, accepted until `expiresAt` (ms since the epoch). */
  readonly previousSecret?: { readonly hash: string, readonly expiresAt: number }
}

/** How a client without a secret proves itself: exactly one of these. */
export type ClientKeys =
  | { readonly jwks: JSONWebKeySet }
  | { readonly jwksUri: string }
  | { readonly federated: FederatedTrust }

export interface NewClient {
  readonly id: string
  /** Space-separated scope tokens. */
  readonly scope: string
  readonly audiences: readonly string[]
  /** Default: ['client_credentials']. */
  readonly grants?: readonly string[]
  readonly exchangeAudiences?: readonly string[]
  /** For authorization_code: where codes may be sent. */
  readonly redirectUris?: readonly string[]
}

export interface AddedClient {
  readonly client: Client
  /** The plaintext secret: returned here once, stored nowhere. */
  readonly secret: string
}

interface SecretHash {
  readonly salt: Buffer
  readonly digest: Buffer
}

function isGrantType (value: unknown): value is GrantType {
  return typeof value === 'string' && (GRANT_TYPES as readonly string[]).includes(value)
}

function hmac (salt: Buffer, secret: string): Buffer {
  return createHmac('sha256', salt).update(secret, 'utf8').digest()
}

/** Parse `hs256$<salt>$<digest>`, or null. */
function parseSecretHash (value: string): SecretHash | null {
  const m = HASH_FORMAT.exec(value)
  if (m === null) return null
  const salt = Buffer.from(m[1] as string, 'base64url')
  const digest = Buffer.from(m[2] as string, 'base64url')
  if (salt.length !== SALT_BYTES || digest.length !== DIGEST_BYTES) return null
  return { salt, digest }
}

export function hashClientSecret (secret: string): string {
  const salt = randomBytes(SALT_BYTES)
  return `hs256$${salt.toString('base64url')}$${hmac(salt, secret).toString('base64url')}`
}

/** `previous_secret` and `previous_secret_expires_at` come together or not at all. */
function parsePrevious (rec: Record<string, unknown>, fail: (problem: string) => never, at: string): StoredClient['previousSecret'] {
  const hash = rec.previous_secret
  const expires = rec.previous_secret_expires_at
  if (hash === undefined && expires === undefined) return undefined
  if (typeof hash !== 'string' || parseSecretHash(hash) === null) fail(`${at}.previous_secret: expected hs256$<salt>$<digest>`)
  const expiresAt = typeof expires === 'string' && ISO_INSTANT.test(expires) ? Date.parse(expires) : Number.NaN
  if (Number.isNaN(expiresAt)) fail(`${at}.previous_secret_expires_at: expected an ISO 8601 UTC instant like 2026-12-05T05:00:00.000Z`)
  return { hash, expiresAt }
}

function parseClients (path: string, data: unknown): StoredClient[] {
  function fail (problem: string): never {
    throw new ConfigError(VARIABLE, `${path}: ${problem}`)
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data) || !('clients' in data) || !Array.isArray(data.clients)) {
    fail('expected an object {"clients": [...]}')
  }
  const entries: unknown[] = data.clients
  const clients: StoredClient[] = []
  const ids = new Set<string>()
  for (const [i, entry] of entries.entries()) {
    const at = `clients[${i}]`
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`${at}: expected an object`)
    const rec = entry as Record<string, unknown>
    for (const key of Object.keys(rec)) if (!CLIENT_KEYS.has(key)) fail(`${at}: unknown key "${key}"`)
    const { id, secret, scope, audiences, grants, disabled } = rec
    if (typeof id !== 'string' || !ID_FORMAT.test(id)) fail(`${at}.id: expected 1..64 of A-Z a-z 0-9 . _ ~ -`)
    if (ids.has(id)) fail(`${at}.id: duplicate id "${id}"`)
    const keyFields = parseKeyFields(rec, at, fail)
    const keyed = keyFields.jwks !== undefined || keyFields.jwksUri !== undefined || keyFields.federated !== undefined
    if (rec.public !== undefined && rec.public !== true) fail(`${at}.public: expected true (or leave it out)`)
    const isPublic = rec.public === true
    if (isPublic && (secret !== undefined || keyed || keyFields.exchangeAudiences !== undefined)) fail(`${at}: a public client has no secret, no keys and no exchange`)
    // Never echoed: it may be a plaintext secret pasted by mistake.
    if (!isPublic && (secret !== undefined || !keyed) && (typeof secret !== 'string' || parseSecretHash(secret) === null)) {
      fail(`${at}.secret: expected hs256$<salt>$<digest> (use "latchkey clients add"), or give jwks, jwks_uri or federated instead`)
    }
    const tokens = typeof scope === 'string' ? parseScope(scope) : null
    if (tokens === null) fail(`${at}.scope: expected space-separated RFC 6749 scope tokens`)
    if (!Array.isArray(audiences) || audiences.length === 0 || !audiences.every(a => typeof a === 'string' && AUDIENCE_FORMAT.test(a))) {
      fail(`${at}.audiences: expected a non-empty array of audience strings`)
    }
    if (!Array.isArray(grants) || grants.length === 0 || !grants.every(isGrantType)) {
      fail(`${at}.grants: expected a non-empty array of ${GRANT_TYPES.join(', ')}`)
    }
    const trust = keyFields.federated
    // One issuer+subject names one client: the token endpoint finds the client by them.
    if (trust !== undefined && clients.some(c => c.federated?.issuer === trust.issuer && c.federated.subject === trust.subject)) {
      fail(`${at}.federated: another client already trusts this issuer for this subject`)
    }
    if (disabled !== undefined && typeof disabled !== 'boolean') fail(`${at}.disabled: expected true or false`)
    if (isPublic && !grants.every(g => PUBLIC_CLIENT_GRANTS.includes(g))) fail(`${at}.grants: a public client may only use ${PUBLIC_CLIENT_GRANTS.join(', ')}`)
    const redirectUris = parseRedirectUris(rec.redirect_uris, `${at}.redirect_uris`, fail)
    if (grants.includes('authorization_code') && redirectUris === undefined) fail(`${at}.redirect_uris: authorization_code needs at least one`)
    const previousSecret = parsePrevious(rec, fail, at)
    ids.add(id)
    clients.push({
      id, ...(secret === undefined ? {} : { secret: secret as string }), scope: tokens, audiences: [...new Set<string>(audiences)], grants: [...new Set<string>(grants)], ...keyFields,
      ...(isPublic ? { public: true as const } : {}),
      ...(redirectUris === undefined ? {} : { redirectUris }),
      ...(disabled === true ? { disabled } : {}),
      ...(previousSecret === undefined ? {} : { previousSecret })
    })
  }
  return clients
}

function isLoopbackIp (hostname: string): boolean {
  return hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname)
}

/** One registered redirect URI, or a reason it is refused (RFC 8252 §7, RFC 6749 §3.1.2). */
function checkRedirectUri (raw: unknown): string | { problem: string } {
  if (typeof raw !== 'string' || raw === '' || raw.length > MAX_REDIRECT_URI_CHARS) return { problem: 'expected an absolute URI' }
  let url: URL
  try { url = new URL(raw) } catch { return { problem: `${JSON.stringify(raw)} is not an absolute URI` } }
  if (url.hash !== '' || raw.includes('#')) return { problem: `${JSON.stringify(raw)} has a fragment (RFC 6749 §3.1.2)` }
  if (url.protocol === 'https:') return raw
  if (url.protocol === 'http:') {
    if (isLoopbackIp(url.hostname)) return raw
    return { problem: `${JSON.stringify(raw)}: http only on a loopback IP literal (127.0.0.1 or [::1]; not localhost, RFC 8252 §8.3)` }
  }
  // RFC 8252 §7.1: a private-use scheme, in reverse-domain form so apps do not collide.
  if (/^[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+:$/.test(url.protocol)) return raw
  return { problem: `${JSON.stringify(raw)}: expected https, http on a loopback IP, or a reverse-domain private-use scheme` }
}

function parseRedirectUris (v: unknown, at: string, fail: (problem: string) => never): string[] | undefined {
  if (v === undefined) return undefined
  if (!Array.isArray(v) || v.length === 0) return fail(`${at}: expected a non-empty array of URIs`)
  return [...new Set(v.map((raw) => {
    const checked = checkRedirectUri(raw)
    return typeof checked === 'string' ? checked : fail(`${at}: ${checked.problem}`)
  }))]
}

/**
 * Does `presented` name the registered redirect URI `registered`? Exact string comparison
 * (RFC 9700 §4.1.3), except that a loopback IP redirect matches on any port: a native app
 * listens on whatever port the OS gives it (RFC 8252 §7.3).
 */
export function redirectUriMatches (registered: string, presented: string): boolean {
  if (registered === presented) return true
  let r: URL, p: URL
  try { r = new URL(registered); p = new URL(presented) } catch { return false }
  if (r.protocol !== 'http:' || !isLoopbackIp(r.hostname)) return false
  if (p.hash !== '' || presented.includes('#')) return false
  return p.protocol === 'http:' && p.hostname === r.hostname && p.pathname === r.pathname && p.search === r.search &&
    p.username === '' && p.password === ''
}

type KeyFields = Pick<Client, 'jwks' | 'jwksUri' | 'federated' | 'exchangeAudiences'>

/** The optional key and exchange fields of one entry (only those present). */
function parseKeyFields (rec: Record<string, unknown>, at: string, fail: (problem: string) => never): KeyFields {
  const out: { -readonly [K in keyof KeyFields]: KeyFields[K] } = {}
  if (rec.jwks !== undefined && rec.jwks_uri !== undefined) fail(`${at}: give jwks or jwks_uri, not both`)
  if (rec.jwks !== undefined) {
    const jwks = parsePublicJwks(rec.jwks)
    if (typeof jwks === 'string') fail(`${at}.jwks: ${jwks}`)
    out.jwks = jwks
  }
  if (rec.jwks_uri !== undefined) {
    const uri = checkKeyUrl(rec.jwks_uri)
    if (uri === null) fail(`${at}.jwks_uri: expected an https URL (http only on localhost)`)
    out.jwksUri = uri
  }
  if (rec.federated !== undefined) {
    const trust = parseFederatedTrust(rec.federated)
    if (typeof trust === 'string') fail(`${at}.federated: ${trust}`)
    out.federated = trust
  }
  if (rec.exchange !== undefined) {
    const ex = rec.exchange as { audiences?: unknown } | null
    const list = typeof ex === 'object' && ex !== null && !Array.isArray(ex) && Object.keys(ex).every(k => k === 'audiences') ? ex.audiences : undefined
    if (!Array.isArray(list) || list.length === 0 || !list.every(a => typeof a === 'string' && AUDIENCE_FORMAT.test(a))) {
      fail(`${at}.exchange: expected {"audiences": [non-empty list of audience strings]}`)
    }
    out.exchangeAudiences = [...new Set<string>(list as string[])]
  }
  return out
}

/** Every client in `path`, validated; any problem is one ConfigError('CLIENTS_FILE', ...). */
export async function readClientsFile (path: string): Promise<StoredClient[]> {
  return parseClients(path, await readJsonFile(path, VARIABLE))
}

/** The clients in `text` (the content of `path`), validated whole: what a reload applies. */
export function parseClientsText (text: string, path: string): StoredClient[] {
  return parseClients(path, parseJsonConfig(text, path, VARIABLE))
}

function serialise (clients: readonly StoredClient[]): string {
  const records = clients.map(c => ({
    id: c.id,
    ...(c.secret === undefined ? {} : { secret: c.secret }),
    scope: formatScope(c.scope),
    audiences: c.audiences,
    grants: c.grants,
    ...(c.jwks === undefined ? {} : { jwks: c.jwks }),
    ...(c.jwksUri === undefined ? {} : { jwks_uri: c.jwksUri }),
    ...(c.federated === undefined ? {} : { federated: serialiseFederatedTrust(c.federated) }),
    ...(c.exchangeAudiences === undefined ? {} : { exchange: { audiences: c.exchangeAudiences } }),
    ...(c.public === true ? { public: true } : {}),
    ...(c.redirectUris === undefined ? {} : { redirect_uris: c.redirectUris }),
    ...(c.disabled === true ? { disabled: true } : {}),
    ...(c.previousSecret === undefined
      ? {}
      : { previous_secret: c.previousSecret.hash, previous_secret_expires_at: new Date(c.previousSecret.expiresAt).toISOString() })
  }))
  return `${JSON.stringify({ clients: records }, null, 2)}\n`
}

/**
 * Register a client in `path` (created if absent, mode 0600) with a fresh secret, and
 * return that secret: the only time it exists in plaintext.
 */
export async function addClient (path: string, input: NewClient): Promise<AddedClient> {
  const secret = randomBytes(CLIENT_SECRET_BYTES).toString('base64url')
  const client = await insertClient(path, input, { secret: hashClientSecret(secret) })
  return { client, secret }
}

/**
 * Register a public client in `path` (a native app: no secret, authorization code + PKCE;
 * grants default to authorization_code and refresh_token).
 */
export async function addPublicClient (path: string, input: NewClient): Promise<Client> {
  return await insertClient(path, { ...input, grants: input.grants ?? PUBLIC_CLIENT_GRANTS }, { public: true })
}

/**
 * Register a client in `path` that proves itself with keys (`private_key_jwt`) or an
 * external issuer's token (workload identity): no secret exists for it at all.
 */
export async function addKeyClient (path: string, input: NewClient & { readonly keys: ClientKeys }): Promise<Client> {
  const keys: Record<string, unknown> = 'jwks' in input.keys
    ? { jwks: input.keys.jwks }
    : 'jwksUri' in input.keys ? { jwks_uri: input.keys.jwksUri } : { federated: serialiseFederatedTrust(input.keys.federated) }
  const fields = parseKeyFields(keys, 'keys', (problem) => { throw new ConfigError('keys', problem) })
  return await insertClient(path, input, fields)
}

async function insertClient (path: string, input: NewClient, credentials: KeyFields & { secret?: string, public?: true }): Promise<Client> {
  if (typeof input.id !== 'string' || !ID_FORMAT.test(input.id)) throw new ConfigError('id', 'expected 1..64 of A-Z a-z 0-9 . _ ~ -')
  const scope = typeof input.scope === 'string' ? parseScope(input.scope) : null
  if (scope === null) throw new ConfigError('scope', 'expected space-separated RFC 6749 scope tokens (printable ASCII, no " or \\)')
  const audiences = [...new Set(input.audiences)]
  if (audiences.length === 0) throw new ConfigError('audience', 'at least one audience is required')
  const badAudience = audiences.find(a => typeof a !== 'string' || !AUDIENCE_FORMAT.test(a))
  if (badAudience !== undefined) throw new ConfigError('audience', `"${String(badAudience)}" must be 1..256 printable ASCII characters without spaces`)
  const grants = [...new Set(input.grants ?? ['client_credentials'])]
  if (grants.length === 0) throw new ConfigError('grant', 'at least one grant type is required')
  const badGrant = grants.find(g => !isGrantType(g))
  if (badGrant !== undefined) throw new ConfigError('grant', `"${String(badGrant)}" is not one of ${GRANT_TYPES.join(', ')}`)
  const exchange = input.exchangeAudiences === undefined
    ? {}
    : parseKeyFields({ exchange: { audiences: input.exchangeAudiences } }, 'exchange', (problem) => { throw new ConfigError('exchange-audience', problem) })

  const data = await readJsonFile(path, VARIABLE, true)
  const clients = data === undefined ? [] : parseClients(path, data)
  if (clients.some(c => c.id === input.id)) throw new ConfigError(VARIABLE, `${path}: a client with id "${input.id}" already exists`)
  const { secret, ...keyFields } = credentials
  const client: Client = {
    id: input.id, scope, audiences, grants, ...keyFields, ...exchange, ...(input.redirectUris === undefined ? {} : { redirectUris: [...new Set(input.redirectUris)] })
  }
  const text = serialise([...clients, { ...client, ...(secret === undefined ? {} : { secret }) }])
  // The file's own validation, so the CLI never writes what the gateway would refuse
  // (redirect URIs, what a public client may use, authorization_code without a redirect).
  parseClients(path, JSON.parse(text))
  await writeFileAtomic(path, text, VARIABLE)
  return client
}

export interface ClientSummary extends Client {
  readonly disabled?: boolean
  /** When the secret before the last rotation stops working (ms since the epoch), if one still does. */
  readonly previousSecretExpiresAt?: number
}

function summary (c: StoredClient): ClientSummary {
  const { secret: _secret, previousSecret, ...client } = c
  return { ...client, ...(previousSecret === undefined ? {} : { previousSecretExpiresAt: previousSecret.expiresAt }) }
}

/** Read-modify-write of one existing client: `change` returns the new record, or null to delete it. */
async function editClient (path: string, id: string, change: (client: StoredClient) => StoredClient | null): Promise<ClientSummary> {
  const clients = await readClientsFile(path)
  const index = clients.findIndex(c => c.id === id)
  const current = clients[index]
  if (current === undefined) throw new ConfigError(VARIABLE, `${path}: no client with id "${id}"`)
  const next = change(current)
  const updated = next === null ? clients.filter((_, i) => i !== index) : clients.map((c, i) => i === index ? next : c)
  await writeFileAtomic(path, serialise(updated), VARIABLE)
  return summary(next ?? current)
}

/** Every client in the file, without secrets, in file order. */
export async function listClients (path: string): Promise<ClientSummary[]> {
  return (await readClientsFile(path)).map(summary)
}

export async function removeClient (path: string, id: string): Promise<ClientSummary> {
  return await editClient(path, id, () => null)
}

export async function setClientDisabled (path: string, id: string, disabled: boolean): Promise<ClientSummary> {
  return await editClient(path, id, ({ disabled: _was, ...client }) => disabled ? { ...client, disabled: true } : client)
}

/**
 * A new secret for `id` (returned once, like `addClient`'s); the current one keeps working
 * for `overlapMs` from `now` (0: stops at once). A secret still in its overlap from an
 * earlier rotation is dropped: only one previous secret is kept. A key-only client gets
 * its first secret (nothing to overlap).
 */
export async function rotateClientSecret (path: string, id: string, overlapMs = SECRET_OVERLAP_MS, now = Date.now()): Promise<{ client: ClientSummary, secret: string }> {
  if (!Number.isSafeInteger(overlapMs) || overlapMs < 0) throw new ConfigError('overlap', 'must be a non-negative duration')
  const secret = randomBytes(CLIENT_SECRET_BYTES).toString('base64url')
  const client = await editClient(path, id, ({ previousSecret: _dropped, ...current }) => ({
    ...current,
    secret: hashClientSecret(secret),
    ...(overlapMs === 0 || current.secret === undefined ? {} : { previousSecret: { hash: current.secret, expiresAt: now + overlapMs } })
  }))
  return { client, secret }
}

interface Entry {
  readonly client: Client
  /** Absent for key-only clients: no secret ever authenticates them. */
  readonly hash: SecretHash | undefined
  readonly previous?: { readonly hash: SecretHash, readonly expiresAt: number }
  /** Digests (ClientDirectory's #fingerprint) of the secrets `hash` and `previous.hash` last accepted. */
  readonly accepted: { current?: Buffer, previous?: Buffer }
}

function matches (hash: SecretHash, given: string): boolean {
  return timingSafeEqual(hmac(hash.salt, given), hash.digest)
}

/** The entries the gateway accepts: a disabled client does not exist for it (client_credentials: invalid_client at once). */
function entriesOf (clients: readonly StoredClient[]): ReadonlyMap<string, Entry> {
  return new Map(clients.filter(c => c.disabled !== true).map(c => {
    const hash = c.secret === undefined ? undefined : parseSecretHash(c.secret)
    if (hash === null) throw new ConfigError(VARIABLE, `client "${c.id}": secret is not hs256$<salt>$<digest>`)
    const previousHash = c.previousSecret === undefined ? null : parseSecretHash(c.previousSecret.hash)
    const client: Client = Object.freeze({
      id: c.id,
      scope: Object.freeze([...c.scope]) as string[],
      audiences: Object.freeze([...c.audiences]) as string[],
      grants: Object.freeze([...c.grants]) as string[],
      ...(c.jwks === undefined ? {} : { jwks: c.jwks }),
      ...(c.jwksUri === undefined ? {} : { jwksUri: c.jwksUri }),
      ...(c.federated === undefined ? {} : { federated: Object.freeze({ ...c.federated }) }),
      ...(c.exchangeAudiences === undefined ? {} : { exchangeAudiences: Object.freeze([...c.exchangeAudiences]) }),
      ...(c.public === true ? { public: true as const } : {}),
      ...(c.redirectUris === undefined ? {} : { redirectUris: Object.freeze([...c.redirectUris]) })
    })
    const entry: Entry = previousHash === null || c.previousSecret === undefined
      ? { client, hash, accepted: {} }
      : { client, hash, previous: { hash: previousHash, expiresAt: c.previousSecret.expiresAt }, accepted: {} }
    return [c.id, entry]
  }))
}

/**
 * The clients the gateway accepts. A reloaded clients file is put in force with
 * `replace()`: the directory keeps its identity, so the routes holding it see the change
 * on their next call.
 */
export class ClientDirectory {
  #byId: ReadonlyMap<string, Entry>
  readonly #clock: Clock
  /** Stands in for an unknown id (and an absent previous secret) so that every call costs two HMACs and two compares. */
  readonly #dummy: SecretHash = { salt: randomBytes(SALT_BYTES), digest: randomBytes(DIGEST_BYTES) }
  /**
   * A SHA-256 state that has taken in the key of the accepted secrets' digests (made here,
   * never stored): each fingerprint continues a copy of it instead of hashing the key again.
   */
  readonly #fingerprintKeyed = createHash('sha256').update(randomBytes(SALT_BYTES))
  /** Stands in for a digest not remembered (yet), so that a remembered one is not told apart by time. */
  readonly #noDigest = randomBytes(DIGEST_BYTES)

  private constructor (clients: readonly StoredClient[], clock: Clock) {
    this.#byId = entriesOf(clients)
    this.#clock = clock
  }

  /** From the clients file; no file means no clients (client_credentials is then refused for all). */
  static async load (file: string | undefined, clock: Clock = systemClock): Promise<ClientDirectory> {
    return new ClientDirectory(file === undefined ? [] : await readClientsFile(file), clock)
  }

  static fromClients (clients: readonly StoredClient[], clock: Clock = systemClock): ClientDirectory {
    return new ClientDirectory(clients, clock)
  }

  get size (): number {
    return this.#byId.size
  }

  get (id: string): Client | undefined {
    return this.#byId.get(id)?.client
  }

  /** Put a reloaded clients file in force, in one assignment: everything holding this directory sees it at once. */
  replace (clients: readonly StoredClient[]): void {
    this.#byId = entriesOf(clients)
  }

  /** The public client named `id` (RFC 6749 §2.1: identified, not authenticated), if any. */
  getPublic (id: string | undefined): Client | undefined {
    const client = id === undefined ? undefined : this.#byId.get(id)?.client
    return client?.public === true ? client : undefined
  }

  /** The client that trusts `issuer` to vouch for `subject` (workload identity), if any. */
  findFederated (issuer: string, subject: string): Client | undefined {
    for (const { client } of this.#byId.values()) {
      if (client.federated?.issuer === issuer && client.federated.subject === subject) return client
    }
    return undefined
  }

  /** Every scope some client may be granted (RFC 8414 `scopes_supported`). */
  scopes (): string[] {
    return [...new Set([...this.#byId.values()].flatMap(e => e.client.scope))]
  }

  /**
   * The client if `secret` is its secret (or its previous one, before that one's expiry),
   * else null; constant-time, never throws on input.
   */
  authenticate (id: unknown, secret: unknown): Client | null {
    const entry = typeof id === 'string' && id.length <= MAX_INPUT_LENGTH ? this.#byId.get(id) : undefined
    const given = typeof secret === 'string' && secret.length <= MAX_INPUT_LENGTH ? secret : undefined
    const seen = this.#fingerprint(given ?? '')
    // A secret accepted before: both remembered digests are always compared.
    const knownCurrent = timingSafeEqual(seen, entry?.accepted.current ?? this.#noDigest)
    const knownPrevious = timingSafeEqual(seen, entry?.accepted.previous ?? this.#noDigest)
    if (entry !== undefined && given !== undefined) {
      if (knownCurrent) return entry.client
      if (knownPrevious && this.#previousLive(entry)) return entry.client
    }
    // Both compares always run: which one matched, or whether there was a previous secret, is not timed.
    const current = matches(entry?.hash ?? this.#dummy, given ?? '') && entry?.hash !== undefined
    const previous = matches(entry?.previous?.hash ?? this.#dummy, given ?? '') && this.#previousLive(entry)
    if (entry === undefined || given === undefined || !(current || previous)) return null
    // Kept in a buffer of its own: `seen` is a slice of Node's shared pool, which it would pin.
    const remembered = Buffer.alloc(DIGEST_BYTES)
    seen.copy(remembered)
    if (current) entry.accepted.current = remembered
    else entry.accepted.previous = remembered
    return entry.client
  }

  #previousLive (entry: Entry | undefined): boolean {
    return entry?.previous !== undefined && this.#clock.now() < entry.previous.expiresAt
  }

  /**
   * SHA-256(key || given), read out as a binary (latin1) string and copied into a pooled
   * Buffer: a Buffer from digest() comes with an ArrayBuffer of its own, which cost a third
   * of the fingerprint (callgrind).
   */
  #fingerprint (given: string): Buffer {
    return Buffer.from(this.#fingerprintKeyed.copy().update(given, 'utf8').digest('binary'), 'binary')
  }
}
