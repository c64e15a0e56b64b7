/**
 * The IdP refresh tokens kept with bound families (a provider's `idp_refresh`) are sealed
 * before they reach the family store: AES-256-GCM under IDP_TOKEN_KEY, with the provider
 * and the latchkey user id as associated data, so a Redis dump or replica shows nothing
 * usable and a sealed token copied into another user's family does not open. Unlike
 * latchkey's own refresh tokens (kept as hashes), the IdP's token must be presented back
 * to the IdP, so it cannot be hashed.
 *
 * A token that does not open (the key was changed) counts as the IdP refusing: the family
 * is revoked on its next check, never refreshed unchecked.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { ConfigError } from '#shared/errors.js'
import type { ProviderEntry } from './providers-file.js'

/** IDP_TOKEN_KEY: 32 bytes, base64url (`openssl rand -base64 32 | tr '+/' '-_' | tr -d =`). */
export const IDP_TOKEN_KEY_BYTES = 32
/** GCM's recommended nonce length (NIST SP 800-38D §8.2). */
const IV_BYTES = 12
const TAG_BYTES = 16
const FORMAT = 'v1'

function associatedData (provider: string, userId: string): Buffer {
  return Buffer.from(`${provider}\n${userId}`, 'utf8')
}

export class IdpTokenSeal {
  readonly #key: Buffer

  constructor (keyBase64url: string) {
    const key = Buffer.from(keyBase64url, 'base64url')
    if (key.length !== IDP_TOKEN_KEY_BYTES) throw new ConfigError('IDP_TOKEN_KEY', `must be ${IDP_TOKEN_KEY_BYTES} bytes, base64url`)
    this.#key = key
  }

  seal (token: string, provider: string, userId: string): string {
    const iv = randomBytes(IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv, { authTagLength: TAG_BYTES })
    cipher.setAAD(associatedData(provider, userId))
    const body = Buffer.concat([cipher.update(token, 'utf8'), cipher.final(), cipher.getAuthTag()])
    return `${FORMAT}.${iv.toString('base64url')}.${body.toString('base64url')}`
  }

  /** The token, or undefined when `sealed` does not open for this provider and user. */
  open (sealed: string, provider: string, userId: string): string | undefined {
    const [format, ivText, bodyText] = sealed.split('.')
    if (format !== FORMAT || ivText === undefined || bodyText === undefined) return undefined
    const iv = Buffer.from(ivText, 'base64url')
    const body = Buffer.from(bodyText, 'base64url')
    if (iv.length !== IV_BYTES || body.length <= TAG_BYTES) return undefined
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, iv, { authTagLength: TAG_BYTES })
      decipher.setAAD(associatedData(provider, userId))
      decipher.setAuthTag(body.subarray(body.length - TAG_BYTES))
      return Buffer.concat([decipher.update(body.subarray(0, body.length - TAG_BYTES)), decipher.final()]).toString('utf8')
    } catch {
      return undefined
    }
  }
}

/** Boot and every PROVIDERS_FILE reload: a provider that binds families needs the key. */
export function checkIdpTokenKey (entries: readonly ProviderEntry[], key: string | undefined, variable: string): void {
  const bound = entries.find(e => e.idpRefresh !== undefined)
  if (bound !== undefined && key === undefined) {
    throw new ConfigError(variable, `provider ${JSON.stringify(bound.id)} sets idp_refresh, which needs IDP_TOKEN_KEY (the IdP's refresh tokens are kept encrypted)`)
  }
}
