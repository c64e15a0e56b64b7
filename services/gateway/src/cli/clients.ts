/**
 * `latchkey clients add <id> --scope "a b" --audience A [--audience B]
 *                        [--grant client_credentials|password|refresh_token]... [--file FILE]
 *                        [--jwks FILE | --jwks-uri URL |
 *                         --federated-issuer URL --federated-subject SUB [--federated-jwks-uri URL]]
 *                        [--exchange-audience A]...`
 * `latchkey clients list | remove <id> | disable <id> | enable <id> | rotate-secret <id> [--overlap 24h]`
 *
 * `add` and `rotate-secret` print the generated client secret once, on stdout (scriptable:
 * `... | awk '/^client_secret:/ {print $2}'`); only its keyed hash is stored. With
 * `--jwks`, `--jwks-uri` or `--federated-*` the client proves itself with a signed
 * assertion instead (RFC 7523) and gets no secret at all. After `rotate-secret` the old
 * secret keeps working for the overlap (default 24 h), then stops. A running gateway
 * reloads the file within a second: a disabled or removed client gets `invalid_client`
 * from then on.
 *
 * Exit codes: 0 done, 1 refused (unknown or duplicate id, invalid value, unreadable file), 2 usage.
 */
import { parseCommandArgs } from './args.js'
import { readFile } from 'node:fs/promises'
import type { JSONWebKeySet } from 'jose'
import { readDurationS } from '#shared/config.js'
import { ConfigError } from '#shared/errors.js'
import {
  type Client, type ClientKeys, type ClientSummary, GRANT_TYPES, SECRET_OVERLAP_MS,
  addClient, addKeyClient, addPublicClient, listClients, removeClient, rotateClientSecret, setClientDisabled
} from '../identity/clients-file.js'
import { parsePublicJwks } from '../identity/client-keys.js'
import type { CliIo } from './io.js'

const USAGE = `usage: latchkey clients <command> [--file FILE]   (file default: $CLIENTS_FILE)
  add <id> --scope "a b" --audience A [--audience B] [--grant ${GRANT_TYPES.join('|')}]...
      [--jwks FILE | --jwks-uri URL | --federated-issuer URL --federated-subject SUBJECT [--federated-jwks-uri URL]]
      [--exchange-audience A]... [--redirect-uri URI]...
                                  register a client (grant default: client_credentials); prints its
                                  secret once, or with keys / a federated trust gets no secret
  add <id> --public --redirect-uri URI [--redirect-uri URI]... --scope "a b" --audience A
                                  a native app (public client: no secret; authorization code +
                                  PKCE, then refresh_token; loopback redirects match any port)
  list                            every client: id, enabled|disabled, scope, audiences, grants
  remove <id>                     delete the client
  disable <id> | enable <id>      refuse (or accept again) the client's credentials
  rotate-secret <id> [--overlap D]
                                  a new secret, printed once; the old one works for D more
                                  (300, 30m, 24h, 7d; default 24h; 0 stops it at once)`
/** Longest overlap rotate-secret accepts. */
const MAX_OVERLAP_S = 90 * 86400
const ADD_ONLY = ['scope', 'audience', 'grant', 'jwks', 'jwks-uri', 'federated-issuer', 'federated-subject', 'federated-jwks-uri', 'exchange-audience', 'redirect-uri', 'public'] as const

type Values = Partial<Record<typeof ADD_ONLY[number] | 'overlap' | 'file', string | string[] | boolean>>

