/**
 * The ROUTES_FILE table in force: checked whole when built or replaced, and replaced in place
 * (ROUTES_FILE reload, app.ts) so that the proxy, forward-auth and the verifier's audiences
 * follow without a restart. A table that fails the checks is refused and the old one stays.
 */
import type { RouteConfig } from '../config.js'
import { normalisePath } from './path.js'

/** Prefixes that belong to the gateway itself and can never be proxied. */
export const RESERVED_PREFIXES: readonly string[] = ['/auth/', '/oauth/', '/.well-known/']

/** Throws `TypeError` naming the first route that cannot be served. */
export function assertRoutes (routes: readonly RouteConfig[]): void {
  const seen = new Set<string>()
  for (const { prefix } of routes) {
    const normalised = normalisePath(prefix)
    if (!normalised.ok || normalised.path !== prefix || !prefix.endsWith('/') || prefix === '/') {
      throw new TypeError(`proxy route prefix ${JSON.stringify(prefix)} must be a normalised path ending in "/"`)
    }
    if (RESERVED_PREFIXES.some(r => prefix.startsWith(r) || r.startsWith(prefix))) {
      throw new TypeError(`proxy route prefix ${prefix} would shadow the gateway's own routes`)
    }
    if (seen.has(prefix)) throw new TypeError(`proxy route prefix ${prefix} is listed twice`)
    seen.add(prefix)
  }
}

export class RouteTable {
  #routes: readonly RouteConfig[]
  readonly #listeners: Array<(routes: readonly RouteConfig[]) => void> = []

  constructor (routes: readonly RouteConfig[]) {
    assertRoutes(routes)
    this.#routes = routes
  }

  get routes (): readonly RouteConfig[] {
    return this.#routes
  }

  /** Put `routes` in force (checked first: throws and keeps the old table when they fail). */
  replace (routes: readonly RouteConfig[]): void {
    assertRoutes(routes)
    this.#routes = routes
    for (const listener of this.#listeners) listener(routes)
  }

  onReplace (listener: (routes: readonly RouteConfig[]) => void): void {
    this.#listeners.push(listener)
  }
}
