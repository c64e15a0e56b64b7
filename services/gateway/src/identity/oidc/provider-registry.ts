/**
 * The relying parties in force, by provider id. Keeps its identity across a PROVIDERS_FILE
 * reload (`replace`), so the routes holding it see the new set at once. An entry whose
 * settings did not change keeps its RelyingParty, and with it the cached discovery; a new
 * or changed one starts discovery afresh.
 */
import { isDeepStrictEqual } from 'node:util'
import type { Clock } from '#shared/clock.js'
import type { Family } from '../../sessions/family-store.js'
import type { FederatedUsers } from '../../sessions/service.js'
import type { ProviderEntry } from './providers-file.js'
import { RelyingParty } from './relying-party.js'

export class ProviderRegistry implements FederatedUsers {
  readonly #issuer: string
  readonly #clock: Clock
  readonly #onDiscoveryError: (party: RelyingParty, err: unknown) => void
  #parties = new Map<string, RelyingParty>()

  constructor (options: { issuer: string, clock: Clock, onDiscoveryError: (party: RelyingParty, err: unknown) => void }) {
    this.#issuer = options.issuer
    this.#clock = options.clock
    this.#onDiscoveryError = options.onDiscoveryError
  }

  get (id: string): RelyingParty | undefined {
    return this.#parties.get(id)
  }

  /**
   * The configured provider a family came from: its recorded `provider`, or (a store that
   * does not keep the field yet) the provider whose non-empty `id_prefix` starts its user id.
   */
  providerOf (family: Family): string | undefined {
    if (family.provider !== undefined) return this.#parties.has(family.provider) ? family.provider : undefined
    for (const party of this.#parties.values()) {
      const prefix = party.entry.user.idPrefix
      if (prefix !== '' && family.userId.startsWith(prefix)) return party.entry.id
    }
    return undefined
  }

  list (): RelyingParty[] {
    return [...this.#parties.values()]
  }

  /** Put `entries` in force; discovery of new or changed providers starts without being awaited. */
  replace (entries: readonly ProviderEntry[]): void {
    const next = new Map<string, RelyingParty>()
    for (const entry of entries) {
      const old = this.#parties.get(entry.id)
      if (old !== undefined && isDeepStrictEqual(old.entry, entry)) {
        next.set(entry.id, old)
        continue
      }
      const party = new RelyingParty(entry, { redirectUri: `${this.#issuer}/auth/oidc/${entry.id}/callback`, clock: this.#clock })
      next.set(entry.id, party)
    }
    const fresh = [...next.values()].filter(p => !this.#parties.has(p.entry.id) || this.#parties.get(p.entry.id) !== p)
    this.#parties = next
    for (const party of fresh) party.warm((err) => { this.#onDiscoveryError(party, err) })
  }
}
