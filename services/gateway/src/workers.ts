/**
 * WORKERS > 1: the gateway as a node:cluster pool on one port.
 *
 * One Node process signs, rotates and proxies on one core. The primary here builds no app:
 * it forks the workers (each one is `startGateway` on the shared port; Node's primary hands
 * connections to them round-robin), starts a new one when one dies, aggregates /metrics
 * across them, passes SIGHUP on to each (every worker then re-reads its config files; each
 * also watches them itself), and on SIGTERM/SIGINT tells each to drain and exits once all have.
 * Everything a request touches is shared through Redis and the key file (config.ts refuses
 * WORKERS > 1 without them), so any worker can serve any request of any session.
 *
 * In Kubernetes, replicas are the usual way to scale out; WORKERS is for a host (or a pod)
 * with more than one core to give a gateway.
 */
import cluster, { type Worker } from 'node:cluster'
import { AggregatorRegistry, type Registry } from 'prom-client'
import { pino } from 'pino'
import type { GatewayConfig } from './config.js'

/** A worker that dies more often than this within the window is a crash loop: the pool exits 1 and lets the supervisor decide. */
export const WORKER_MAX_RESTARTS = 5
export const WORKER_RESTART_WINDOW_MS = 60_000
/** Workers still alive this long after their own shutdown grace are killed. */
export const WORKER_EXIT_MARGIN_MS = 5_000
/** A worker waits this long for the primary's aggregated metrics. */
export const METRICS_AGGREGATION_TIMEOUT_MS = 5_000

/** IPC message types (primary ↔ worker). */
export const MESSAGE = {
  metricsRequest: 'latchkey:metrics-request',
  metricsReply: 'latchkey:metrics-reply',
  shutdown: 'latchkey:shutdown',
  reload: 'latchkey:reload'
} as const

interface Message { readonly type?: unknown, readonly id?: unknown, readonly text?: unknown }

function isMessage (value: unknown): value is Message {
  return typeof value === 'object' && value !== null
}

export function isPoolWorker (): boolean {
  return cluster.isWorker
}

/**
 * Run the pool's primary: resolves once every worker listens. The process exits when the
 * pool has stopped: 0 when every worker drained cleanly after a signal, else 1 (a worker
 * that could not start, a crash loop, a worker that did not drain).
 */
