/**
 * Upstream OpenID providers (`PROVIDERS_FILE`, or `PROVIDERS_JSON` inline for `latchkey dev`
 * and compose stacks): who may sign in through which identity provider, and with which
 * latchkey scopes. Validated whole (one bad entry refuses the file) and frozen.
 *
 *   {
 *     "providers": [
 *       {
 *         "id": "keycloak",                        // URL segment: 1..32 of a-z 0-9 -
 *         "name": "Keycloak",                      // button label (default: the id)
 *         "issuer": "https://kc.example.com/realms/acme",  // https, or http on loopback
 *         "client_id": "latchkey",
 *         "client_secret": "…",                    // or "private_key_jwt": {"jwk": {…private JWK…}}
 *         "token_endpoint_auth_method": "client_secret_basic",  // or client_secret_post, private_key_jwt
 *         "scopes": ["openid", "email", "profile"],
 *         "id_token_alg": "RS256",                 // the one alg accepted on ID and logout tokens
 *         "userinfo": false,                       // also read the UserInfo endpoint's claims
 *         "user": { "id_claim": "sub", "id_prefix": "keycloak:", "name_claim": "name", "groups_claim": "groups" },
 *         "idp_refresh": {                         // optional: bind each family to the IdP's refresh token
 *           "enabled": true,                       //   (default true when the object is given)
 *           "check_interval_seconds": 300,         //   ask the IdP again at most this often (1..86400)
 *           "offline_access": true,                //   request scope offline_access + prompt=consent (OIDC Core §11)
 *           "authorization_params": {"access_type": "offline"}  // extra query parameters (Google)
 *         },
 *         "allow": [                               // default deny: a user no rule matches is refused
 *           { "group": "engineering", "scopes": ["notes:read", "notes:write"] },
 *           { "email_domain": "example.com", "scopes": ["notes:read"] },
 *           { "email": "ops@example.com", "scopes": ["latchkey:admin"] }
 *         ]
 *       }
 *     ]
 *   }
 *
 * Email rules match only an `email_verified: true` claim (OIDC Core §5.1): an unverified
 * address is whatever the user typed. The latchkey user id is `id_prefix` + the `id_claim`
 * value; the default prefix is `<id>:` so a federated user never collides with a users-file
 * name.
 */
import { ConfigError } from '#shared/errors.js'
import { parseJsonConfig } from '#shared/config-file.js'
import { deepFreeze } from '#shared/config.js'
import { formatScope, parseScope } from '../scope.js'

export const PROVIDER_ID_FORMAT = /^[a-z0-9][a-z0-9-]{0,31}$/
export const TOKEN_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'] as const
export type TokenAuthMethod = typeof TOKEN_AUTH_METHODS[number]
/** JWS algorithms an ID token may be pinned to (RFC 7518 §3.1, RFC 8037); never `none` or HMAC. */
export const ID_TOKEN_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const
export const DEFAULT_ID_TOKEN_ALG = 'RS256'
export const DEFAULT_PROVIDER_SCOPES: readonly string[] = ['openid', 'email', 'profile']
/** `idp_refresh.check_interval_seconds`: how stale the IdP's word on an account may get, by default. */
export const DEFAULT_IDP_REFRESH_CHECK_INTERVAL_S = 300
export const MIN_IDP_REFRESH_CHECK_INTERVAL_S = 1
export const MAX_IDP_REFRESH_CHECK_INTERVAL_S = 86_400
/** Authorization parameters latchkey sets itself: `authorization_params` may not replace them. */
const RESERVED_AUTHORIZATION_PARAMS = new Set([
  'client_id', 'redirect_uri', 'response_type', 'scope', 'state', 'nonce', 'code_challenge', 'code_challenge_method', 'response_mode', 'request', 'request_uri'
])

/**
 * A family bound to the IdP's refresh token: every `checkIntervalS` a latchkey refresh
 * also refreshes at the IdP, so an account the IdP disabled stops refreshing here.
 */
export interface IdpRefreshOptions {
  readonly checkIntervalS: number
  /** Ask for `offline_access` (with `prompt=consent`, OIDC Core §11). */
  readonly offlineAccess: boolean
  readonly authorizationParams: Readonly<Record<string, string>>
}

export type AllowRule =
  | { readonly kind: 'group', readonly value: string, readonly scope: string }
  | { readonly kind: 'email_domain', readonly value: string, readonly scope: string }
  | { readonly kind: 'email', readonly value: string, readonly scope: string }
  | { readonly kind: 'subject', readonly value: string, readonly scope: string }

export interface ProviderEntry {
  readonly id: string
  readonly name: string
  readonly issuer: string
  readonly clientId: string
  readonly auth:
  | { readonly method: 'client_secret_basic' | 'client_secret_post', readonly secret: string }
  | { readonly method: 'private_key_jwt', readonly jwk: Readonly<Record<string, unknown>> }
  readonly scopes: readonly string[]
  readonly idTokenAlg: typeof ID_TOKEN_ALGS[number]
  readonly userinfo: boolean
  readonly user: {
    readonly idClaim: string
    readonly idPrefix: string
    readonly nameClaim: string
    readonly groupsClaim: string
  }
  readonly allow: readonly AllowRule[]
  /** Absent: families are not bound to the IdP (a disabled IdP account keeps refreshing until the family ends). */
  readonly idpRefresh?: IdpRefreshOptions
}

