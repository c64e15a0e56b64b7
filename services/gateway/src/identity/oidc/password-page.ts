/**
 * The authorization endpoint's password page: for a native app's sign-in when the person is
 * in USERS_FILE rather than at an identity provider (native-sign-in.ts). The password is
 * typed into the gateway's own page in the system browser, never into the app (RFC 8252
 * §8.12), so the app gets a code and not the password grant it would otherwise need.
 *
 * The page runs no script and loads nothing; it may not be framed (clickjacking, RFC 9700
 * §4.16) and its form may post only to this origin. Everything interpolated is escaped.
 */
import type { FastifyReply } from 'fastify'

/** The browser holds the pending request's id here between the page and its POST. */
export const PASSWORD_PAGE_COOKIE = 'lk_authz'
export const PASSWORD_PAGE_PATH = '/oauth/authorize'

/** Every page the gateway shows a person (this one, error-page.ts). */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Type': 'text/html; charset=utf-8',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store'
}

export function escapeHtml (text: string): string {
  return text.replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`)
}

export interface PasswordPage {
  /** The app asking (its client id). */
  readonly clientId: string
  /** Shown above the form after a refusal. */
  readonly error?: string
  /** "Sign in with …" links: label and the authorization URL with `provider=<id>`. */
  readonly providers: ReadonlyArray<{ readonly name: string, readonly href: string }>
}

export function sendPasswordPage (reply: FastifyReply, page: PasswordPage, status = 200): FastifyReply {
  const providers = page.providers.map(p => `<p><a href="${escapeHtml(p.href)}">Sign in with ${escapeHtml(p.name)}</a></p>`).join('')
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in</title>
<style>body{font-family:system-ui,sans-serif;max-width:22rem;margin:3rem auto;padding:0 1rem}label,input,button{display:block;width:100%;margin:.4rem 0}input,button{padding:.5rem;font-size:1rem}.error{color:#b00020}</style>
</head><body>
<h1>Sign in</h1>
<p>to continue to <strong>${escapeHtml(page.clientId)}</strong></p>
${page.error === undefined ? '' : `<p class="error" role="alert">${escapeHtml(page.error)}</p>`}
<form method="post" action="${PASSWORD_PAGE_PATH}">
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required maxlength="256">
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required maxlength="1024">
<button type="submit">Sign in</button>
</form>
${providers}
</body></html>
`
  return reply.code(status).headers(PAGE_HEADERS).send(html)
}
