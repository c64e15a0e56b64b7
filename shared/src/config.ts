/**
 * Parsers for environment configuration. Each takes the variable's name so that a
 * bad value becomes one line: `ACCESS_TOKEN_TTL: expected a duration like 300, 5m or 14d, got "abc"`.
 * Values are never echoed when the variable may hold a secret (see `secret`).
 */
import { ConfigError } from './errors.js'

export type Env = Readonly<Record<string, string | undefined>>

const SECONDS_PER_UNIT: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86400 }

function show (value: string): string {
  return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)
}

export function readString (env: Env, name: string, fallback: string): string {
  const raw = env[name]
  return raw === undefined || raw === '' ? fallback : raw
}

export function readOptional (env: Env, name: string): string | undefined {
  const raw = env[name]
  return raw === undefined || raw === '' ? undefined : raw
}

export function readInt (env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = readOptional(env, name)
  if (raw === undefined) return fallback
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `expected an integer, got ${show(raw)}`)
  const n = Number(raw)
  if (n < min || n > max) throw new ConfigError(name, `expected ${min}..${max}, got ${n}`)
  return n
}

export function readPort (env: Env, name: string, fallback: number): number {
  return readInt(env, name, fallback, 0, 65535)
}

/** A duration in seconds: `300`, `300s`, `5m`, `12h`, `14d`. */
export function readDurationS (env: Env, name: string, fallbackS: number, minS: number, maxS: number): number {
  const raw = readOptional(env, name)
  if (raw === undefined) return fallbackS
  const m = /^(\d+)\s*([smhd]?)$/.exec(raw.trim())
  if (m === null) throw new ConfigError(name, `expected a duration like 300, 5m or 14d, got ${show(raw)}`)
  const seconds = Number(m[1]) * (SECONDS_PER_UNIT[m[2] === '' ? 's' : m[2] as string] as number)
  if (seconds < minS || seconds > maxS) throw new ConfigError(name, `expected ${minS}..${maxS} seconds, got ${seconds}`)
  return seconds
}

export function readBool (env: Env, name: string, fallback: boolean): boolean {
  const raw = readOptional(env, name)
  if (raw === undefined) return fallback
  const v = raw.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(v)) return true
  if (['0', 'false', 'no', 'off'].includes(v)) return false
  throw new ConfigError(name, `expected true or false, got ${show(raw)}`)
}

export function readEnum<const T extends string> (env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = readOptional(env, name)
  if (raw === undefined) return fallback
  if (!(allowed as readonly string[]).includes(raw)) throw new ConfigError(name, `expected one of ${allowed.join(', ')}, got ${show(raw)}`)
  return raw as T
}

/** An absolute http(s) URL; credentials in it are never echoed back in errors. */
export function readUrl (env: Env, name: string, fallback: string | undefined, protocols: readonly string[] = ['http:', 'https:']): string | undefined {
  const raw = readOptional(env, name) ?? fallback
  if (raw === undefined) return undefined
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ConfigError(name, 'expected an absolute URL')
  }
  if (!protocols.includes(url.protocol)) throw new ConfigError(name, `expected a ${protocols.map(p => p.replace(':', '')).join(' or ')} URL, got ${url.protocol.replace(':', '')}`)
  return raw
}

/** A comma-separated list, blanks dropped. */
export function readList (env: Env, name: string): string[] {
  const raw = readOptional(env, name)
  if (raw === undefined) return []
  return raw.split(',').map(s => s.trim()).filter(s => s !== '')
}

export interface HostPort { readonly host: string, readonly port: number }

/** `host:port,host:port` (IPv6 as `[::1]:6379`). */
export function readHostPorts (env: Env, name: string): HostPort[] {
  return readList(env, name).map((item) => {
    const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(item)
    if (m === null) throw new ConfigError(name, `expected host:port, got ${show(item)}`)
    const port = Number(m[2])
    if (port < 1 || port > 65535) throw new ConfigError(name, `port out of range in ${show(item)}`)
    return Object.freeze({ host: (m[1] as string).replace(/^\[|\]$/g, ''), port })
  })
}

/** Recursively freeze a config object so nothing downstream can change it. */
export function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v)
  }
  return value
}
