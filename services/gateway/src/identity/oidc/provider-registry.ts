/**
 * The relying parties in force, by provider id. Keeps its identity across a PROVIDERS_FILE
 * reload (`replace`), so the routes holding it see the new set at once. An entry whose
 * settings did not change keeps its RelyingParty, and with it the cached discovery; a new
 * or changed one starts discovery afresh.
 */
import { isDeepStrictEqual } from 'node:util'
import type { Clock } from '#shared/clock.js'
import { gatewayError } from '../../errors.js'
import type { Family, IdpBinding } from '../../sessions/family-store.js'
import type { FederatedUsers, IdpCheck } from '../../sessions/service.js'
import type { IdpTokenSeal } from './idp-token-seal.js'
import type { ProviderEntry } from './providers-file.js'
import { RelyingParty } from './relying-party.js'

export class ProviderRegistry implements FederatedUsers {
  readonly #issuer: string
  readonly #clock: Clock
  readonly #onDiscoveryError: (party: RelyingParty, err: unknown) => void
  readonly #seal: IdpTokenSeal | undefined
  #parties = new Map<string, RelyingParty>()

  /** `seal`: IDP_TOKEN_KEY's sealer; config refuses a provider with `idp_refresh` without it. */
  constructor (options: { issuer: string, clock: Clock, seal?: IdpTokenSeal, onDiscoveryError: (party: RelyingParty, err: unknown) => void }) {
    this.#issuer = options.issuer
    this.#clock = options.clock
    this.#seal = options.seal
    this.#onDiscoveryError = options.onDiscoveryError
  }

  /**
   * What a new family of `party` keeps of the IdP's refresh token: undefined when the
   * provider does not bind; throws `GW_OIDC_INVALID_RESPONSE` when it binds but the IdP
   * gave no refresh token (a family that could never be checked is not started).
   */
  bindingFor (party: RelyingParty, userId: string, idpRefreshToken: string | undefined): IdpBinding | undefined {
    if (party.entry.idpRefresh === undefined) return undefined
    if (idpRefreshToken === undefined || idpRefreshToken === '' || this.#seal === undefined) {
      throw gatewayError('GW_OIDC_INVALID_RESPONSE', { description: 'The identity provider issued no refresh token, which this provider\'s idp_refresh needs; no session was created.' })
    }
    return { sealed: this.#seal.seal(idpRefreshToken, party.entry.id, userId), checkedAt: this.#clock.now() }
  }

  async checkAtIdp (family: Family, binding: IdpBinding): Promise<IdpCheck> {
    const party = family.provider === undefined ? undefined : this.#parties.get(family.provider)
    const options = party?.entry.idpRefresh
    // The provider no longer binds (idp_refresh removed): nothing to ask.
    if (party === undefined || options === undefined) return { kind: 'fresh' }
    const now = this.#clock.now()
    if (now - binding.checkedAt < options.checkIntervalS * 1000) return { kind: 'fresh' }
    const token = this.#seal?.open(binding.sealed, party.entry.id, family.userId)
    // Sealed under another key (IDP_TOKEN_KEY changed): it can never be checked again.
    if (token === undefined || this.#seal === undefined) return { kind: 'refused' }
    const outcome = await party.refresh(token)
    if (!outcome.ok) return { kind: 'refused' }
    const sealed = outcome.refreshToken === undefined ? binding.sealed : this.#seal.seal(outcome.refreshToken, party.entry.id, family.userId)
    return { kind: 'vouched', binding: { sealed, checkedAt: now } }
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
