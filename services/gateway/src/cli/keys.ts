/**
 * `latchkey keys generate [--alg ES256|EdDSA|RS256] [--out FILE [--append|--prepend]]`
 * `latchkey keys list --file FILE`
 * `latchkey keys promote <kid> --file FILE`
 * `latchkey keys retire <kid> --file FILE`
 *
 * Prints a private JWKS, or writes it to FILE (mode 0600). An existing FILE is only
 * changed on request, because the order of its keys is the rotation state: the first
 * key signs, every key is published. A rotation without downtime is append (publish),
 * promote (sign) and retire (unpublish), each rolled out and separated by a cache
 * lifetime; scripts/rotate-signing-key.sh runs the three.
 *
 * Exit codes: 0 done, 1 refused (FILE unreadable or not a usable private JWKS, unknown
 * kid, retiring the signing key), 2 usage.
 */
import { randomBytes } from 'node:crypto'
import { readFile, rename, rm, writeFile } from 'node:fs/promises'
import { parseCommandArgs } from './args.js'
import { ConfigError } from '#shared/errors.js'
import { fileProblem } from '#shared/config-file.js'
import { DEFAULT_SIGNING_ALG, SIGNING_ALGS, generatePrivateJwk, loadSigningKeys } from '../keys/signing-keys.js'
import type { PrivateJwk, PublicJwk, SigningAlg } from '../keys/signing-keys.js'
import type { CliIo } from './io.js'

/** Private keys: readable by the owner only. */
const FILE_MODE = 0o600

const HELP = `usage: latchkey keys generate [--alg ES256|EdDSA|RS256] [--out FILE [--append|--prepend]]
       latchkey keys list --file FILE
       latchkey keys promote <kid> --file FILE
       latchkey keys retire <kid> --file FILE

Generates a signing key (default alg ${DEFAULT_SIGNING_ALG}; kid = its RFC 7638 thumbprint) as a
private JWKS {"keys": [...]}, the format SIGNING_KEYS_FILE expects.

  --alg ALG    ES256 (P-256, the default: every common JWT library verifies it),
               EdDSA (Ed25519) or RS256 (RSA 2048)
  --out FILE   write to FILE (mode 0600) instead of stdout; refuses an existing FILE unless:
  --append     add the key LAST: published in the JWKS, but the current first key keeps signing.
               Rotation step 1: append; running gateways reload FILE on change or SIGHUP
               (no restart); wait for JWKS caches to expire (5 min).
  --prepend    add the key FIRST: it signs once the gateways reload FILE; the old keys stay
               published so tokens they signed still verify (skips the publish step: only
               safe before anyone caches the JWKS).

list           one line per key of FILE: "<kid> <alg> signing|published", in file order.
promote KID    move key KID first: it signs once the gateways reload FILE; the other keys stay
               published so tokens they signed still verify. Rotation step 2.
retire KID     remove key KID, once the last token it signed has expired (one access-token
               lifetime after the promotion rolled out). Rotation step 3. The signing key
               cannot be retired: promote another key first.
               A kid that starts with "-" goes after "--": keys retire --file FILE -- -Abc...
scripts/rotate-signing-key.sh runs the three steps with the waits between them.
`

const USAGE_HINT = '(see latchkey keys --help)'

class UsageError extends Error {}

interface Options {
  readonly alg: SigningAlg
  readonly out: string | undefined
  readonly placement: 'new' | 'append' | 'prepend'
}

/** The subcommands that edit or read an existing key file. */
type FileCommand =
  | { readonly sub: 'list', readonly file: string }
  | { readonly sub: 'promote' | 'retire', readonly kid: string, readonly file: string }

const FILE_SUBCOMMANDS = ['list', 'promote', 'retire'] as const
const GENERATE_ONLY = ['alg', 'out', 'append', 'prepend'] as const