export async function runWorkerPool (config: GatewayConfig, workerGraceMs: number): Promise<void> {
  const log = pino({ level: config.logLevel, base: { pid: process.pid, role: 'primary' } })
  const aggregator = new AggregatorRegistry()
  const restarts: number[] = []
  let stopping = false
  /** Until every first worker listens: a worker that exits now would only fail again (a taken port, a bad key file). */
  let starting = true
  let exitCode = 0

  const stop = (reason: string, code: number): void => {
    if (stopping) return
    stopping = true
    exitCode = code
    log.info({ reason, workers: Object.keys(cluster.workers ?? {}).length }, 'stopping the worker pool: draining every worker')
    for (const worker of Object.values(cluster.workers ?? {})) {
      // A message, not a signal: a terminal's Ctrl-C already signalled every worker, and a
      // second signal would make a worker give up its drain.
      if (worker?.isConnected() === true) worker.send({ type: MESSAGE.shutdown })
    }
    setTimeout(() => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGKILL')
    }, workerGraceMs + WORKER_EXIT_MARGIN_MS).unref()
    // No worker left to wait for: the 'exit' listener below will not fire again.
    if (Object.keys(cluster.workers ?? {}).length === 0) exitPool()
  }

  const exitPool = (): void => {
    log.info({ exitCode }, 'worker pool stopped')
    process.exit(exitCode)
  }

  cluster.on('message', (worker: Worker, message: unknown) => {
    if (!isMessage(message) || message.type !== MESSAGE.metricsRequest) return
    aggregator.clusterMetrics().then(
      (text) => { if (worker.isConnected()) worker.send({ type: MESSAGE.metricsReply, id: message.id, text }) },
      (err: Error) => {
        log.warn({ err: { message: err.message } }, 'metrics aggregation failed')
        if (worker.isConnected()) worker.send({ type: MESSAGE.metricsReply, id: message.id })
      }
    )
  })

  cluster.on('exit', (worker: Worker, code: number | null, signal: string | null) => {
    const remaining = Object.keys(cluster.workers ?? {}).length
    if (stopping) {
      if (code !== 0) exitCode = 1
      if (remaining === 0) exitPool()
      return
    }
    if (starting) {
      log.fatal({ worker: worker.process.pid, code, signal }, 'a gateway worker exited before it listened; stopping the pool')
      stop('a worker failed to start', 1)
      return
    }
    const now = Date.now()
    restarts.push(now)
    while (restarts.length > 0 && (restarts[0] as number) < now - WORKER_RESTART_WINDOW_MS) restarts.shift()
    if (restarts.length > WORKER_MAX_RESTARTS) {
      log.fatal({ worker: worker.process.pid, code, signal, restarts: restarts.length }, 'gateway workers keep dying; stopping the pool')
      stop('crash loop', 1)
      return
    }
    log.error({ worker: worker.process.pid, code, signal }, 'gateway worker died; starting another')
    cluster.fork()
  })

  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => { stop(signal, 0) })
  // SIGHUP would end the primary (Node's default); here it means "re-read the config files", which only workers hold.
  process.on('SIGHUP', () => {
    if (stopping) return
    const workers = Object.values(cluster.workers ?? {}).filter(w => w?.isConnected() === true)
    log.info({ workers: workers.length }, 'SIGHUP: asking every worker to reload its config files')
    for (const worker of workers) worker?.send({ type: MESSAGE.reload })
  })

  // A worker that fails instead stops the pool (the 'exit' listener), and this never resolves.
  await Promise.all(Array.from({ length: config.workers }, async () => {
    await new Promise<void>((resolve) => { cluster.fork().once('listening', () => { resolve() }) })
  }))
  starting = false
  log.info({ workers: config.workers, port: config.port }, 'gateway worker pool listening')
}

/**
 * In a worker: what GET /metrics answers — every worker's metrics, aggregated by the primary
 * (counters and histograms summed), so a scrape sees the gateway, not one worker of it.
 */
export function workerMetricsSource (registry: Registry): () => Promise<string> {
  AggregatorRegistry.setRegistries([registry])
  // Constructing one installs prom-client's answer to the primary's collection requests.
  new AggregatorRegistry()
  const pending = new Map<number, (text: string | undefined) => void>()
  let nextId = 0
  process.on('message', (message: unknown) => {
    if (!isMessage(message) || message.type !== MESSAGE.metricsReply || typeof message.id !== 'number') return
    pending.get(message.id)?.(typeof message.text === 'string' ? message.text : undefined)
  })
  return async () => {
    const id = nextId++
    const text = await new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => { finish(undefined) }, METRICS_AGGREGATION_TIMEOUT_MS)
      function finish (value: string | undefined): void {
        clearTimeout(timer)
        pending.delete(id)
        resolve(value)
      }
      pending.set(id, finish)
      process.send?.({ type: MESSAGE.metricsRequest, id })
    })
    if (text === undefined) throw new Error('metrics aggregation failed')
    return text
  }
}

/** In a worker: close the channel to the primary, so that nothing but real work keeps this process alive. */
export function leavePool (): void {
  if (process.connected) process.disconnect?.()
}

/** In a worker: call `reload` when the primary passes a SIGHUP on. */
export function onPoolReload (reload: () => void): void {
  process.on('message', (message: unknown) => {
    if (isMessage(message) && message.type === MESSAGE.reload) reload()
  })
}

/** In a worker: call `shutdown` when the primary asks, or when the primary is gone. */
export function onPoolShutdown (shutdown: () => void): void {
  process.on('message', (message: unknown) => {
    if (isMessage(message) && message.type === MESSAGE.shutdown) shutdown()
  })
  process.once('disconnect', shutdown)
}
