import type { FastifyInstance } from 'fastify'
import type { Clock } from '#shared/clock.js'
import type { NotesStore } from '../notes-store.js'

export const INTERNAL_READ = 'internal:read'

/** `GET /internal/stats`: for other services only (client-credentials tokens with `internal:read`). */
export async function internalRoutes (app: FastifyInstance, options: { store: NotesStore, clock: Clock }): Promise<void> {
  const startedAt = options.clock.now()
  app.get('/internal/stats', { onRequest: app.requireToken([INTERNAL_READ], { kind: 'service' }) }, async () => {
    const tokens = app.accessTokens.stats()
    return {
      uptime_s: Math.floor((options.clock.now() - startedAt) / 1000),
      notes: options.store.stats(),
      tokens: { outcomes: tokens.outcomes, cached: tokens.cachedTokens, jwks: tokens.jwks ?? null }
    }
  })
}