function parseOptions (argv: string[]): Options | FileCommand | 'help' {
  let parsed
  try {
    parsed = parseCommandArgs(argv, {
        alg: { type: 'string' },
        out: { type: 'string', short: 'o' },
        append: { type: 'boolean' },
        prepend: { type: 'boolean' },
        file: { type: 'string', short: 'f' },
        help: { type: 'boolean', short: 'h' }
      })
  } catch (err) {
    // First sentence only: parseArgs appends a paragraph about '--' to unknown options.
    const first = ((err as Error).message.split('\n')[0] ?? '').replace(/\. .*$/, '')
    // Thumbprint kids are base64url and one in 64 starts with "-", which reads as an option.
    const hint = argv[0] === 'promote' || argv[0] === 'retire' ? '; a kid that starts with "-" goes after "--"' : ''
    throw new UsageError(`${first}${hint}`)
  }
  const { values, positionals } = parsed
  if (values.help === true || positionals[0] === 'help') return 'help'
  const [sub, ...extra] = positionals
  if (sub === undefined) throw new UsageError('missing subcommand: generate, list, promote or retire')
  if ((FILE_SUBCOMMANDS as readonly string[]).includes(sub)) return parseFileCommand(sub as FileCommand['sub'], extra, values)
  if (sub !== 'generate') throw new UsageError(`unknown subcommand ${JSON.stringify(sub)}`)
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`)
  if (values.file !== undefined) throw new UsageError('generate writes with --out FILE, not --file')
  const rawAlg = values.alg ?? DEFAULT_SIGNING_ALG
  const alg = SIGNING_ALGS.find(a => a.toLowerCase() === rawAlg.toLowerCase())
  if (alg === undefined) throw new UsageError(`unsupported --alg ${JSON.stringify(rawAlg)} (supported: ${SIGNING_ALGS.join(', ')})`)
  if (values.append === true && values.prepend === true) throw new UsageError('--append and --prepend are exclusive')
  const placement = values.append === true ? 'append' : values.prepend === true ? 'prepend' : 'new'
  if (values.out === undefined && placement !== 'new') throw new UsageError(`--${placement} needs --out FILE`)
  if (values.out === '') throw new UsageError('--out needs a file name')
  return { alg, out: values.out, placement }
}

function parseFileCommand (sub: FileCommand['sub'], args: string[], values: Record<string, string | boolean | undefined>): FileCommand {
  const misplaced = GENERATE_ONLY.find(o => values[o] !== undefined)
  if (misplaced !== undefined) throw new UsageError(`--${misplaced} applies to generate only`)
  const file = values.file
  if (typeof file !== 'string' || file === '') throw new UsageError(`${sub} needs --file FILE`)
  if (sub === 'list') {
    if (args.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(args[0])}`)
    return { sub, file }
  }
  const [kid, ...extra] = args
  if (kid === undefined || kid === '') throw new UsageError(`${sub} needs the kid of a key (see latchkey keys list --file FILE)`)
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`)
  return { sub, kid, file }
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
  return (await loadedKeys(file)).raw
}

/**
 * FILE's raw key objects (kept verbatim when rewriting) beside what the gateway makes of
 * them, in the same order: a key stored without "kid" is known by its thumbprint.
 */
async function loadedKeys (file: string): Promise<{ raw: unknown[], published: readonly PublicJwk[] }> {
  // Reuse the gateway's own validation: never touch a file the gateway would refuse.
  const loaded = await loadSigningKeys(file, { warn: () => {} })
  const parsed = JSON.parse(await readFile(file, 'utf8')) as { keys: unknown[] }
  return { raw: parsed.keys, published: loaded.publicJwks.keys }
}

/** A kid from argv, shown quoted: it has not been checked against anything yet. */
function quote (kid: string): string {
  const s = JSON.stringify(kid)
  return s.length > 80 ? `${s.slice(0, 80)}…` : s
}

class Refused extends Error {}

async function runFileCommand (cmd: FileCommand, io: CliIo): Promise<number> {
  const { raw, published } = await loadedKeys(cmd.file)
  if (cmd.sub === 'list') {
    io.stdout.write(published.map((k, i) => `${k.kid} ${k.alg} ${i === 0 ? 'signing' : 'published'}\n`).join(''))
    return 0
  }
  const index = published.findIndex(k => k.kid === cmd.kid)
  if (index < 0) throw new Refused(`no key with kid ${quote(cmd.kid)} in ${cmd.file} (see latchkey keys list --file ${cmd.file})`)
  const key = published[index] as PublicJwk
  if (cmd.sub === 'promote') {
    if (index === 0) {
      io.stdout.write(`key ${key.kid} already signs in ${cmd.file}; nothing changed\n`)
      return 0
    }
    await replaceFile(cmd.file, serialise([raw[index], ...raw.filter((_, i) => i !== index)]))
    io.stdout.write(`promoted ${key.alg} key ${key.kid} in ${cmd.file} (${raw.length} keys): it signs once the gateway reloads the file; the other keys stay published\n`)
    return 0
  }
  // The first key is the one replicas sign with: removing it would silently promote the
  // next one, which may not have been published long enough for verifiers to know it.
  if (index === 0) throw new Refused(`key ${key.kid} signs; promote another key first (latchkey keys promote <kid> --file ${cmd.file})`)
  await replaceFile(cmd.file, serialise(raw.filter((_, i) => i !== index)))
  io.stdout.write(`retired ${key.alg} key ${key.kid} from ${cmd.file} (${raw.length - 1} left): unpublished once the gateway reloads the file\n`)
  return 0
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
  const role = placement === 'append' ? 'published; the current first key still signs' : 'it signs once the gateway reloads the file; the other keys stay published'
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
    if ('sub' in opts) return await runFileCommand(opts, io)
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
    if (err instanceof Refused) {
      io.stderr.write(`latchkey keys: ${err.message}\n`)
      return 1
    }
    if (err instanceof ConfigError) {
      // Loading errors name SIGNING_KEYS_FILE; here the file came from --out.
      const problem = err.message.slice(err.variable.length + 2)
      io.stderr.write(`latchkey keys: ${err.variable === 'SIGNING_KEYS_FILE' ? problem : `${err.variable}: ${problem}`}\n`)
      return 1
    }
    const code = (err as NodeJS.ErrnoException).code
    if (typeof code === 'string' && code.startsWith('E')) {
      io.stderr.write(`latchkey keys: ${(err as NodeJS.ErrnoException).path ?? 'file'}: ${fileProblem(err, 'write')}\n`)
      return 1
    }
    throw err
  }
}
