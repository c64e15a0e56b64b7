/**
 * The resource service: a Fastify app that trusts nothing but the gateway's JWKS.
 * It never talks to Redis and shares no secret with the gateway.
 */
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify'
import type { DestinationStream } from 'pino'
import { accessTokenPlugin } from '#shared/access-token-plugin.js'
import { type Clock, systemClock } from '#shared/clock.js'
import { type LatchkeyError, errorBody, isLatchkeyError } from '#shared/errors.js'
import type { FetchLike, JwksTuning } from '#shared/remote-jwks.js'
import { startTracing, traceLogMixin } from '#shared/tracing.js'
import type { ResourceConfig } from './config.js'
import { resourceError } from './errors.js'
import { createResourceMetrics } from './metrics.js'
import { NotesStore } from './notes-store.js'
import { internalRoutes } from './routes/internal.js'
import { meRoutes } from './routes/me.js'
import { notesRoutes } from './routes/notes.js'
import { opsRoutes } from './routes/ops.js'

/** Notes are at most 2000 characters; nothing this service accepts is larger. */
export const BODY_LIMIT_BYTES = 16 * 1024
/** A request id from the gateway is reused for log correlation only when it looks like one. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export interface ResourceDeps {
  readonly clock?: Clock
  /** Used for JWKS fetches. */
  readonly fetch?: FetchLike
  readonly jwks?: JwksTuning
  /** Where log lines go; default stdout (JSON lines). */
  readonly logStream?: DestinationStream | undefined
}

function toLatchkeyError (err: FastifyError): LatchkeyError | undefined {
  if (err.validation !== undefined) return resourceError('RS_INVALID_REQUEST', { description: `Invalid request: ${err.message}` })
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return resourceError('RS_BODY_TOO_LARGE')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return resourceError('RS_UNSUPPORTED_MEDIA_TYPE')
  }
  const status = err.statusCode ?? 500
  return status >= 400 && status < 500 ? resourceError('RS_INVALID_REQUEST') : undefined
}

/** `service.name` of the resource service's spans. */
export const RESOURCE_SERVICE_NAME = 'latchkey-resource'

export async function buildResourceApp (config: ResourceConfig, deps: ResourceDeps = {}): Promise<FastifyInstance> {
  const clock = deps.clock ?? systemClock
  const metrics = createResourceMetrics()
  const store = new NotesStore(clock)

  const tracing = await startTracing({ endpoint: config.otlpEndpoint, serviceName: RESOURCE_SERVICE_NAME })
  const app = Fastify({
    // The trace id on every line of a traced request (only when tracing is on: no cost otherwise).
    logger: { level: config.logLevel, ...(tracing.enabled ? { mixin: traceLogMixin } : {}), ...(deps.logStream === undefined ? {} : { stream: deps.logStream }) },
    bodyLimit: BODY_LIMIT_BYTES,
    genReqId: (req) => {
      const id = req.headers['x-request-id']
      return typeof id === 'string' && REQUEST_ID.test(id) ? id : randomUUID()
    },
    // Request bodies are taken as sent: no type coercion, no silently dropped properties.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } }
  })

  // First, so that every route and hook registered after it runs inside the request's span.
  if (tracing.fastifyPlugin !== undefined) await app.register(tracing.fastifyPlugin)
  app.addHook('onClose', async () => { await tracing.shutdown() })

  // JSON only: anything else is 415 rather than a string that then fails the schema.
  app.removeContentTypeParser('text/plain')

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const known = isLatchkeyError(err) ? err : toLatchkeyError(err)
    if (known === undefined || known.statusCode >= 500) request.log.error({ err }, 'request failed')
    const answer = known ?? resourceError('RS_INTERNAL')
    return reply.code(answer.statusCode).headers(answer.headers).send(errorBody(answer))
  })
  app.setNotFoundHandler((_request, reply) => {
    const err = resourceError('RS_NOT_FOUND')
    return reply.code(err.statusCode).send(errorBody(err))
  })

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    metrics.requests.inc({ method: request.method, route, status: String(reply.statusCode) })
    metrics.duration.observe({ method: request.method, route }, reply.elapsedTime / 1000)
  })

  await app.register(accessTokenPlugin, {
    jwksUrl: config.jwksUrl,
    issuer: config.issuer,
    audience: config.audience,
    clock,
    fetch: deps.fetch,
    jwks: deps.jwks,
    onOutcome: (outcome) => metrics.tokenOutcomes.inc({ outcome }),
    onJwksFetch: (ok) => metrics.jwksFetches.inc({ result: ok ? 'ok' : 'error' })
  })
  await app.register(opsRoutes, { metrics })
  await app.register(meRoutes)
  await app.register(notesRoutes, { store })
  await app.register(internalRoutes, { store, clock })
  return app
}