type Obj = Record<string, unknown>

function isObj (v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function isLoopback (hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname)
}

/** http:// is accepted only for an issuer on this machine (tests, `latchkey dev`). */
export function issuerAllowsHttp (issuer: string): boolean {
  const u = new URL(issuer)
  return u.protocol === 'http:' && isLoopback(u.hostname)
}

function str (o: Obj, key: string, where: string, fail: (m: string) => never, fallback?: string): string {
  const v = o[key]
  if (v === undefined && fallback !== undefined) return fallback
  if (typeof v !== 'string' || v === '' || v.length > 2048) return fail(`${where}: "${key}" must be a non-empty string`)
  return v
}

function parseRule (r: unknown, where: string, fail: (m: string) => never): AllowRule {
  if (!isObj(r)) return fail(`${where} is not an object`)
  const kinds = (['group', 'email_domain', 'email', 'subject'] as const).filter(k => r[k] !== undefined)
  if (kinds.length !== 1) return fail(`${where}: exactly one of "group", "email_domain", "email", "subject" is required`)
  const kind = kinds[0] as AllowRule['kind']
  const value = str(r, kind, where, fail)
  if (!Array.isArray(r.scopes) || !r.scopes.every(s => typeof s === 'string')) return fail(`${where}: "scopes" must be an array of strings`)
  const scope = parseScope(r.scopes.join(' '))
  if (scope === null) return fail(`${where}: "scopes" holds an invalid scope token`)
  for (const key of Object.keys(r)) if (key !== kind && key !== 'scopes') return fail(`${where}: unknown field "${key}"`)
  return { kind, value: kind === 'email_domain' || kind === 'email' ? value.toLowerCase() : value, scope: formatScope(scope) }
}

function parseIdpRefresh (v: unknown, at: string, fail: (m: string) => never): IdpRefreshOptions | undefined {
  if (v === undefined) return undefined
  const where = `${at}: "idp_refresh"`
  if (!isObj(v)) return fail(`${where} must be an object`)
  for (const key of Object.keys(v)) {
    if (!['enabled', 'check_interval_seconds', 'offline_access', 'authorization_params'].includes(key)) return fail(`${where}: unknown field "${key}"`)
  }
  if (v.enabled !== undefined && typeof v.enabled !== 'boolean') return fail(`${where}.enabled must be true or false`)
  if (v.offline_access !== undefined && typeof v.offline_access !== 'boolean') return fail(`${where}.offline_access must be true or false`)
  const interval = v.check_interval_seconds ?? DEFAULT_IDP_REFRESH_CHECK_INTERVAL_S
  if (typeof interval !== 'number' || !Number.isInteger(interval) || interval < MIN_IDP_REFRESH_CHECK_INTERVAL_S || interval > MAX_IDP_REFRESH_CHECK_INTERVAL_S) {
    return fail(`${where}.check_interval_seconds must be an integer from ${MIN_IDP_REFRESH_CHECK_INTERVAL_S} to ${MAX_IDP_REFRESH_CHECK_INTERVAL_S}`)
  }
  const params = v.authorization_params ?? {}
  if (!isObj(params)) return fail(`${where}.authorization_params must be an object of strings`)
  for (const [name, value] of Object.entries(params)) {
    if (typeof value !== 'string' || value.length > 256) return fail(`${where}.authorization_params.${name} must be a string`)
    if (RESERVED_AUTHORIZATION_PARAMS.has(name)) return fail(`${where}.authorization_params may not set "${name}" (latchkey sets it)`)
  }
  if (v.enabled === false) return undefined
  return { checkIntervalS: interval, offlineAccess: v.offline_access !== false, authorizationParams: { ...params as Record<string, string> } }
}

