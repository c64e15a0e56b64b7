/**
 * `latchkey clients add <id> --scope "a b" --audience A [--audience B]
 *                        [--grant client_credentials|password|refresh_token]... [--file FILE]`
 * `latchkey clients list | remove <id> | disable <id> | enable <id> | rotate-secret <id> [--overlap 24h]`
 *
 * `add` and `rotate-secret` print the generated client secret once, on stdout (scriptable:
 * `... | awk '/^client_secret:/ {print $2}'`); only its keyed hash is stored. After
 * `rotate-secret` the old secret keeps working for the overlap (default 24 h), then stops.
 * A running gateway reloads the file within a second: a disabled or removed client gets
 * `invalid_client` from then on.
 *
 * Exit codes: 0 done, 1 refused (unknown or duplicate id, invalid value, unreadable file), 2 usage.
 */
import { parseArgs } from 'node:util'
import { ConfigError } from '#shared/errors.js'
import { readDurationS } from '#shared/config.js'
import {
  type ClientSummary, GRANT_TYPES, SECRET_OVERLAP_MS, addClient, listClients, removeClient, rotateClientSecret, setClientDisabled
} from '../identity/clients-file.js'
import type { CliIo } from './io.js'

const USAGE = `usage: latchkey clients <command> [--file FILE]   (file default: $CLIENTS_FILE)
  add <id> --scope "a b" --audience A [--audience B] [--grant ${GRANT_TYPES.join('|')}]...
                                  register a client (grant default: client_credentials); prints its secret once
  list                            every client: id, enabled|disabled, scope, audiences, grants
  remove <id>                     delete the client
  disable <id> | enable <id>      refuse (or accept again) the client's credentials
  rotate-secret <id> [--overlap D]
                                  a new secret, printed once; the old one works for D more
                                  (300, 30m, 24h, 7d; default 24h; 0 stops it at once)`
/** Longest overlap rotate-secret accepts. */
const MAX_OVERLAP_S = 90 * 86400
const ADD_ONLY = ['scope', 'audience', 'grant'] as const

export async function runClientsCommand (argv: string[], io: CliIo, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        scope: { type: 'string' },
        audience: { type: 'string', multiple: true },
        grant: { type: 'string', multiple: true },
        overlap: { type: 'string' },
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
  const usage = (): number => { io.stderr.write(`${USAGE}\n`); return 2 }
  const known = ['add', 'list', 'remove', 'disable', 'enable', 'rotate-secret']
  if (sub === undefined || !known.includes(sub) || extra.length > 0) return usage()
  if ((sub === 'list') !== (id === undefined)) return usage()
  if (sub !== 'add' && ADD_ONLY.some(option => values[option] !== undefined)) return usage()
  if (sub !== 'rotate-secret' && values.overlap !== undefined) return usage()
  if (sub === 'add' && (values.scope === undefined || values.audience === undefined)) {
    io.stderr.write(`latchkey clients: --scope and --audience are required\n${USAGE}\n`)
    return 2
  }
  const file = values.file ?? env.CLIENTS_FILE
  if (file === undefined || file === '') {
    io.stderr.write('latchkey clients: no clients file: pass --file FILE or set CLIENTS_FILE\n')
    return 2
  }
  const clientId = id as string
  const say = (line: string): void => { io.stdout.write(`${line}\n`) }

  try {
    switch (sub) {
      case 'add': {
        const { client, secret } = await addClient(file, { id: clientId, scope: values.scope as string, audiences: values.audience as string[], grants: values.grant })
        say(`added client ${JSON.stringify(client.id)} to ${file} ` +
          `(scope "${client.scope.join(' ')}", audiences ${client.audiences.join(',')}, grants ${client.grants.join(',')})`)
        printSecret(say, client.id, secret)
        return 0
      }
      case 'list': {
        for (const c of await listClients(file)) say(describe(c))
        return 0
      }
      case 'remove': {
        const client = await removeClient(file, clientId)
        say(`removed client ${JSON.stringify(client.id)} from ${file}; a running gateway refuses it once it reloads the file`)
        return 0
      }
      case 'disable':
      case 'enable': {
        const client = await setClientDisabled(file, clientId, sub === 'disable')
        say(sub === 'disable'
          ? `disabled client ${JSON.stringify(client.id)} in ${file}; a running gateway refuses it once it reloads the file`
          : `enabled client ${JSON.stringify(client.id)} in ${file}`)
        return 0
      }
      default: {
        const overlapS = readDurationS({ overlap: values.overlap }, 'overlap', SECRET_OVERLAP_MS / 1000, 0, MAX_OVERLAP_S)
        const { client, secret } = await rotateClientSecret(file, clientId, overlapS * 1000)
        say(client.previousSecretExpiresAt === undefined
          ? `new secret for client ${JSON.stringify(client.id)} in ${file}; the old one stops working once the gateway reloads the file`
          : `new secret for client ${JSON.stringify(client.id)} in ${file}; the old one keeps working until ${new Date(client.previousSecretExpiresAt).toISOString()}`)
        printSecret(say, client.id, secret)
        return 0
      }
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr.write(`latchkey clients: ${err.message}\n`)
      return 1
    }
    throw err
  }
}

function printSecret (say: (line: string) => void, id: string, secret: string): void {
  say(`client_id: ${id}`)
  say(`client_secret: ${secret}`)
  say('This secret is shown only this once and cannot be recovered (only a hash is stored); keep it now.')
}

function describe (c: ClientSummary): string {
  const previous = c.previousSecretExpiresAt === undefined ? [] : [`previous secret until ${new Date(c.previousSecretExpiresAt).toISOString()}`]
  return [c.id, c.disabled === true ? 'disabled' : 'enabled', c.scope.join(' '), c.audiences.join(','), c.grants.join(','), ...previous].join('\t')
}
