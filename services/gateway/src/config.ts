/**
 * Gateway configuration: read from the environment once at boot, validated, frozen,
 * and handed down. Nothing else in the gateway reads `process.env`.
 */
import { isIP } from 'node:net'
import { availableParallelism } from 'node:os'
import { ConfigError } from '#shared/errors.js'
import { parseJsonConfig, readConfigFileSync } from '#shared/config-file.js'
import {
  type Env, type HostPort, deepFreeze, readBool, readDurationS, readEnum, readHostPorts, readInt, readList,
  readOptional, readPort, readString, readUrl
} from '#shared/config.js'
import { parseProvidersText, type ProviderEntry } from './identity/oidc/providers-file.js'
import { checkIdpTokenKey, IdpTokenSeal } from './identity/oidc/idp-token-seal.js'
import { REFRESH_TOKEN_KEY_BYTES } from './sessions/refresh-token.js'

export const PORT = 8080
export const HOST = '0.0.0.0'
export const ISSUER = 'http://localhost:8080'
export const AUDIENCE = 'latchkey-api'
export const RESOURCE_URL = 'http://localhost:8081'
export const ACCESS_TTL_S = 300
export const REFRESH_IDLE_TTL_S = 14 * 86400
export const SESSION_MAX_TTL_S = 30 * 86400
export const REFRESH_REUSE_GRACE_S = 10
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export const REDIS_WAIT_REPLICAS = 0
/** Prefix of every key the gateway writes, so one Redis can host several deployments. */
export const REDIS_KEY_PREFIX = 'lk:'

/** Brute-force limits on password checks (login and the password grant), per window. */
/** Gateway processes sharing the port (node:cluster, see workers.ts); 1 runs no cluster. */
export const WORKERS = 1
export const MAX_WORKERS = 64
export const LOGIN_MAX_ATTEMPTS_PER_USER = 10
export const LOGIN_MAX_ATTEMPTS_PER_IP = 100
export const LOGIN_ATTEMPT_WINDOW_S = 300
/** Failed client authentications at the OAuth endpoints (oauth/client-auth-limiter.ts), per window. */
export const CLIENT_AUTH_MAX_FAILURES_PER_CLIENT = 20
export const CLIENT_AUTH_MAX_FAILURES_PER_IP = 50
export const CLIENT_AUTH_FAILURE_WINDOW_S = 300

export const FORWARD_AUTH_HEADER_PREFIX = 'X-Auth-Request-'

/** TRUSTED_PROXIES: none by default (the gateway is the edge and believes no forwarding header). */
export const TRUSTED_PROXIES: readonly string[] = []
/** Names proxy-addr (Fastify's `trustProxy`) understands for well-known ranges. */
const PROXY_RANGE_NAMES: ReadonlySet<string> = new Set(['loopback', 'linklocal', 'uniquelocal'])

export type LogLevel = typeof LOG_LEVELS[number]

export interface RouteConfig {
  readonly prefix: string
  /** Absent: the route exists for forward-auth only (`/auth/verify`), nothing is proxied. */
  readonly upstream?: string
  readonly audience: string
  readonly scopes: readonly string[]
}

export type RedisConfig =
  | { readonly kind: 'none' }
  | { readonly kind: 'url', readonly url: string }
  | { readonly kind: 'sentinel', readonly sentinels: readonly HostPort[], readonly name: string, readonly url: string | undefined }
  | { readonly kind: 'cluster', readonly nodes: readonly HostPort[], readonly url: string | undefined }

