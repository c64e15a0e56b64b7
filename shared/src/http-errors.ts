/**
 * Codes shared by every service that adopts the access-token plugin or calls
 * another service with a client-credentials token. Wire names follow RFC 6750 §3.1
 * (bearer resource access) and RFC 6749 §5.2; 5xx texts stay generic.
 */
import { defineCatalogue } from './errors.js'

export const sharedErrors = defineCatalogue({
  // RFC 6750 §3.1: a request with no credentials gets no error code in WWW-Authenticate;
  // the JSON body still needs a code, so it says plainly what is missing.
  AT_MISSING: { statusCode: 401, error: 'unauthorized', description: 'An access token is required.' },
  AT_INVALID: { statusCode: 401, error: 'invalid_token', description: 'The access token is invalid.' },
  AT_EXPIRED: { statusCode: 401, error: 'invalid_token', description: 'The access token has expired.' },
  AT_REVOKED: { statusCode: 401, error: 'invalid_token', description: 'The access token has been revoked.' },
  AT_WRONG_AUDIENCE: { statusCode: 401, error: 'invalid_token', description: 'The access token is not valid for this audience.' },
  AT_INSUFFICIENT_SCOPE: { statusCode: 403, error: 'insufficient_scope', description: 'The access token lacks a required scope.' },
  AT_SERVICE_TOKEN_REQUIRED: { statusCode: 403, error: 'insufficient_scope', description: 'This route accepts service (client credentials) tokens only.' },
  AT_USER_TOKEN_REQUIRED: { statusCode: 403, error: 'insufficient_scope', description: 'This route accepts user tokens only.' },
  AT_JWKS_UNAVAILABLE: { statusCode: 503, error: 'temporarily_unavailable', description: 'The signing keys are unavailable; retry shortly.' },
  ST_REJECTED: { statusCode: 502, error: 'server_error', description: 'The token endpoint refused the client credentials.' },
  ST_UNAVAILABLE: { statusCode: 503, error: 'temporarily_unavailable', description: 'The token endpoint is unavailable; retry shortly.' },
  ST_BAD_RESPONSE: { statusCode: 502, error: 'server_error', description: 'The token endpoint answered with an unusable response.' }
})

export type SharedErrorCode = keyof typeof sharedErrors.catalogue
export const sharedError = sharedErrors.create