export async function runClientsCommand (argv: string[], io: CliIo, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  let parsed
  try {
    parsed = parseCommandArgs(argv, {
        scope: { type: 'string' },
        audience: { type: 'string', multiple: true },
        grant: { type: 'string', multiple: true },
        overlap: { type: 'string' },
        file: { type: 'string' },
        jwks: { type: 'string' },
        'jwks-uri': { type: 'string' },
        'federated-issuer': { type: 'string' },
        'federated-subject': { type: 'string' },
        'federated-jwks-uri': { type: 'string' },
        'exchange-audience': { type: 'string', multiple: true },
        'redirect-uri': { type: 'string', multiple: true },
        public: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' }
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
      case 'add': return await add(io, file, clientId, values)
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
        printSecret(say, secret)
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

/** `clients add`: with a secret, or with keys / a federated trust and no secret. */
async function add (io: CliIo, file: string, id: string, values: Values): Promise<number> {
  const str = (name: keyof Values): string | undefined => values[name] as string | undefined
  const federated = str('federated-issuer') !== undefined || str('federated-subject') !== undefined || str('federated-jwks-uri') !== undefined
  const keyOptions = [str('jwks') !== undefined, str('jwks-uri') !== undefined, federated].filter(Boolean).length
  if (keyOptions > 1) {
    io.stderr.write(`latchkey clients: give one of --jwks, --jwks-uri or --federated-*\n${USAGE}\n`)
    return 2
  }
  if (federated && (str('federated-issuer') === undefined || str('federated-subject') === undefined)) {
    io.stderr.write(`latchkey clients: --federated-issuer and --federated-subject go together\n${USAGE}\n`)
    return 2
  }
  const redirectUris = values['redirect-uri'] as string[] | undefined
  const input = {
    id,
    scope: str('scope') as string,
    audiences: values.audience as string[],
    grants: values.grant as string[] | undefined,
    exchangeAudiences: values['exchange-audience'] as string[] | undefined,
    ...(redirectUris === undefined ? {} : { redirectUris })
  }
  const added = (client: Client): string => `added client ${JSON.stringify(client.id)} to ${file} ` +
    `(scope "${client.scope.join(' ')}", audiences ${client.audiences.join(',')}, grants ${client.grants.join(',')}` +
    `${client.exchangeAudiences === undefined ? '' : `, exchanges into ${client.exchangeAudiences.join(',')}`}` +
    `${client.redirectUris === undefined ? '' : `, redirect URIs ${client.redirectUris.join(' ')}`})\n` +
    `client_id: ${client.id}\n`
  if (values.public === true) {
    if (keyOptions > 0) {
      io.stderr.write(`latchkey clients: a public client has no keys\n${USAGE}\n`)
      return 2
    }
    const client = await addPublicClient(file, input)
    io.stdout.write(`${added(client)}client_auth: none (a public client: PKCE protects its codes, rotation its refresh tokens)\n`)
    return 0
  }
  if (keyOptions === 0) {
    const { client, secret } = await addClient(file, input)
    io.stdout.write(added(client))
    printSecret((line) => { io.stdout.write(`${line}\n`) }, secret)
    return 0
  }
  let keys: ClientKeys
  const jwksFile = str('jwks')
  const jwksUri = str('jwks-uri')
  if (jwksFile !== undefined) {
    keys = { jwks: await readJwksFile(jwksFile) }
  } else if (jwksUri !== undefined) {
    keys = { jwksUri }
  } else {
    const federatedJwksUri = str('federated-jwks-uri')
    keys = { federated: { issuer: str('federated-issuer') as string, subject: str('federated-subject') as string, ...(federatedJwksUri === undefined ? {} : { jwksUri: federatedJwksUri }) } }
  }
  const client = await addKeyClient(file, { ...input, keys })
  const how = 'jwks' in keys
    ? `private_key_jwt with the ${keys.jwks.keys.length} public key(s) of ${jwksFile ?? ''}`
    : 'jwksUri' in keys ? `private_key_jwt with the keys at ${keys.jwksUri}` : `tokens of ${keys.federated.issuer} for subject ${keys.federated.subject}`
  io.stdout.write(`${added(client)}client_auth: ${how} (no secret)\n`)
  return 0
}

function printSecret (say: (line: string) => void, secret: string): void {
  say(`client_secret: ${secret}`)
  say('This secret is shown only this once and cannot be recovered (only a hash is stored); keep it now.')
}

function describe (c: ClientSummary): string {
  const previous = c.previousSecretExpiresAt === undefined ? [] : [`previous secret until ${new Date(c.previousSecretExpiresAt).toISOString()}`]
  return [c.id, c.disabled === true ? 'disabled' : 'enabled', c.scope.join(' '), c.audiences.join(','), c.grants.join(','), ...previous].join('\t')
}

/** A public JWKS (or one public JWK) from a file; a private key is refused, never copied. */
async function readJwksFile (path: string): Promise<JSONWebKeySet> {
  let json: unknown
  try {
    json = JSON.parse(await readFile(path, 'utf8'))
  } catch {
    throw new ConfigError('jwks', `${path}: cannot be read as JSON`)
  }
  const set = typeof json === 'object' && json !== null && 'kty' in json ? { keys: [json] } : json
  const jwks = parsePublicJwks(set)
  if (typeof jwks === 'string') throw new ConfigError('jwks', `${path}: ${jwks}`)
  return jwks
}
