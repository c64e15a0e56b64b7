/**
 * The refresh cookie (docs/contract.md "Browser flow"): `lk_refresh`, HttpOnly, Secure, SameSite=Strict,
 * Path=/auth, Max-Age = the family's remaining lifetime. Path=/auth keeps the token off
 * every proxied request; SameSite=Strict keeps it off cross-site ones.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { CookieSerializeOptions } from '@fastify/cookie'

export const REFRESH_COOKIE = 'lk_refresh'
export const REFRESH_COOKIE_PATH = '/auth'

function baseOptions (secure: boolean, path = REFRESH_COOKIE_PATH): CookieSerializeOptions {
  return { httpOnly: true, secure, sameSite: 'strict', path }
}

export function setRefreshCookie (reply: FastifyReply, token: string, maxAgeS: number, secure: boolean): void {
  reply.setCookie(REFRESH_COOKIE, token, { ...baseOptions(secure), maxAge: Math.max(0, Math.floor(maxAgeS)) })
}

export function clearRefreshCookie (reply: FastifyReply, secure: boolean): void {
  reply.setCookie(REFRESH_COOKIE, '', { ...baseOptions(secure), maxAge: 0, expires: new Date(0) })
}

/**
 * Every `lk_refresh` value the request carries. A cookie parser keeps one of several
 * same-named cookies, but a browser sends them all (RFC 6265 §5.4: one per matching path or
 * domain), and an attacker who can set a cookie for a sibling subdomain or a longer path
 * ("cookie tossing") gets theirs sent first. Two or more is therefore refused, not guessed.
 */
export function refreshCookieValues (req: FastifyRequest): string[] {
  const header = req.headers.cookie
  if (header === undefined) return []
  const values: string[] = []
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=')
    if (eq < 0 || pair.slice(0, eq).trim() !== REFRESH_COOKIE) continue
    // RFC 6265 §4.1.1: a cookie-value may be wrapped in DQUOTEs, as cookie parsers accept.
    values.push(pair.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1'))
  }
  return values
}

/**
 * Clear a tossed cookie as well as ours: at Path=/auth and at the request's own path (a
 * longer path is how a tossed cookie gets sent first). One set for another domain cannot be
 * cleared from here; it is refused on every request until it expires.
 */
export function clearAllRefreshCookies (reply: FastifyReply, secure: boolean, requestPath: string): void {
  clearRefreshCookie(reply, secure)
  if (requestPath !== REFRESH_COOKIE_PATH) reply.setCookie(REFRESH_COOKIE, '', { ...baseOptions(secure, requestPath), maxAge: 0, expires: new Date(0) })
}
