/**
 * The token endpoint's rules for what a token may say: the scope a request may narrow to
 * (RFC 6749 §3.3) and the audience it may pick (RFC 8707). Used by every grant that
 * issues a token for a client-chosen audience or scope.
 */
import { gatewayError } from '../errors.js'
import { formatScope, parseScope } from '../identity/scope.js'
import { param, type FormParams } from './form-body.js'

/** The requested scope as a subset of `allowed`, or all of `allowed` when none is asked (§3.3). */
export function narrowScope (requested: string | undefined, allowed: readonly string[]): string {
  if (requested === undefined) return formatScope(allowed)
  const tokens = parseScope(requested)
  if (tokens === null || tokens.length === 0) throw gatewayError('GW_INVALID_SCOPE')
  const permitted = new Set(allowed)
  if (!tokens.every(s => permitted.has(s))) throw gatewayError('GW_INVALID_SCOPE')
  return formatScope([...new Set(tokens)])
}

/** RFC 8707 §2: `resource` (or the common `audience`) picks one of `allowed`; none asked → the first. */
export function pickAudience (form: FormParams, allowed: readonly string[]): string {
  const audience = param(form, 'audience')
  const resource = param(form, 'resource')
  if (audience !== undefined && resource !== undefined && audience !== resource) {
    throw gatewayError('GW_OAUTH_INVALID_REQUEST', { description: 'audience and resource disagree.' })
  }
  const wanted = audience ?? resource
  if (wanted === undefined) {
    const first = allowed[0]
    if (first === undefined) throw gatewayError('GW_INVALID_TARGET')
    return first
  }
  if (!allowed.includes(wanted)) throw gatewayError('GW_INVALID_TARGET')
  return wanted
}
