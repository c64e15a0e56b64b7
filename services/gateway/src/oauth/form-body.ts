/**
 * `application/x-www-form-urlencoded` bodies for the OAuth endpoints (RFC 6749 §3.2,
 * RFC 7009 §2.1). A parameter sent twice is an error (RFC 6749 §3.1, §3.2: "MUST NOT be
 * included more than once"), not "last one wins": two different `scope` or `audience`
 * values must never be silently reconciled. The one exception is RFC 8707's `resource`.
 */
import type { FastifyInstance } from 'fastify'
import { gatewayError } from '../errors.js'

/** An OAuth form is a handful of short parameters. */
export const OAUTH_BODY_LIMIT_BYTES = 16 * 1024

export type FormParams = Readonly<Record<string, string>>

export function parseForm (body: string): FormParams {
  const params: Record<string, string> = Object.create(null) as Record<string, string>
  for (const [key, value] of new URLSearchParams(body)) {
    if (key in params) {
      // RFC 8707 §2: `resource` may be repeated to ask for several audiences. Tokens here have
      // one audience, so the same value twice is one resource, and different ones are a
      // target this server cannot issue for (§2: invalid_target), never "last one wins".
      if (key === 'resource') {
        if (params[key] === value) continue
        throw gatewayError('GW_INVALID_TARGET', { description: 'One token serves one resource; request a token per resource.' })
      }
      throw gatewayError('GW_OAUTH_INVALID_REQUEST', { description: `Parameter ${JSON.stringify(key.slice(0, 40))} is repeated.` })
    }
    params[key] = value
  }
  return params
}

export function registerFormParser (app: FastifyInstance): void {
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: OAUTH_BODY_LIMIT_BYTES }, (_req, body, done) => {
    try {
      done(null, parseForm(body as string))
    } catch (err) {
      done(err as Error, undefined)
    }
  })
}

/** A present, non-empty parameter, or undefined. */
export function param (form: FormParams, name: string): string | undefined {
  const v = form[name]
  return v === undefined || v === '' ? undefined : v
}

export function requireParam (form: FormParams, name: string): string {
  const v = param(form, name)
  if (v === undefined) throw gatewayError('GW_OAUTH_INVALID_REQUEST', { description: `Missing parameter ${name}.` })
  return v
}
