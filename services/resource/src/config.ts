/**
 * Resource-service configuration: read from the environment once at boot, validated,
 * frozen. Nothing else in the service reads `process.env`.
 */
import { type Env, deepFreeze, readEnum, readPort, readString, readUrl } from '#shared/config.js'

export const PORT = 8081
export const HOST = '0.0.0.0'
export const JWKS_URL = 'http://localhost:8080/.well-known/jwks.json'
export const ISSUER = 'http://localhost:8080'
export const AUDIENCE = 'latchkey-api'
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

export type LogLevel = typeof LOG_LEVELS[number]

export interface ResourceConfig {
  readonly port: number
  readonly host: string
  readonly jwksUrl: string
  /** Compared exactly with the token's `iss` (RFC 9068 §4), so no trailing slash games. */
  readonly issuer: string
  readonly audience: string
  readonly logLevel: LogLevel
  /** OTEL_EXPORTER_OTLP_ENDPOINT: where spans go over OTLP/HTTP; unset, tracing is off. */
  readonly otlpEndpoint: string | undefined
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
    otlpEndpoint: readUrl(env, 'OTEL_EXPORTER_OTLP_ENDPOINT', undefined)
  }
  return deepFreeze(config)
}
