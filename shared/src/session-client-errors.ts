/**
 * Errors the browser session client throws (`SC_*`). Callers switch on `err.code`; wire
 * names mirror the gateway's answers. No message ever carries a password or a token.
 */
import { defineCatalogue } from './errors.js'

export const sessionClientErrors = defineCatalogue({
  /** The session is over (refresh answered `invalid_grant`, or nobody signed in): sign in again. */
  SC_SIGNED_OUT: { statusCode: 401, error: 'invalid_grant', description: 'You are signed out; sign in again.' },
  SC_INVALID_CREDENTIALS: { statusCode: 401, error: 'invalid_grant', description: 'Wrong username or password.' },
  SC_RATE_LIMITED: { statusCode: 429, error: 'too_many_requests', description: 'Too many attempts; retry later.' },
  SC_REFUSED: { statusCode: 400, error: 'invalid_request', description: 'The gateway refused the request.' },
  SC_SESSION_NOT_FOUND: { statusCode: 404, error: 'not_found', description: 'No such session.' },
  /** The token is only ever sent to the gateway's origin: a foreign URL is a bug, not a request. */
  SC_FOREIGN_ORIGIN: { statusCode: 400, error: 'invalid_request', description: 'The session client only sends its token to the gateway origin.' },
  SC_NO_BASE_URL: { statusCode: 400, error: 'invalid_request', description: 'No gateway URL: pass `baseUrl` outside a browser page.' },
  SC_UNAVAILABLE: { statusCode: 503, error: 'temporarily_unavailable', description: 'The gateway could not be reached; retry shortly.' },
  SC_BAD_RESPONSE: { statusCode: 502, error: 'server_error', description: 'The gateway answered with an unusable response.' }
})

export type SessionClientErrorCode = keyof typeof sessionClientErrors.catalogue
export const sessionClientError = sessionClientErrors.create
