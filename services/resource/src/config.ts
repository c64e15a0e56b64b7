/**
 * Resource-service configuration: read from the environment once at boot, validated,
 * frozen. Nothing else in the service reads `process.env`.
 */
import { type Env, deepFreeze, readEnum, readInt, readOptional, readPort, readString, readUrl } from '#shared/config.js'
import { ConfigError } from '#shared/errors.js'
import { INTROSPECTION_CACHE_MS } from '#shared/token-introspection.js'

export const PORT = 8081
export const HOST = '0.0.0.0'
export const JWKS_URL = 'http://localhost:8080/.well-known/jwks.json'
export const ISSUER = 'http://localhost:8080'
export const AUDIENCE = 'latchkey-api'
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/** The longest an introspection answer may be trusted: a revocation must still bite soon. */
export const INTROSPECTION_CACHE_MAX_MS = 60_000

export type LogLevel = typeof LOG_LEVELS[number]

/** Opt-in revocation checks through the gateway's RFC 7662 endpoint (off unless INTROSPECTION_URL is set). */
export interface IntrospectionConfig {
  readonly url: string
  readonly clientId: string
  readonly clientSecret: string
  readonly cacheMs: number
}

export interface ResourceConfig {
  readonly port: number
  readonly host: string
  readonly jwksUrl: string
  /** Compared exactly with the token's `iss` (RFC 9068 §4), so no trailing slash games. */
  readonly issuer: string
  readonly audience: string
  readonly logLevel: LogLevel
  readonly introspection: IntrospectionConfig | undefined
  /** OTEL_EXPORTER_OTLP_ENDPOINT: where spans go over OTLP/HTTP; unset, tracing is off. */
  readonly otlpEndpoint: string | undefined
}

function readIntrospection (env: Env): IntrospectionConfig | undefined {
  const url = readUrl(env, 'INTROSPECTION_URL', undefined)
  if (url === undefined) return undefined
  const clientId = readOptional(env, 'INTROSPECTION_CLIENT_ID')
  if (clientId === undefined) throw new ConfigError('INTROSPECTION_CLIENT_ID', 'required when INTROSPECTION_URL is set')
  const clientSecret = readOptional(env, 'INTROSPECTION_CLIENT_SECRET')
  if (clientSecret === undefined) throw new ConfigError('INTROSPECTION_CLIENT_SECRET', 'required when INTROSPECTION_URL is set')
  return { url, clientId, clientSecret, cacheMs: readInt(env, 'INTROSPECTION_CACHE_MS', INTROSPECTION_CACHE_MS, 0, INTROSPECTION_CACHE_MAX_MS) }
}

/** Parse and freeze the resource service's configuration. Throws `ConfigError` naming the variable. */
export function loadResourceConfig (env: Env): ResourceConfig {
  const config: ResourceConfig = {
    port: readPort(env, 'PORT', PORT),
    host: readString(env, 'HOST', HOST),
    jwksUrl: readUrl(env, 'JWKS_URL', JWKS_URL) as string,
    // The gateway strips a trailing slash from its ISSUER before putting it in tokens; match it.
    issuer: (readUrl(env, 'ISSUER', ISSUER) as string).replace(/\/$/, ''),
    audience: readString(env, 'AUDIENCE', AUDIENCE),
    logLevel: readEnum(env, 'LOG_LEVEL', LOG_LEVELS, 'info'),
    introspection: readIntrospection(env),
    otlpEndpoint: readUrl(env, 'OTEL_EXPORTER_OTLP_ENDPOINT', undefined)
  }
  return deepFreeze(config)
}