export interface GatewayConfig {
  readonly port: number
  readonly host: string
  readonly issuer: string
  /** The issuer's origin: what a same-site `Origin` header must equal. */
  readonly origin: string
  readonly audience: string
  readonly redis: RedisConfig
  /** Replicas that must acknowledge a rotation (`WAIT`) before it is answered; 0 = don't wait. */
  readonly redisWaitReplicas: number
  readonly redisKeyPrefix: string
  /** WORKERS: processes serving the port; `auto` is one per CPU the process may use. */
  readonly workers: number
  readonly signingKeysFile: string | undefined
  readonly usersFile: string | undefined
  readonly clientsFile: string | undefined
  readonly routes: readonly RouteConfig[]
  /** ROUTES_FILE, reloaded on change (app.ts); undefined: the one default route. */
  readonly routesFile: string | undefined
  readonly accessTokenTtlS: number
  readonly refreshIdleTtlS: number
  readonly sessionMaxTtlS: number
  readonly refreshReuseGraceS: number
  readonly cookieSecure: boolean
  readonly loginLimits: { readonly perUsername: number, readonly perIp: number, readonly windowS: number }
  readonly clientAuthLimits: { readonly perClient: number, readonly perIp: number, readonly windowS: number }
  readonly corsOrigins: readonly string[]
  /**
   * TRUSTED_PROXIES: addresses/CIDRs (or `loopback`, `linklocal`, `uniquelocal`) whose
   * X-Forwarded-For/-Proto/-Host are believed; the client is the rightmost untrusted hop.
   */
  readonly trustedProxies: readonly string[]
  /** FORWARD_AUTH_HEADER_PREFIX: forward-auth's identity headers are `<prefix>User`, `-Scope`, `-Client-Id`, `-Sid`. */
  readonly forwardAuthHeaderPrefix: string
  readonly logLevel: LogLevel
  /** `latchkey dev`: serve the demo page and print the walkthrough. */
  readonly devMode: boolean
  /** Serve the demo page at `/`: on in `dev`, off elsewhere unless DEMO_PAGE=true. */
  readonly demoPage: boolean
  /** PROVIDERS_FILE (or PROVIDERS_JSON inline): upstream OpenID providers; none by default. */
  readonly providersFile: string | undefined
  readonly providers: readonly ProviderEntry[]
  /**
   * IDP_TOKEN_KEY: 32 bytes, base64url; seals the IdP refresh tokens of families bound to
   * their IdP (a provider's `idp_refresh`). Required once a provider sets `idp_refresh`.
   */
  readonly idpTokenKey: string | undefined
  /**
   * REFRESH_TOKEN_KEY: at least 32 bytes, base64url; authenticates the generation in refresh
   * tokens (sessions/refresh-token.ts). Unset: a random key shared through Redis (or, without
   * Redis, one per process), which needs no setup but can be read by anyone who can read Redis.
   */
  readonly refreshTokenKey: string | undefined
  /** OTEL_EXPORTER_OTLP_ENDPOINT: where spans go over OTLP/HTTP; unset, tracing is off. */
  readonly otlpEndpoint: string | undefined
  /** Settings that are valid but probably not meant; logged once at start (see `configWarnings`). */
  readonly warnings: readonly string[]
}

function readRoutes (env: Env): RouteConfig[] {
  const file = readOptional(env, 'ROUTES_FILE')
  const audience = readString(env, 'AUDIENCE', AUDIENCE)
  if (file === undefined) {
    const upstream = readUrl(env, 'RESOURCE_URL', RESOURCE_URL) as string
    return [{ prefix: '/api/', upstream, audience, scopes: [] }]
  }
  // Routes hold no secrets, but the same fault gets the same words as in every other file.
  return parseRoutes(readConfigFileSync(file, 'ROUTES_FILE'), audience, file)
}

/**
 * A ROUTES_FILE's text, validated whole (at start, and again on every reload): a non-empty
 * JSON array of `{prefix, upstream?, audience?, scopes?}`; `audience` defaults to AUDIENCE.
 */
