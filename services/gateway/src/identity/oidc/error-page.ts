/**
 * Refusals a person sees in their browser: an unknown client or an unregistered
 * redirect_uri at /oauth/authorize, a sign-in that expired or came back to another browser.
 * RFC 6749 §4.1.2.1 says the authorization server "SHOULD inform the resource owner of the
 * error" (it must not redirect to an unverified URI), and a JSON body is no way to inform a
 * person. So on these routes, when the request asks for HTML (a browser's navigation sends
 * `Accept: text/html,...`; apps and IdPs calling back-channel do not), the error the one
 * error handler already chose (ops/error-handler.ts) is shown as a small page with the same
 * status; anything else keeps the JSON shape. Done in onSend so that there is still exactly
 * one place that maps errors to a status and a message.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { escapeHtml, PAGE_HEADERS } from './password-page.js'

function wantsHtml (req: FastifyRequest): boolean {
  const accept = req.headers.accept
  return typeof accept === 'string' && accept.includes('text/html')
}

function isJson (reply: FastifyReply): boolean {
  const type = reply.getHeader('content-type')
  return typeof type === 'string' && type.startsWith('application/json')
}

/** The page for one `{ error, error_description }` body. */
export function errorPage (status: number, body: { error?: unknown, error_description?: unknown }): string {
  const code = typeof body.error === 'string' ? body.error : 'server_error'
  const description = typeof body.error_description === 'string' ? body.error_description : 'The request could not be completed.'
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign-in failed</title>
<style>body{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto;padding:0 1rem}code{color:#555}</style>
</head><body>
<h1>Sign-in failed</h1>
<p role="alert">${escapeHtml(description)}</p>
<p><code>${escapeHtml(code)}</code> · HTTP ${status}</p>
</body></html>
`
}

/** onSend hook: an error answer in JSON becomes a page for a browser that asked for one. */
export async function errorsAsPages (req: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> {
  if (reply.statusCode < 400 || typeof payload !== 'string' || !isJson(reply) || !wantsHtml(req)) return payload
  let body: { error?: unknown, error_description?: unknown }
  try {
    body = JSON.parse(payload) as typeof body
  } catch {
    return payload
  }
  reply.headers(PAGE_HEADERS)
  return errorPage(reply.statusCode, body)
}
