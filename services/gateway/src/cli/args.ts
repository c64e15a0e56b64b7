/**
 * Every subcommand's argument parsing: node:util `parseArgs`, strict, with positionals.
 *
 * One difference: a value that starts with '-' is taken as the value of the option before
 * it. parseArgs refuses `--session -ftMn…` as ambiguous (it could be a forgotten value
 * followed by an option), but session ids, key ids and secrets are base64url, where '-' is
 * an ordinary first character (1 in 64 session ids): `sessions revoke --session <sid>`
 * failed for those, found by a test that drew one.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'

type Options = NonNullable<ParseArgsConfig['options']>

/**
 * `--name value` → `--name=value` for every option that takes a value (`-x value` likewise),
 * unless `value` is itself one of the command's options: `--out --append` is still refused
 * as a forgotten value.
 */
function attachValues (argv: readonly string[], options: Options): string[] {
  const takesValue = new Set<string>()
  const known = new Set<string>()
  for (const [name, option] of Object.entries(options)) {
    known.add(`--${name}`)
    if (option.short !== undefined) known.add(`-${option.short}`)
    if (option.type !== 'string') continue
    takesValue.add(`--${name}`)
    if (option.short !== undefined) takesValue.add(`-${option.short}`)
  }
  const isOption = (arg: string): boolean => known.has(arg.includes('=') ? arg.slice(0, arg.indexOf('=')) : arg)
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '--') {
      out.push(...argv.slice(i))
      break
    }
    const next = argv[i + 1]
    if (takesValue.has(arg) && next !== undefined && !isOption(next)) {
      out.push(arg.startsWith('--') ? `${arg}=${next}` : `${arg}${next}`)
      i++
    } else {
      out.push(arg)
    }
  }
  return out
}

export function parseCommandArgs<O extends Options> (argv: readonly string[], options: O): ReturnType<typeof parseArgs<{ args: string[], options: O, allowPositionals: true, strict: true }>> {
  return parseArgs({ args: attachValues(argv, options), options, allowPositionals: true, strict: true })
}
