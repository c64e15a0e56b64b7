/**
 * One error handler: catalogue errors go out as `{ error, error_description }` with their
 * status and headers; Fastify's own 4xx (bad JSON, wrong content type, too large) are
 * mapped to the same shape; anything else is a 500 whose body says nothing of the cause.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { errorBody, isLatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'

const FASTIFY_CODES: Readonly<Record<string, Parameters<typeof gatewayError>[0]>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'GW_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'GW_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'GW_INVALID_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'GW_INVALID_REQUEST'
}

/**
 * Fastify's `frameworkErrors` option: errors raised before routing (a URL that does not
 * decode, FST_ERR_BAD_URL) would otherwise answer Fastify's own body, which quotes the URL
 * back (an injection and log-forging vector); they get the catalogue's shape instead.
 */
export function frameworkErrors (err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  const e = gatewayError('GW_INVALID_REQUEST', { description: err.code === 'FST_ERR_BAD_URL' ? 'The request URL is malformed.' : undefined })
  void reply.code(e.statusCode).send(errorBody(e))
}

/** The gateway's error handler; a plugin context may map its own errors first and call this. */
export function handleError (err: FastifyError, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (isLatchkeyError(err)) {
    if (err.statusCode >= 500) req.log.warn({ code: err.code, cause: causeSummary(err.cause) }, err.error)
    for (const [k, v] of Object.entries(err.headers)) reply.header(k, v)
    return reply.code(err.statusCode).send(errorBody(err))
  }
  const mapped = err.code === undefined ? undefined : FASTIFY_CODES[err.code]
  if (mapped !== undefined) {
    const e = gatewayError(mapped)
    return reply.code(e.statusCode).send(errorBody(e))
  }
  if (err.validation !== undefined || (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500)) {
    const e = gatewayError('GW_INVALID_REQUEST')
    return reply.code(err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400).send(errorBody(e))
  }
  req.log.error({ err }, 'unhandled error')
  return reply.code(500).send(errorBody(gatewayError('GW_INTERNAL')))
}

export function installErrorHandling (app: FastifyInstance): void {
  app.setErrorHandler(handleError)

  app.setNotFoundHandler(function notFound (_req, reply) {
    return reply.code(404).send(errorBody(gatewayError('GW_NOT_FOUND')))
  })
}

/** A cause worth logging without its message (messages from drivers can carry addresses or data). */
function causeSummary (cause: unknown): Record<string, unknown> | undefined {
  if (cause === null || typeof cause !== 'object') return undefined
  const c = cause as { name?: unknown, code?: unknown, message?: unknown }
  return { name: c.name, code: c.code, message: typeof c.message === 'string' ? c.message.slice(0, 200) : undefined }
}
