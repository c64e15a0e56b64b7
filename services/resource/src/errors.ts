/**
 * The resource service's error catalogue. Token refusals come from the shared
 * catalogue (AT_*, shared/src/http-errors.ts); these are the service's own.
 */
import { defineCatalogue } from '#shared/errors.js'

export const resourceErrors = defineCatalogue({
  RS_INVALID_REQUEST: { statusCode: 400, error: 'invalid_request', description: 'The request is malformed.' },
  RS_NOT_FOUND: { statusCode: 404, error: 'not_found', description: 'Not found.' },
  RS_NOTE_NOT_FOUND: { statusCode: 404, error: 'not_found', description: 'No such note.' },
  RS_TOO_MANY_NOTES: { statusCode: 409, error: 'conflict', description: 'The note limit for this user is reached.' },
  RS_BODY_TOO_LARGE: { statusCode: 413, error: 'invalid_request', description: 'The request body is too large.' },
  RS_UNSUPPORTED_MEDIA_TYPE: { statusCode: 415, error: 'invalid_request', description: 'Unsupported content type.' },
  RS_NOT_READY: { statusCode: 503, error: 'temporarily_unavailable', description: 'The signing keys are not available yet.' },
  RS_INTERNAL: { statusCode: 500, error: 'server_error', description: 'Internal server error.' }
})

export type ResourceErrorCode = keyof typeof resourceErrors.catalogue
export const resourceError = resourceErrors.create
