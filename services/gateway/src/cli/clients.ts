/**
 * `latchkey clients add <id> --scope "a b" --audience A [--audience B]
 *                        [--grant client_credentials|password|refresh_token]... [--file FILE]`
 *
 * Prints the generated client secret once, on stdout (scriptable:
 * `... | awk '/^client_secret:/ {print $2}'`); only its keyed hash is stored.
 *
 * Exit codes: 0 added, 1 refused (duplicate id, invalid value, unreadable file), 2 usage.
 */
import { parseArgs } from 'node:util'
import { ConfigError } from '#shared/errors.js'
import { GRANT_TYPES, addClient } from '../identity/clients-file.js'
import type { CliIo } from './io.js'

const USAGE = 'usage: latchkey clients add <id> --scope "a b" --audience A [--audience B] ' +
  `[--grant ${GRANT_TYPES.join('|')}]... [--file FILE]   (file default: $CLIENTS_FILE; grant default: client_credentials)`

export async function runClientsCommand (argv: string[], io: CliIo, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        scope: { type: 'string' },
        audience: { type: 'string', multiple: true },
        grant: { type: 'string', multiple: true },
        file: { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      },
      allowPositionals: true,
      strict: true
    })
  } catch (err) {
    io.stderr.write(`latchkey clients: ${(err as Error).message.split('\n')[0]}\n${USAGE}\n`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help === true) {
    io.stdout.write(`${USAGE}\n`)
    return 0
  }
  const [sub, id, ...extra] = positionals
  if (sub !== 'add' || id === undefined || extra.length > 0) {
    io.stderr.write(`${USAGE}\n`)
    return 2
  }
  if (values.scope === undefined || values.audience === undefined) {
    io.stderr.write(`latchkey clients: --scope and --audience are required\n${USAGE}\n`)
    return 2
  }
  const file = values.file ?? env.CLIENTS_FILE
  if (file === undefined || file === '') {
    io.stderr.write('latchkey clients: no clients file: pass --file FILE or set CLIENTS_FILE\n')
    return 2
  }

  try {
    const { client, secret } = await addClient(file, { id, scope: values.scope, audiences: values.audience, grants: values.grant })
    io.stdout.write(
      `added client ${JSON.stringify(client.id)} to ${file} ` +
      `(scope "${client.scope.join(' ')}", audiences ${client.audiences.join(',')}, grants ${client.grants.join(',')})\n` +
      `client_id: ${client.id}\n` +
      `client_secret: ${secret}\n` +
      'This secret is shown only this once and cannot be recovered (only a hash is stored); keep it now.\n'
    )
    return 0
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr.write(`latchkey clients: ${err.message}\n`)
      return 1
    }
    throw err
  }
}
