/**
 * `latchkey keys generate [--alg EdDSA|ES256|RS256] [--out FILE [--append|--prepend]]`
 *
 * Prints a private JWKS, or writes it to FILE (mode 0600). An existing FILE is only
 * changed on request, because the order of its keys is the rotation state: the first
 * key signs, every key is published.
 *
 * Exit codes: 0 done, 1 refused (FILE unreadable or not a usable private JWKS), 2 usage.
 */
import { randomBytes } from 'node:crypto'
import { readFile, rename, rm, writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { ConfigError } from '#shared/errors.js'
import { DEFAULT_SIGNING_ALG, SIGNING_ALGS, generatePrivateJwk, loadSigningKeys } from '../keys/signing-keys.js'
import type { PrivateJwk, SigningAlg } from '../keys/signing-keys.js'
import type { CliIo } from './io.js'

/** Private keys: readable by the owner only. */
const FILE_MODE = 0o600

const HELP = `usage: latchkey keys generate [--alg EdDSA|ES256|RS256] [--out FILE [--append|--prepend]]

Generates a signing key (default alg ${DEFAULT_SIGNING_ALG}; kid = its RFC 7638 thumbprint) as a
private JWKS {"keys": [...]}, the format SIGNING_KEYS_FILE expects.

  --alg ALG    EdDSA (Ed25519), ES256 (P-256) or RS256 (RSA 2048)
  --out FILE   write to FILE (mode 0600) instead of stdout; refuses an existing FILE unless:
  --append     add the key LAST: published in the JWKS, but the current first key keeps signing.
               Rotation step 1: append, restart, wait for JWKS caches to expire (5 min).
  --prepend    add the key FIRST: it signs from the next start; the old keys stay published
               so tokens they signed still verify. Rotation step 2 (or move the appended key
               first by hand); remove the old key once its last token has expired.
`

const USAGE_HINT = '(see latchkey keys --help)'

class UsageError extends Error {}

interface Options {
  readonly alg: SigningAlg
  readonly out: string | undefined
  readonly placement: 'new' | 'append' | 'prepend'
}

function parseOptions (argv: string[]): Options | 'help' {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        alg: { type: 'string' },
        out: { type: 'string', short: 'o' },
        append: { type: 'boolean' },
        prepend: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' }
      },
      allowPositionals: true,
      strict: true
    })
  } catch (err) {
    // First sentence only: parseArgs appends a paragraph about '--' to unknown options.
    throw new UsageError(((err as Error).message.split('\n')[0] ?? '').replace(/\. .*$/, ''))
  }
  const { values, positionals } = parsed
  if (values.help === true || positionals[0] === 'help') return 'help'
  const [sub, ...extra] = positionals
  if (sub === undefined) throw new UsageError('missing subcommand: generate')
  if (sub !== 'generate') throw new UsageError(`unknown subcommand ${JSON.stringify(sub)}`)
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`)
  const rawAlg = values.alg ?? DEFAULT_SIGNING_ALG
  const alg = SIGNING_ALGS.find(a => a.toLowerCase() === rawAlg.toLowerCase())
  if (alg === undefined) throw new UsageError(`unsupported --alg ${JSON.stringify(rawAlg)} (supported: ${SIGNING_ALGS.join(', ')})`)
  if (values.append === true && values.prepend === true) throw new UsageError('--append and --prepend are exclusive')
  const placement = values.append === true ? 'append' : values.prepend === true ? 'prepend' : 'new'
  if (values.out === undefined && placement !== 'new') throw new UsageError(`--${placement} needs --out FILE`)
  if (values.out === '') throw new UsageError('--out needs a file name')
  return { alg, out: values.out, placement }
}

function serialise (keys: readonly unknown[]): string {
  return `${JSON.stringify({ keys }, null, 2)}\n`
}

/** Replace FILE in one step (write a sibling, then rename) so a crash never leaves half a key set. */
async function replaceFile (file: string, text: string): Promise<void> {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`
  try {
    await writeFile(tmp, text, { mode: FILE_MODE, flag: 'wx' })
    await rename(tmp, file)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}

/** The raw key objects of an existing FILE, after checking it loads exactly as the gateway would load it. */
async function existingKeys (file: string): Promise<unknown[]> {
  // Reuse the gateway's own validation: never extend a file the gateway would refuse.
  await loadSigningKeys(file, { warn: () => {} })
  const parsed = JSON.parse(await readFile(file, 'utf8')) as { keys: unknown[] }
  return parsed.keys
}

async function write (opts: Options & { out: string }, jwk: PrivateJwk, io: CliIo): Promise<number> {
  const { out, placement } = opts
  try {
    // 'wx': create only; never follow a symlink or clobber a file that appeared meanwhile.
    await writeFile(out, serialise([jwk]), { mode: FILE_MODE, flag: 'wx' })
    io.stdout.write(`wrote ${jwk.alg} key ${jwk.kid} to ${out}; it signs\n`)
    return 0
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  if (placement === 'new') {
    throw new UsageError(`${out} exists; pass --append (publish the new key, keep signing with the current one) or --prepend (the new key signs)`)
  }
  const keys = await existingKeys(out)
  const next = placement === 'append' ? [...keys, jwk] : [jwk, ...keys]
  await replaceFile(out, serialise(next))
  const role = placement === 'append' ? 'published; the current first key still signs' : 'it signs from the next start; the other keys stay published'
  io.stdout.write(`${placement === 'append' ? 'appended' : 'prepended'} ${jwk.alg} key ${jwk.kid} to ${out} (${next.length} keys): ${role}\n`)
  return 0
}

export async function runKeysCommand (argv: string[], io: CliIo): Promise<number> {
  try {
    const opts = parseOptions(argv)
    if (opts === 'help') {
      io.stdout.write(HELP)
      return 0
    }
    const jwk = await generatePrivateJwk(opts.alg)
    if (opts.out === undefined) {
      io.stdout.write(serialise([jwk]))
      return 0
    }
    return await write({ ...opts, out: opts.out }, jwk, io)
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`latchkey keys: ${err.message} ${USAGE_HINT}\n`)
      return 2
    }
    if (err instanceof ConfigError) {
      // Loading errors name SIGNING_KEYS_FILE; here the file came from --out.
      const problem = err.message.slice(err.variable.length + 2)
      io.stderr.write(`latchkey keys: ${err.variable === 'SIGNING_KEYS_FILE' ? problem : `${err.variable}: ${problem}`}\n`)
      return 1
    }
    const code = (err as NodeJS.ErrnoException).code
    if (typeof code === 'string' && code.startsWith('E')) {
      io.stderr.write(`latchkey keys: cannot write ${(err as NodeJS.ErrnoException).path ?? 'file'} (${code})\n`)
      return 1
    }
    throw err
  }
}
