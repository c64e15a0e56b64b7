/**
 * Liveness and readiness. `/healthz` says only that the process answers (a failing Redis
 * must not get pods restarted); `/readyz` says whether this replica can serve logins:
 * the store answers, the keys are loaded, and the process is not draining.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'

export interface Readiness {
  /** Throws when a dependency is not ready. */
  check (): Promise<void>
  /** Set when shutdown starts: the load balancer should stop sending traffic. */
  draining: boolean
}

async function healthRoutes (app: FastifyInstance, opts: { readiness: Readiness }): Promise<void> {
  app.get('/healthz', async (_req, reply) => {
    reply.header('Cache-Control', 'no-store')
    return { status: 'ok' }
  })

  app.get('/readyz', async (req, reply) => {
    reply.header('Cache-Control', 'no-store')
    if (opts.readiness.draining) return reply.code(503).send({ status: 'draining' })
    try {
      await opts.readiness.check()
      return { status: 'ready' }
    } catch (err) {
      req.log.warn({ err: { code: (err as { code?: string }).code } }, 'not ready')
      return reply.code(503).send({ status: 'unavailable' })
    }
  })
}

export default fp(healthRoutes, { name: 'latchkey-health', fastify: '5.x' })
