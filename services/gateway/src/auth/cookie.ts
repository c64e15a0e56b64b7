/**
 * The refresh cookie (SPEC "Browser flow"): `lk_refresh`, HttpOnly, Secure, SameSite=Strict,
 * Path=/auth, Max-Age = the family's remaining lifetime. Path=/auth keeps the token off
 * every proxied request; SameSite=Strict keeps it off cross-site ones.
 */
import type { FastifyReply } from 'fastify'
import type { CookieSerializeOptions } from '@fastify/cookie'

export const REFRESH_COOKIE = 'lk_refresh'
export const REFRESH_COOKIE_PATH = '/auth'

function baseOptions (secure: boolean): CookieSerializeOptions {
  return { httpOnly: true, secure, sameSite: 'strict', path: REFRESH_COOKIE_PATH }
}

export function setRefreshCookie (reply: FastifyReply, token: string, maxAgeS: number, secure: boolean): void {
  reply.setCookie(REFRESH_COOKIE, token, { ...baseOptions(secure), maxAge: Math.max(0, Math.floor(maxAgeS)) })
}

export function clearRefreshCookie (reply: FastifyReply, secure: boolean): void {
  reply.setCookie(REFRESH_COOKIE, '', { ...baseOptions(secure), maxAge: 0, expires: new Date(0) })
}
