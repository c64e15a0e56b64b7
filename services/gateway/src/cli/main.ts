/**
 * The `latchkey` command. Configuration is read from the environment here, once, and
 * handed to the services; a bad value prints one line and exits 2, without a stack.
 * The servers (and `sessions`, which needs Redis) are imported only by the commands that
 * run them: `keys`, `users` and `clients` start in a fraction of the time without
 * Fastify, OpenTelemetry and ioredis, and scripts/rotate-signing-key.sh runs them a lot.
 */
import { readFileSync } from 'node:fs'
import type { DestinationStream } from 'pino'
import { ConfigError } from '#shared/errors.js'
import { loadGatewayConfig } from '../config.js'
import { loadResourceConfig } from '#resource/config.js'
import type { CliIo } from './io.js'
import { runKeysCommand } from './keys.js'
import { runUsersCommand } from './users.js'
import { runClientsCommand } from './clients.js'
import { printWalkthrough } from './walkthrough.js'

const USAGE = `usage: latchkey <command>

  gateway                         run the auth gateway (:8080)
  resource                        run the resource service (:8081)
  dev                             run both on embedded defaults and print a walkthrough
                                  (on 127.0.0.1 unless HOST is set; RESOURCE_PORT sets the
                                  resource's port in dev)
  keys generate [--alg ES256|EdDSA|RS256] [--out FILE] [--append|--prepend]
                                  write a private JWKS (the first key signs)
  keys list|promote <kid>|retire <kid> --file FILE
                                  inspect a key file; make a key the signing one; drop one
  users add <name> [--scope "a b"] [--file FILE]
                                  add a user (password from stdin, or prompted)
  users list|remove|disable|enable|passwd|set-scope ...
                                  manage users (latchkey users --help)
  clients add <id> --scope "a b" --audience A [--grant G] [--file FILE]
                                  add an OAuth client (prints its secret once)
  clients list|remove|disable|enable|rotate-secret ...
                                  manage clients (latchkey clients --help)
  --version                       print the version
  sessions list --user NAME [--json]
  sessions revoke --user NAME [--session SID]
                                  list or end a user's sessions at every replica (needs Redis)

Configuration is read from the environment; see README.md.`

type Env = Readonly<Record<string, string | undefined>>

/**
 * Where `dev` listens unless HOST says otherwise: loopback, because it prints a working
 * password for its generated demo user.
 */
export const DEV_HOST = '127.0.0.1'

/**
 * `dev` runs both services in one process: the gateway on PORT (8080), the resource on
 * RESOURCE_PORT (8081), both on loopback unless HOST is set, wired to each other over
 * loopback, with the issuer following the gateway's port unless ISSUER is set.
 */
export function devEnvironments (env: Env): { gatewayEnv: Env, resourceEnv: Env } {
  const gatewayPort = env.PORT ?? '8080'
  const resourcePort = env.RESOURCE_PORT ?? '8081'
  const issuer = env.ISSUER ?? `http://localhost:${gatewayPort}`
  const host = env.HOST === undefined || env.HOST === '' ? DEV_HOST : env.HOST
  return {
    gatewayEnv: { ...env, HOST: host, ISSUER: issuer, RESOURCE_URL: env.RESOURCE_URL ?? `http://127.0.0.1:${resourcePort}` },
    resourceEnv: {
      ...env,
      PORT: resourcePort,
      HOST: host,
      ISSUER: issuer,
      JWKS_URL: env.JWKS_URL ?? `http://127.0.0.1:${gatewayPort}/.well-known/jwks.json`
    }
  }
}

/** The version in the package.json above this file (source or dist/ alike). */
function version (): string {
  for (let dir = new URL('./', import.meta.url); dir.pathname !== '/'; dir = new URL('../', dir)) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { name?: unknown, version?: unknown }
      if (pkg.name === 'latchkey' && typeof pkg.version === 'string') return pkg.version
    } catch {
      // No package.json here: look one level up.
    }
  }
  return 'unknown'
}

/** Pretty log lines when a person watches `dev` in a terminal; JSON lines when its output goes anywhere else. */
async function devLogStreams (io: CliIo): Promise<{ gateway?: DestinationStream, resource?: DestinationStream }> {
  if ((io.stdout as { isTTY?: boolean }).isTTY !== true) return {}
  const { devLogStream } = await import('./dev-log.js')
  return {
    gateway: devLogStream(io.stdout, 'gateway', { colorize: true }),
    resource: devLogStream(io.stdout, 'resource', { colorize: true })
  }
}

/**
 * `dev`: the resource first (the gateway proxies to it), then the gateway. If the gateway
 * cannot start (a taken port), the resource is closed too, so that the process exits with
 * the error instead of lingering half up.
 */
async function runDev (io: CliIo, env: Env): Promise<void> {
  const [{ startGateway }, { startResource }] = await Promise.all([import('../main.js'), import('#resource/main.js')])
  const { gatewayEnv, resourceEnv } = devEnvironments(env)
  const gatewayConfig = loadGatewayConfig(gatewayEnv, { devMode: true })
  const logs = await devLogStreams(io)
  const resource = await startResource(loadResourceConfig(resourceEnv), { logStream: logs.resource }, { handleSignals: false })
  let app: Awaited<ReturnType<typeof startGateway>>
  try {
    app = await startGateway(gatewayConfig, { alsoClose: resource.close, logStream: logs.gateway })
  } catch (err) {
    await resource.close()
    throw err
  }
  printWalkthrough(io, gatewayConfig, app.latchkey.demoPassword, resource.url)
}

function fail (io: CliIo, line: string): number {
  io.stderr.write(`latchkey: ${line}\n`)
  return 2
}

export async function main (argv: string[], io: CliIo, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  const [command, ...rest] = argv
  try {
    switch (command) {
      case 'gateway': {
        const config = loadGatewayConfig(env)
        const { serveGateway } = await import('../main.js')
        await serveGateway(config)
        return -1
      }
      case 'resource': {
        const config = loadResourceConfig(env)
        const { startResource } = await import('#resource/main.js')
        await startResource(config)
        return -1
      }
      case 'dev': {
        await runDev(io, env)
        return -1
      }
      case 'keys': return await runKeysCommand(rest, io)
      case 'users': return await runUsersCommand(rest, io, env)
      case 'clients': return await runClientsCommand(rest, io, env)
      case '--version':
      case '-v':
      case 'version':
        io.stdout.write(`latchkey ${version()}\n`)
        return 0
      case 'sessions': return await (await import('./sessions.js')).runSessionsCommand(rest, io, env)
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.stdout.write(`${USAGE}\n`)
        return command === undefined ? 2 : 0
      default:
        return fail(io, `unknown command ${JSON.stringify(command)} (try latchkey --help)`)
    }
  } catch (err) {
    if (err instanceof ConfigError) return fail(io, `invalid configuration: ${err.message}`)
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') return fail(io, `port already in use: ${(err as Error).message.replace(/^.*address already in use /, '')}`)
    throw err
  }
}
