/** What every peer shares: its configuration from the environment, and how it listens. */
import type { Server } from 'node:http'

export function requiredEnv (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(`peer: ${name} is required`)
  return value
}

export function port (): number {
  return Number(requiredEnv('PORT'))
}

export function host (): string {
  return process.env.HOST ?? '127.0.0.1'
}

/** Listen on PORT/HOST, say so on stdout, and exit cleanly on SIGTERM. */
export function listenAndAnnounce (server: Server): void {
  server.listen(port(), host(), () => { process.stdout.write(`listening on ${host()}:${port()}\n`) })
  process.once('SIGTERM', () => {
    server.close(() => process.exit(0))
    server.closeAllConnections()
  })
}
