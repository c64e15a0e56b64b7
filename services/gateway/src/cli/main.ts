/**
 * The `latchkey` command. Configuration is read from the environment here, once, and
 * handed to the services; a bad value prints one line and exits 2, without a stack.
 */
import { ConfigError } from '#shared/errors.js'
import { loadGatewayConfig } from '../config.js'
import { startGateway } from '../main.js'
import type { CliIo } from './io.js'
import { runKeysCommand } from './keys.js'
import { runUsersCommand } from './users.js'
import { runClientsCommand } from './clients.js'
import { printWalkthrough } from './walkthrough.js'

const USAGE = `usage: latchkey <command>

  gateway                         run the auth gateway (:8080)
  dev                             run the gateway on embedded defaults and print a walkthrough
  keys generate [--alg EdDSA|ES256|RS256] [--out FILE]
                                  write a private JWKS (the first key signs)
  users add <name> [--scope "a b"] [--file FILE]
                                  add a user (password from stdin, or prompted)
  clients add <id> --scope "a b" --audience A [--grant G] [--file FILE]
                                  add an OAuth client (prints its secret once)

Configuration is read from the environment; see README.md.`

function fail (io: CliIo, line: string): number {
  io.stderr.write(`latchkey: ${line}\n`)
  return 2
}

export async function main (argv: string[], io: CliIo, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  const [command, ...rest] = argv
  try {
    switch (command) {
      case 'gateway': {
        await startGateway(loadGatewayConfig(env))
        return -1
      }
      case 'dev': {
        const config = loadGatewayConfig(env, { devMode: true })
        const app = await startGateway(config)
        printWalkthrough(io, config, app.latchkey.demoPassword)
        return -1
      }
      case 'keys': return await runKeysCommand(rest, io)
      case 'users': return await runUsersCommand(rest, io, env)
      case 'clients': return await runClientsCommand(rest, io, env)
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
