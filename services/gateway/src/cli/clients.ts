/**
 * `latchkey clients add <id> --scope "a b" --audience A [--audience B]
 *                        [--grant client_credentials|password|refresh_token]... [--file FILE]
 *                        [--jwks FILE | --jwks-uri URL |
 *                         --federated-issuer URL --federated-subject SUB [--federated-jwks-uri URL]]
 *                        [--exchange-audience A]...`
 *
 * Prints the generated client secret once, on stdout (scriptable:
 * `... | awk '/^client_secret:/ {print $2}'`); only its keyed hash is stored. With
 * `--jwks`, `--jwks-uri` or `--federated-*` the client proves itself with a signed
 * assertion instead (RFC 7523) and gets no secret at all.
 *
 * Exit codes: 0 added, 1 refused (duplicate id, invalid value, unreadable file), 2 usage.
 */
import { parseArgs } from 'node:util'
import { ConfigError } from '#shared/errors.js'
import { readFile } from 'node:fs/promises'
import type { JSONWebKeySet } from 'jose'
import { GRANT_TYPES, addClient, addKeyClient, type Client, type ClientKeys } from '../identity/clients-file.js'
import { parsePublicJwks } from '../identity/client-keys.js'
import type { CliIo } from './io.js'

const USAGE = 'usage: latchkey clients add <id> --scope "a b" --audience A [--audience B] ' +
  `[--grant ${GRANT_TYPES.join('|')}]... [--file FILE] ` +
  '[--jwks FILE | --jwks-uri URL | --federated-issuer URL --federated-subject SUBJECT [--federated-jwks-uri URL]] ' +
  '[--exchange-audience A]...   (file default: $CLIENTS_FILE; grant default: client_credentials)'

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
        jwks: { type: 'string' },
        'jwks-uri': { type: 'string' },
        'federated-issuer': { type: 'string' },
        'federated-subject': { type: 'string' },
        'federated-jwks-uri': { type: 'string' },
        'exchange-audience': { type: 'string', multiple: true },
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

  const federated = values['federated-issuer'] !== undefined || values['federated-subject'] !== undefined || values['federated-jwks-uri'] !== undefined
  const keyOptions = [values.jwks !== undefined, values['jwks-uri'] !== undefined, federated].filter(Boolean).length
  if (keyOptions > 1) {
    io.stderr.write(`latchkey clients: give one of --jwks, --jwks-uri or --federated-*\n${USAGE}\n`)
    return 2
  }
  if (federated && (values['federated-issuer'] === undefined || values['federated-subject'] === undefined)) {
    io.stderr.write(`latchkey clients: --federated-issuer and --federated-subject go together\n${USAGE}\n`)
    return 2
  }
  const input = { id, scope: values.scope, audiences: values.audience, grants: values.grant, exchangeAudiences: values['exchange-audience'] }
  const describe = (client: Client): string => `added client ${JSON.stringify(client.id)} to ${file} ` +
    `(scope "${client.scope.join(' ')}", audiences ${client.audiences.join(',')}, grants ${client.grants.join(',')}` +
    `${client.exchangeAudiences === undefined ? '' : `, exchanges into ${client.exchangeAudiences.join(',')}`})\n` +
    `client_id: ${client.id}\n`

  try {
    if (keyOptions === 0) {
      const { client, secret } = await addClient(file, input)
      io.stdout.write(
        describe(client) +
        `client_secret: ${secret}\n` +
        'This secret is shown only this once and cannot be recovered (only a hash is stored); keep it now.\n'
      )
      return 0
    }
    let keys: ClientKeys
    if (values.jwks !== undefined) {
      keys = { jwks: await readJwksFile(values.jwks) }
    } else if (values['jwks-uri'] !== undefined) {
      keys = { jwksUri: values['jwks-uri'] }
    } else {
      const jwksUri = values['federated-jwks-uri']
      keys = { federated: { issuer: values['federated-issuer'] as string, subject: values['federated-subject'] as string, ...(jwksUri === undefined ? {} : { jwksUri }) } }
    }
    const client = await addKeyClient(file, { ...input, keys })
    const how = 'jwks' in keys
      ? `private_key_jwt with the ${keys.jwks.keys.length} public key(s) of ${values.jwks ?? ''}`
      : 'jwksUri' in keys ? `private_key_jwt with the keys at ${keys.jwksUri}` : `tokens of ${keys.federated.issuer} for subject ${keys.federated.subject}`
    io.stdout.write(`${describe(client)}client_auth: ${how} (no secret)\n`)
    return 0
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr.write(`latchkey clients: ${err.message}\n`)
      return 1
    }
    throw err
  }
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
