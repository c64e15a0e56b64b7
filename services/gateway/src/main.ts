/**
 * Starts the gateway: build the app, listen, and on SIGTERM/SIGINT drain in-flight
 * requests (readiness turns 503 first so load balancers stop routing here), close Redis,
 * and exit 0.
 */
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import type { DestinationStream } from 'pino'
import type { GatewayConfig } from './config.js'
import { buildGatewayApp } from './app.js'
import { isPoolWorker, leavePool, onPoolReload, onPoolShutdown, runWorkerPool, workerMetricsSource } from './workers.js'

/** Longest we wait for in-flight requests before exiting anyway (k8s terminationGracePeriodSeconds is above this). */
export const SHUTDOWN_GRACE_MS = 20_000
/**
 * While draining, keep-alive connections that finish their request become idle after
 * `close()` has already swept the idle ones once; sweep again this often so that they do not
 * hold the process open until the keep-alive timeout.
 */
export const DRAIN_IDLE_SWEEP_MS = 100

export interface StartGatewayOptions {
  /** Closed with the gateway (`dev` runs the resource service in the same process). */
  readonly alsoClose?: () => Promise<void>
  /** Where log lines go; default stdout (JSON lines). */
  readonly logStream?: DestinationStream | undefined
}

export async function startGateway (config: GatewayConfig, options: StartGatewayOptions = {}): Promise<FastifyInstance> {
  const worker = isPoolWorker()
  const app = await buildGatewayApp(config, {
    ...(worker ? { metricsSource: workerMetricsSource } : {}),
    ...(options.logStream === undefined ? {} : { logStream: options.logStream })
  })
  // SIGHUP: re-read USERS_FILE, CLIENTS_FILE, SIGNING_KEYS_FILE now (they are also watched). Each refusal logs itself.
  const reload = (): void => {
    void app.latchkey.files.reload().then((files) => { app.log.info({ event: 'config_reread', files }, 'SIGHUP: config files re-read') })
  }
  process.on('SIGHUP', reload)
  app.addHook('onClose', async () => { process.off('SIGHUP', reload) })
  if (worker) onPoolReload(reload)
  let closing = false
  // SIGHUP reloads the config files (above), it does not shut down.
  const handle = closeWithGrace({ delay: SHUTDOWN_GRACE_MS, skip: ['SIGHUP'] }, async ({ signal, err }) => {
    closing = true
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal: signal ?? 'pool shutdown' }, 'shutting down: draining in-flight requests')
    app.latchkey.readiness.draining = true
    const sweep = setInterval(() => { app.server.closeIdleConnections() }, DRAIN_IDLE_SWEEP_MS)
    try {
      await Promise.all([app.close(), options.alsoClose?.()])
    } finally {
      clearInterval(sweep)
    }
  })
  try {
    await app.listen({ port: config.port, host: config.host })
  } catch (err) {
    // Nothing was served: release Redis and the rest so that the process can exit with the error.
    handle.uninstall()
    await app.close()
    throw err
  }
  if (worker) onPoolShutdown(() => { if (!closing) void handle.close() })
  return app
}

/** `latchkey gateway`: one process, or with WORKERS > 1 a pool of them on the same port (workers.ts). */
export async function serveGateway (config: GatewayConfig): Promise<void> {
  if (config.workers > 1 && !isPoolWorker()) {
    await runWorkerPool(config, SHUTDOWN_GRACE_MS)
    return
  }
  try {
    await startGateway(config)
  } catch (err) {
    // A worker that cannot start must exit (the primary then stops the pool); its IPC channel would keep it alive.
    if (isPoolWorker()) leavePool()
    throw err
  }
}