export function parseRoutes (text: string, audience: string, file: string): RouteConfig[] {
  const parsed = parseJsonConfig(text, file, 'ROUTES_FILE')
  if (!Array.isArray(parsed) || parsed.length === 0) throw new ConfigError('ROUTES_FILE', `${file}: expected a non-empty JSON array of routes`)
  return parsed.map((r: unknown, i: number): RouteConfig => {
    // A JSON path (RFC 9535) to the offending value, so a long file points at its line.
    const where = `${file}: $[${i}]`
    if (r === null || typeof r !== 'object') throw new ConfigError('ROUTES_FILE', `${where} is not an object`)
    const o = r as Record<string, unknown>
    if (typeof o.prefix !== 'string' || !/^\/[A-Za-z0-9._~!$&'()*+,;=:@/-]*\/$/.test(o.prefix) || o.prefix.includes('/../') || o.prefix.includes('/./')) {
      throw new ConfigError('ROUTES_FILE', `${where}.prefix must be a normalised path starting and ending with "/"`)
    }
    if (o.prefix.startsWith('/auth/') || o.prefix.startsWith('/oauth/') || o.prefix.startsWith('/.well-known/') || o.prefix === '/') {
      throw new ConfigError('ROUTES_FILE', `${where}.prefix ${o.prefix} would shadow the gateway's own routes`)
    }
    let upstream: URL | undefined
    if (o.upstream !== undefined) {
      try { upstream = new URL(String(o.upstream)) } catch { throw new ConfigError('ROUTES_FILE', `${where}.upstream must be an absolute URL`) }
      if (upstream.protocol !== 'http:' && upstream.protocol !== 'https:') throw new ConfigError('ROUTES_FILE', `${where}.upstream must be http or https`)
    }
    const aud = o.audience === undefined ? audience : o.audience
    if (typeof aud !== 'string' || aud === '') throw new ConfigError('ROUTES_FILE', `${where}.audience must be a non-empty string`)
    const scopes = o.scopes === undefined ? [] : o.scopes
    if (!Array.isArray(scopes) || !scopes.every(s => typeof s === 'string' && /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(s))) {
      throw new ConfigError('ROUTES_FILE', `${where}.scopes must be an array of scope tokens`)
    }
    const route: RouteConfig = { prefix: o.prefix, audience: aud, scopes }
    return upstream === undefined ? route : { ...route, upstream: upstream.toString().replace(/\/$/, '') }
  })
}

/** PROVIDERS_FILE names a JSON file; PROVIDERS_JSON holds the same document inline (dev, compose). */
function readProviders (env: Env): readonly ProviderEntry[] {
  const file = readOptional(env, 'PROVIDERS_FILE')
  const inline = readOptional(env, 'PROVIDERS_JSON')
  if (file !== undefined && inline !== undefined) throw new ConfigError('PROVIDERS_JSON', 'set either PROVIDERS_FILE or PROVIDERS_JSON, not both')
  if (file === undefined && inline === undefined) return []
  if (file === undefined) return parseProvidersText(inline as string, 'PROVIDERS_JSON')
  return parseProvidersText(readConfigFileSync(file, 'PROVIDERS_FILE'), 'PROVIDERS_FILE', file)
}

function readIdpTokenKey (env: Env): string | undefined {
  const key = readOptional(env, 'IDP_TOKEN_KEY')
  if (key !== undefined) new IdpTokenSeal(key) // validates the length
  return key
}

function readRefreshTokenKey (env: Env): string | undefined {
  const key = readOptional(env, 'REFRESH_TOKEN_KEY')
  if (key !== undefined && (!/^[A-Za-z0-9_-]+$/.test(key) || Buffer.from(key, 'base64url').length < REFRESH_TOKEN_KEY_BYTES)) {
    throw new ConfigError('REFRESH_TOKEN_KEY', `must be at least ${REFRESH_TOKEN_KEY_BYTES} bytes, base64url (openssl rand -base64 32 | tr '+/' '-_' | tr -d =)`)
  }
  return key
}

function readRedis (env: Env): RedisConfig {
  const url = readUrl(env, 'REDIS_URL', undefined, ['redis:', 'rediss:'])
  const sentinels = readHostPorts(env, 'REDIS_SENTINELS')
  const nodes = readHostPorts(env, 'REDIS_CLUSTER_NODES')
  if (sentinels.length > 0 && nodes.length > 0) throw new ConfigError('REDIS_SENTINELS', 'set either REDIS_SENTINELS or REDIS_CLUSTER_NODES, not both')
  if (sentinels.length > 0) {
    const name = readOptional(env, 'REDIS_SENTINEL_NAME')
    if (name === undefined) throw new ConfigError('REDIS_SENTINEL_NAME', 'required when REDIS_SENTINELS is set')
    return { kind: 'sentinel', sentinels, name, url }
  }
  if (nodes.length > 0) return { kind: 'cluster', nodes, url }
  if (url !== undefined) return { kind: 'url', url }
  return { kind: 'none' }
}

function readWorkers (env: Env): number {
  if (env.WORKERS?.trim() === 'auto') return Math.min(availableParallelism(), MAX_WORKERS)
  return readInt(env, 'WORKERS', WORKERS, 1, MAX_WORKERS)
}

/**
 * Several workers must share everything a request can touch: sessions, limits and
 * revocations live in Redis, and every worker must sign with, and accept, the same keys.
 */
function checkWorkers (config: GatewayConfig): void {
  if (config.workers === 1) return
  if (config.devMode) throw new ConfigError('WORKERS', '`latchkey dev` runs one process; WORKERS must be 1')
  if (config.redis.kind === 'none') throw new ConfigError('WORKERS', 'more than one worker needs Redis (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES): sessions would not be shared')
  if (config.signingKeysFile === undefined) throw new ConfigError('WORKERS', 'more than one worker needs SIGNING_KEYS_FILE: each would generate its own key')
}

function readRedisPrefix (env: Env): string {
  const prefix = readString(env, 'REDIS_KEY_PREFIX', REDIS_KEY_PREFIX)
  // Braces would become the hash tag and pull every key into one cluster slot.
  if (!/^[A-Za-z0-9:_.-]{1,32}$/.test(prefix)) throw new ConfigError('REDIS_KEY_PREFIX', 'expected 1..32 of A-Z a-z 0-9 : _ . -')
  return prefix
}

function readOrigins (env: Env): string[] {
  return readList(env, 'CORS_ORIGINS').map((o) => {
    let u: URL
    try { u = new URL(o) } catch { throw new ConfigError('CORS_ORIGINS', `not an origin: ${JSON.stringify(o)}`) }
    if (u.origin !== o.replace(/\/$/, '')) throw new ConfigError('CORS_ORIGINS', `expected a bare origin like https://app.example.com, got ${JSON.stringify(o)}`)
    return u.origin
  })
}

/** Hosts that only this machine can reach: the demo user's printed password stays local. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost'])

/**
 * Valid settings that are probably mistakes. PORT without ISSUER: tokens, metadata and
 * cookie-origin checks keep naming :8080. `dev` on a non-loopback HOST with the generated
 * demo user: the password printed to this terminal signs in from anywhere that reaches it.
 */
function configWarnings (env: Env, config: Omit<GatewayConfig, 'warnings'>): string[] {
  const warnings: string[] = []
  if (readOptional(env, 'ISSUER') === undefined && config.port !== PORT && config.port !== 0) {
    warnings.push(`PORT is ${config.port} but ISSUER is not set: tokens and /.well-known metadata name ${ISSUER}; set ISSUER to the URL clients use (e.g. http://localhost:${config.port})`)
  }
  if (config.devMode && config.usersFile === undefined && !LOOPBACK_HOSTS.has(config.host)) {
    warnings.push(`HOST is ${config.host}: the generated demo user's password works from any machine that reaches this one; unset HOST to listen on 127.0.0.1 only`)
  }
  return warnings
}

function readTrustedProxies (env: Env): string[] {
  const list = readList(env, 'TRUSTED_PROXIES')
  for (const item of list) {
    if (PROXY_RANGE_NAMES.has(item)) continue
    const slash = item.indexOf('/')
    const address = slash === -1 ? item : item.slice(0, slash)
    const family = isIP(address)
    const bits = slash === -1 ? undefined : item.slice(slash + 1)
    const maxBits = family === 4 ? 32 : 128
    if (family === 0 || (bits !== undefined && (!/^\d{1,3}$/.test(bits) || Number(bits) > maxBits))) {
      throw new ConfigError('TRUSTED_PROXIES', `expected IP addresses or CIDRs (e.g. 10.0.0.0/8, ::1), got ${JSON.stringify(item)}`)
    }
  }
  return list.length === 0 ? [...TRUSTED_PROXIES] : list
}

function readHeaderPrefix (env: Env): string {
  const prefix = readString(env, 'FORWARD_AUTH_HEADER_PREFIX', FORWARD_AUTH_HEADER_PREFIX)
  // RFC 9110 §5.1 field-name characters, ending in '-' so that `User` etc. read as words.
  if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}-$/.test(prefix)) throw new ConfigError('FORWARD_AUTH_HEADER_PREFIX', 'expected a header-name prefix ending in "-", like X-Auth-Request-')
  return prefix
}

