/**
 * Starting the resource service as a process: listen, then drain in-flight requests on
 * SIGTERM/SIGINT (close-with-grace) before exiting. The CLI calls `startResource`.
 */
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import { type ResourceDeps, buildResourceApp } from './app.js'
import type { ResourceConfig } from './config.js'

/** How long in-flight requests get to finish after SIGTERM before the process exits anyway. */
export const SHUTDOWN_GRACE_MS = 10_000

export interface RunningResource {
  readonly app: FastifyInstance
  /** `http://host:port` actually bound (useful with PORT=0). */
  readonly url: string
  /** Close the server and remove the signal handlers (for tests and the CLI's `dev`). */
  close (): Promise<void>
}

export async function startResource (config: ResourceConfig, deps: ResourceDeps = {}, options: { handleSignals?: boolean } = {}): Promise<RunningResource> {
  const app = await buildResourceApp(config, deps)
  // Hooks cannot be added once listening: the uninstall is registered first, filled in after.
  const signals: { uninstall?: () => void } = {}
  app.addHook('onClose', async () => { signals.uninstall?.() })
  const url = await app.listen({ port: config.port, host: config.host })
  // `latchkey dev` runs this beside the gateway and lets the gateway's handler close both:
  // close-with-grace exits the process when its handler finishes, so there must be one.
  if (options.handleSignals === false) return { app, url, close: async () => { await app.close() } }
  signals.uninstall = closeWithGrace({ delay: SHUTDOWN_GRACE_MS, logger: false }, async ({ err, signal }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an unexpected error')
    else app.log.info({ signal }, 'shutting down')
    await app.close()
  }).uninstall
  app.log.info({ jwksUrl: config.jwksUrl, issuer: config.issuer, audience: config.audience }, 'resource service ready')
  return { app, url, close: async () => { await app.close() } }
}