function parseEntry (p: unknown, i: number, fail: (m: string) => never): ProviderEntry {
  const where = `provider ${i}`
  if (!isObj(p)) return fail(`${where} is not an object`)
  const id = str(p, 'id', where, fail)
  if (!PROVIDER_ID_FORMAT.test(id)) return fail(`${where}: "id" must be 1..32 of a-z 0-9 - (it is a URL segment)`)
  const at = `provider ${JSON.stringify(id)}`
  const issuer = str(p, 'issuer', at, fail)
  let issuerUrl: URL
  try { issuerUrl = new URL(issuer) } catch { return fail(`${at}: "issuer" must be an absolute URL`) }
  if (issuerUrl.protocol !== 'https:' && !issuerAllowsHttp(issuer)) return fail(`${at}: "issuer" must be https (http only on loopback)`)
  if (issuerUrl.search !== '' || issuerUrl.hash !== '') return fail(`${at}: "issuer" must not have a query or fragment (OIDC Discovery §2)`)
  const clientId = str(p, 'client_id', at, fail)

  const hasSecret = p.client_secret !== undefined
  const hasKey = p.private_key_jwt !== undefined
  if (hasSecret === hasKey) return fail(`${at}: exactly one of "client_secret" or "private_key_jwt" is required`)
  const method = p.token_endpoint_auth_method ?? (hasKey ? 'private_key_jwt' : 'client_secret_basic')
  if (!TOKEN_AUTH_METHODS.includes(method as TokenAuthMethod)) return fail(`${at}: "token_endpoint_auth_method" must be one of ${TOKEN_AUTH_METHODS.join(', ')}`)
  let auth: ProviderEntry['auth']
  if (hasKey) {
    if (method !== 'private_key_jwt') return fail(`${at}: "private_key_jwt" needs token_endpoint_auth_method private_key_jwt`)
    const key = p.private_key_jwt
    if (!isObj(key) || !isObj(key.jwk) || typeof key.jwk.kty !== 'string' || key.jwk.d === undefined) {
      return fail(`${at}: "private_key_jwt" must be {"jwk": <a private JWK>}`)
    }
    auth = { method: 'private_key_jwt', jwk: { ...key.jwk } }
  } else {
    if (method === 'private_key_jwt') return fail(`${at}: private_key_jwt needs a "private_key_jwt" key, not a secret`)
    auth = { method: method as 'client_secret_basic' | 'client_secret_post', secret: str(p, 'client_secret', at, fail) }
  }

  const scopesIn = p.scopes ?? DEFAULT_PROVIDER_SCOPES
  if (!Array.isArray(scopesIn) || !scopesIn.every(s => typeof s === 'string')) return fail(`${at}: "scopes" must be an array of strings`)
  const scopes = parseScope(scopesIn.join(' '))
  if (scopes === null || !scopes.includes('openid')) return fail(`${at}: "scopes" must be valid scope tokens including "openid"`)

  const alg = p.id_token_alg ?? DEFAULT_ID_TOKEN_ALG
  if (!ID_TOKEN_ALGS.includes(alg as typeof ID_TOKEN_ALGS[number])) return fail(`${at}: "id_token_alg" must be one of ${ID_TOKEN_ALGS.join(', ')}`)
  if (p.userinfo !== undefined && typeof p.userinfo !== 'boolean') return fail(`${at}: "userinfo" must be true or false`)

  const user = p.user ?? {}
  if (!isObj(user)) return fail(`${at}: "user" must be an object`)
  const idPrefix = user.id_prefix ?? `${id}:`
  if (typeof idPrefix !== 'string' || idPrefix.length > 64) return fail(`${at}: "user.id_prefix" must be a string of at most 64 characters`)

  if (!Array.isArray(p.allow) || p.allow.length === 0) return fail(`${at}: "allow" must be a non-empty array of rules (the default is to deny everyone)`)
  const allow = p.allow.map((r, j) => parseRule(r, `${at} allow[${j}]`, fail))
  const idpRefresh = parseIdpRefresh(p.idp_refresh, at, fail)

  return {
    id,
    name: p.name === undefined ? id : str(p, 'name', at, fail).slice(0, 64),
    issuer,
    clientId,
    auth,
    scopes,
    idTokenAlg: alg as typeof ID_TOKEN_ALGS[number],
    userinfo: p.userinfo === true,
    user: {
      idClaim: str(user, 'id_claim', at, fail, 'sub'),
      idPrefix,
      nameClaim: str(user, 'name_claim', at, fail, 'name'),
      groupsClaim: str(user, 'groups_claim', at, fail, 'groups')
    },
    allow,
    ...(idpRefresh === undefined ? {} : { idpRefresh })
  }
}

/**
 * PROVIDERS_FILE's text, parsed and validated whole (boot and reload). `where` names it in
 * errors (the file's path); a syntax error gives a position, never an excerpt: the document
 * holds client secrets.
 */
export function parseProvidersText (text: string, variable: string, where = variable === 'PROVIDERS_JSON' ? 'the inline document' : 'the file'): readonly ProviderEntry[] {
  return parseProviders(parseJsonConfig(text, where, variable), variable)
}

/** Parse the whole providers document; throws `ConfigError(variable, …)` on the first problem. */
export function parseProviders (doc: unknown, variable: string): readonly ProviderEntry[] {
  const fail = (message: string): never => { throw new ConfigError(variable, message) }
  if (!isObj(doc) || !Array.isArray(doc.providers)) return fail('expected {"providers": [...]}')
  const entries = doc.providers.map((p, i) => parseEntry(p, i, fail))
  const seen = new Set<string>()
  for (const e of entries) {
    if (seen.has(e.id)) fail(`provider id ${JSON.stringify(e.id)} appears twice`)
    seen.add(e.id)
  }
  return deepFreeze(entries)
}
