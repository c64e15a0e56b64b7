/**
 * From the claims of a validated ID token (and UserInfo, when the provider asks for it) to a
 * latchkey user: id, display name and scopes, by the provider's `allow` rules. The default
 * is to deny: a user no rule matches, or with no usable id claim, gets no session.
 */
import { formatScope } from '../scope.js'
import type { AllowRule, ProviderEntry } from './providers-file.js'

export interface MappedUser {
  readonly userId: string
  readonly name: string
  /** The union of the scopes of every rule that matched. */
  readonly scope: string
}

export type MappingResult =
  | { readonly ok: true, readonly user: MappedUser }
  | { readonly ok: false, readonly reason: 'no_id_claim' | 'no_rule_matched' }

/** Longest latchkey user id a federated sign-in may produce (user ids end up in Redis keys and logs). */
export const FEDERATED_USER_ID_MAX_CHARS = 256

type Claims = Readonly<Record<string, unknown>>

function groupsOf (claims: Claims, claim: string): readonly string[] {
  const v = claims[claim]
  if (Array.isArray(v)) return v.filter((g): g is string => typeof g === 'string')
  return typeof v === 'string' ? [v] : []
}

/** A verified address only (OIDC Core §5.1 `email_verified`): an unverified one is self-asserted. */
function verifiedEmail (claims: Claims): string | undefined {
  return typeof claims.email === 'string' && claims.email_verified === true ? claims.email.toLowerCase() : undefined
}

function matches (rule: AllowRule, claims: Claims, entry: ProviderEntry): boolean {
  switch (rule.kind) {
    case 'group': return groupsOf(claims, entry.user.groupsClaim).includes(rule.value)
    case 'email': return verifiedEmail(claims) === rule.value
    case 'email_domain': return verifiedEmail(claims)?.endsWith(`@${rule.value}`) ?? false
    case 'subject': return claims.sub === rule.value
  }
}

export function mapClaims (entry: ProviderEntry, claims: Claims): MappingResult {
  const raw = claims[entry.user.idClaim]
  const idValue = entry.user.idClaim === 'email' ? verifiedEmail(claims) : typeof raw === 'string' ? raw : undefined
  const userId = idValue === undefined ? '' : `${entry.user.idPrefix}${idValue}`
  // eslint-disable-next-line no-control-regex
  if (idValue === undefined || idValue === '' || userId.length > FEDERATED_USER_ID_MAX_CHARS || /[\x00-\x1f\x7f]/.test(userId)) {
    return { ok: false, reason: 'no_id_claim' }
  }
  const matched = entry.allow.filter(rule => matches(rule, claims, entry))
  if (matched.length === 0) return { ok: false, reason: 'no_rule_matched' }
  const scopes = new Set(matched.flatMap(rule => rule.scope === '' ? [] : rule.scope.split(' ')))
  const nameClaim = claims[entry.user.nameClaim]
  return {
    ok: true,
    user: { userId, name: typeof nameClaim === 'string' ? nameClaim.slice(0, 200) : userId, scope: formatScope([...scopes].sort()) }
  }
}
