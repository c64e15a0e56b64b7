/**
 * A copy of the resource service's Fastify set-up (services/resource/src/app.ts: the same
 * server options, request ids, error handlers and per-request metrics hook) serving only
 * `GET /api/me`, so that a peer differs from the real resource in one thing: how, or
 * whether, the bearer token is checked.
 */
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance, type onRequestHookHandler } from 'fastify'
import { createResourceMetrics } from '#resource/metrics.js'

const BODY_LIMIT_BYTES = 16 * 1024
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export interface Caller {
  readonly sub: string
  readonly client_id: string
  readonly scope: string
  readonly sid: string | null
  readonly exp: number
}

export interface ShellOptions {
  /** Registers whatever the auth needs (a plugin) before the route. */
  readonly setup?: (app: FastifyInstance) => Promise<void>
  /** The route's onRequest hook; none for the unauthenticated ceiling. */
  readonly guard?: onRequestHookHandler
  /** Who the caller is, once the guard let the request in. */
  readonly caller: (request: Parameters<onRequestHookHandler>[0]) => Caller
}

export async function buildShell (options: ShellOptions): Promise<FastifyInstance> {
  const metrics = createResourceMetrics()
  const app = Fastify({
    logger: { level: 'warn' },
    bodyLimit: BODY_LIMIT_BYTES,
    genReqId: (req) => {
      const id = req.headers['x-request-id']
      return typeof id === 'string' && REQUEST_ID.test(id) ? id : randomUUID()
    },
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } }
  })
  app.removeContentTypeParser('text/plain')
  app.setErrorHandler((err, request, reply) => {
    const status = (err as { statusCode?: number }).statusCode ?? 500
    if (status >= 500) request.log.error({ err }, 'request failed')
    return reply.code(status).send({ error: status === 401 ? 'invalid_token' : 'server_error' })
  })
  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ error: 'not_found' }))
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    metrics.requests.inc({ method: request.method, route, status: String(reply.statusCode) })
    metrics.duration.observe({ method: request.method, route }, reply.elapsedTime / 1000)
  })
  app.get('/healthz', async () => ({ status: 'ok' }))
  if (options.setup !== undefined) await options.setup(app)
  app.get('/api/me', options.guard === undefined ? {} : { onRequest: options.guard }, async (request) => options.caller(request))
  return app
}
