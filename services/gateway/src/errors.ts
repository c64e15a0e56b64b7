/**
 * The gateway's error catalogue. Codes are stable; wire names follow RFC 6749 §5.2
 * (token endpoint). Access-token refusals (RFC 6750 §3.1) are the shared catalogue's `AT_*`
 * codes, raised by the one verifier (#shared/access-token-verifier.js).
 */
import { defineCatalogue } from '#shared/errors.js'

export const gatewayErrors = defineCatalogue({
  GW_INVALID_REQUEST: { statusCode: 400, error: 'invalid_request', description: 'The request is malformed.' },
  GW_INVALID_CREDENTIALS: { statusCode: 401, error: 'invalid_grant', description: 'Invalid username or password.' },
  GW_INVALID_GRANT: { statusCode: 401, error: 'invalid_grant', description: 'The refresh token is invalid, expired or revoked.' },
  GW_CROSS_SITE: { statusCode: 403, error: 'forbidden', description: 'Cross-site requests are not allowed on this route.' },
  GW_SESSION_NOT_FOUND: { statusCode: 404, error: 'not_found', description: 'No such session.' },
  GW_NOT_FOUND: { statusCode: 404, error: 'not_found', description: 'Not found.' },
  GW_METHOD_NOT_ALLOWED: { statusCode: 405, error: 'method_not_allowed', description: 'Method not allowed.' },
  GW_BODY_TOO_LARGE: { statusCode: 413, error: 'invalid_request', description: 'The request body is too large.' },
  GW_UNSUPPORTED_MEDIA_TYPE: { statusCode: 415, error: 'invalid_request', description: 'Unsupported content type.' },
  GW_HEADERS_TOO_LARGE: { statusCode: 431, error: 'invalid_request', description: 'Request headers are too large.' },
  GW_RATE_LIMITED: { statusCode: 429, error: 'too_many_requests', description: 'Too many attempts; retry later.' },
  // Token and revocation endpoints: RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 8707 §2.
  GW_OAUTH_INVALID_REQUEST: { statusCode: 400, error: 'invalid_request', description: 'The request is missing a parameter, repeats one, or is otherwise malformed.' },
  GW_OAUTH_INVALID_GRANT: { statusCode: 400, error: 'invalid_grant', description: 'The grant is invalid, expired or revoked.' },
  GW_OAUTH_INVALID_CREDENTIALS: { statusCode: 400, error: 'invalid_grant', description: 'Invalid username or password.' },
  GW_INVALID_CLIENT: { statusCode: 401, error: 'invalid_client', description: 'Client authentication failed.' },
  GW_UNAUTHORIZED_CLIENT: { statusCode: 400, error: 'unauthorized_client', description: 'The client may not use this grant type.' },
  GW_UNSUPPORTED_GRANT_TYPE: { statusCode: 400, error: 'unsupported_grant_type', description: 'The grant type is not supported.' },
  GW_INVALID_SCOPE: { statusCode: 400, error: 'invalid_scope', description: 'The requested scope is invalid or exceeds what the client may ask for.' },
  GW_INVALID_TARGET: { statusCode: 400, error: 'invalid_target', description: 'The requested audience or resource is not allowed for this client.' },
  GW_OAUTH_UNSUPPORTED_MEDIA_TYPE: { statusCode: 400, error: 'invalid_request', description: 'OAuth requests are application/x-www-form-urlencoded.' },
  GW_OAUTH_BODY_TOO_LARGE: { statusCode: 400, error: 'invalid_request', description: 'The request body is too large.' },
  GW_OAUTH_METHOD_NOT_ALLOWED: { statusCode: 405, error: 'invalid_request', description: 'This endpoint accepts POST only.' },
  // A 429 in the §5.2 shape: a registered code that tells the client to come back later.
  GW_OAUTH_RATE_LIMITED: { statusCode: 429, error: 'temporarily_unavailable', description: 'Too many attempts; retry after the time in Retry-After.' },
  GW_TOKEN_OF_ANOTHER_CLIENT: { statusCode: 400, error: 'unauthorized_client', description: 'The token was not issued to this client.' },
  GW_UNSUPPORTED_TOKEN_TYPE: { statusCode: 400, error: 'unsupported_token_type', description: 'Only refresh tokens can be revoked here.' },
  // Reverse proxy (docs/contract.md "Proxy"): generic texts, never the upstream's address or errno.
  // Forward-auth (/auth/verify): nginx turns any status but 2xx/401/403 into a 500.
  GW_FORWARD_AUTH_DENIED: { statusCode: 403, error: 'forbidden', description: 'No route admits this request.' },
  GW_PROXY_CALLER_BUSY: { statusCode: 429, error: 'too_many_requests', description: 'Too many requests of this session are in progress; retry shortly.' },
  GW_PROXY_PATH_NOT_ALLOWED: { statusCode: 400, error: 'invalid_request', description: 'The request path is not allowed.' },
  GW_BAD_GATEWAY: { statusCode: 502, error: 'bad_gateway', description: 'The upstream service is unavailable.' },
  GW_GATEWAY_TIMEOUT: { statusCode: 504, error: 'gateway_timeout', description: 'The upstream service did not answer in time.' },
  GW_CLIENT_KEYS_UNAVAILABLE: { statusCode: 503, error: 'temporarily_unavailable', description: "The client's keys could not be fetched; retry shortly." },
  GW_STORE_UNAVAILABLE: { statusCode: 503, error: 'temporarily_unavailable', description: 'The session store is unavailable; retry shortly.' },
  // A grace retry whose successor a gateway with another REFRESH_TOKEN_KEY made (sessions/refresh-token.ts).
  GW_REFRESH_KEY_MISMATCH: { statusCode: 503, error: 'temporarily_unavailable', description: 'This refresh cannot be completed here; retry shortly.' },
  // Upstream sign-in (OIDC): RFC 6749 §4.1.2.1 names; Back-Channel Logout 1.0 §2.8 answers 400.
  GW_OIDC_UNKNOWN_PROVIDER: { statusCode: 404, error: 'not_found', description: 'No such identity provider.' },
  GW_OIDC_BAD_RETURN_TO: { statusCode: 400, error: 'invalid_request', description: 'return_to must be on this gateway\'s origin or an allowed origin.' },
  GW_OIDC_STATE: { statusCode: 400, error: 'invalid_request', description: 'This sign-in is unknown, expired, already used, or was started in another browser; start again.' },
  GW_OIDC_IDP_ERROR: { statusCode: 400, error: 'access_denied', description: 'The identity provider did not sign you in.' },
  GW_OIDC_INVALID_RESPONSE: { statusCode: 400, error: 'invalid_request', description: 'The identity provider\'s answer failed validation; no session was created.' },
  GW_OIDC_DENIED: { statusCode: 403, error: 'access_denied', description: 'Your identity provider account is not allowed to sign in here.' },
  GW_OIDC_LOGOUT_TOKEN: { statusCode: 400, error: 'invalid_request', description: 'The logout token is invalid.' },
  // RFC 6749 §4.1.2.1: an unknown client or an unregistered redirect_uri is never redirected to.
  GW_AUTHORIZE_BAD_CLIENT: { statusCode: 400, error: 'invalid_request', description: 'Unknown client_id, a client without authorization_code, or a redirect_uri it did not register; not redirected.' },
  GW_OIDC_UNAVAILABLE: { statusCode: 503, error: 'temporarily_unavailable', description: 'The identity provider cannot be reached; retry shortly.' },
  GW_INTERNAL: { statusCode: 500, error: 'server_error', description: 'Internal server error.' }
})

export type GatewayErrorCode = keyof typeof gatewayErrors.catalogue
export const gatewayError = gatewayErrors.create
