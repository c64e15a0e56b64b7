import type { FastifyInstance } from 'fastify'
import { errorBody } from '#shared/errors.js'
import { resourceError } from '../errors.js'
import type { ResourceMetrics } from '../metrics.js'

/** Probes and metrics: unauthenticated, meant for the orchestrator and Prometheus. */
export async function opsRoutes (app: FastifyInstance, options: { metrics: ResourceMetrics }): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }))

  // Ready when tokens can be checked: JWKS keys cached, or the JWKS answers now.
  app.get('/readyz', async (_request, reply) => {
    if (await app.accessTokens.ready()) return { status: 'ready' }
    return await reply.code(503).send(errorBody(resourceError('RS_NOT_READY')))
  })

  app.get('/metrics', async (_request, reply) => {
    const { registry } = options.metrics
    return await reply.type(registry.contentType).send(await registry.metrics())
  })
}