/** Parse and freeze the gateway's configuration. Throws `ConfigError` naming the variable. */
export function loadGatewayConfig (env: Env, overrides: { devMode?: boolean } = {}): GatewayConfig {
  const issuer = (readUrl(env, 'ISSUER', ISSUER) as string).replace(/\/$/, '')
  const accessTokenTtlS = readDurationS(env, 'ACCESS_TOKEN_TTL', ACCESS_TTL_S, 1, 86400)
  const refreshIdleTtlS = readDurationS(env, 'REFRESH_IDLE_TTL', REFRESH_IDLE_TTL_S, 60, 365 * 86400)
  const sessionMaxTtlS = readDurationS(env, 'SESSION_MAX_TTL', SESSION_MAX_TTL_S, 60, 365 * 86400)
  if (sessionMaxTtlS < refreshIdleTtlS) throw new ConfigError('SESSION_MAX_TTL', `must be at least REFRESH_IDLE_TTL (${refreshIdleTtlS} s)`)
  const refreshReuseGraceS = readDurationS(env, 'REFRESH_REUSE_GRACE', REFRESH_REUSE_GRACE_S, 0, 300)
  const settings: Omit<GatewayConfig, 'warnings'> = {
    port: readPort(env, 'PORT', PORT),
    host: readString(env, 'HOST', HOST),
    issuer,
    origin: new URL(issuer).origin,
    audience: readString(env, 'AUDIENCE', AUDIENCE),
    redis: readRedis(env),
    redisWaitReplicas: readInt(env, 'REDIS_WAIT_REPLICAS', REDIS_WAIT_REPLICAS, 0, 16),
    redisKeyPrefix: readRedisPrefix(env),
    workers: readWorkers(env),
    signingKeysFile: readOptional(env, 'SIGNING_KEYS_FILE'),
    usersFile: readOptional(env, 'USERS_FILE'),
    clientsFile: readOptional(env, 'CLIENTS_FILE'),
    routes: readRoutes(env),
    routesFile: readOptional(env, 'ROUTES_FILE'),
    accessTokenTtlS,
    refreshIdleTtlS,
    sessionMaxTtlS,
    refreshReuseGraceS,
    cookieSecure: readBool(env, 'COOKIE_SECURE', true),
    loginLimits: {
      perUsername: readInt(env, 'LOGIN_MAX_ATTEMPTS_PER_USER', LOGIN_MAX_ATTEMPTS_PER_USER, 1, 1_000_000),
      perIp: readInt(env, 'LOGIN_MAX_ATTEMPTS_PER_IP', LOGIN_MAX_ATTEMPTS_PER_IP, 1, 1_000_000),
      windowS: readDurationS(env, 'LOGIN_ATTEMPT_WINDOW', LOGIN_ATTEMPT_WINDOW_S, 1, 86400)
    },
    clientAuthLimits: {
      perClient: readInt(env, 'CLIENT_AUTH_MAX_FAILURES_PER_CLIENT', CLIENT_AUTH_MAX_FAILURES_PER_CLIENT, 1, 1_000_000),
      perIp: readInt(env, 'CLIENT_AUTH_MAX_FAILURES_PER_IP', CLIENT_AUTH_MAX_FAILURES_PER_IP, 1, 1_000_000),
      windowS: readDurationS(env, 'CLIENT_AUTH_FAILURE_WINDOW', CLIENT_AUTH_FAILURE_WINDOW_S, 1, 86400)
    },
    corsOrigins: readOrigins(env),
    trustedProxies: readTrustedProxies(env),
    forwardAuthHeaderPrefix: readHeaderPrefix(env),
    logLevel: readEnum(env, 'LOG_LEVEL', LOG_LEVELS, 'info'),
    devMode: overrides.devMode ?? false,
    demoPage: readBool(env, 'DEMO_PAGE', overrides.devMode ?? false),
    providersFile: readOptional(env, 'PROVIDERS_FILE'),
    providers: readProviders(env),
    idpTokenKey: readIdpTokenKey(env),
    refreshTokenKey: readRefreshTokenKey(env),
    otlpEndpoint: readUrl(env, 'OTEL_EXPORTER_OTLP_ENDPOINT', undefined)
  }
  const config: GatewayConfig = { ...settings, warnings: configWarnings(env, settings) }
  checkWorkers(config)
  checkIdpTokenKey(config.providers, config.idpTokenKey, config.providersFile === undefined ? 'PROVIDERS_JSON' : 'PROVIDERS_FILE')
  return deepFreeze(config)
}
