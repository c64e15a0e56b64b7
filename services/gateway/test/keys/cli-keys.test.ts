import { existsSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { runKeysCommand } from '#gateway/cli/keys.js'
import { SIGNING_ALGS, loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { memoryIo, readKeys, tempDir } from './helpers.js'
import type { Jwk } from './helpers.js'

const silent = { warn: () => {} }

async function run (argv: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const mem = memoryIo()
  const code = await runKeysCommand(argv, mem.io)
  return { code, stdout: mem.stdout(), stderr: mem.stderr() }
}

t.test('generate prints a private JWKS of one key, for each alg; EdDSA by default', async t => {
  for (const alg of [undefined, ...SIGNING_ALGS]) {
    const r = await run(alg === undefined ? ['generate'] : ['generate', '--alg', alg])
    t.equal(r.code, 0)
    t.equal(r.stderr, '')
    const parsed = JSON.parse(r.stdout) as { keys: Jwk[] }
    t.same(Object.keys(parsed), ['keys'])
    t.equal(parsed.keys.length, 1)
    const key = parsed.keys[0] as Jwk
    t.equal(key.alg, alg ?? 'EdDSA')
    t.equal(key.use, 'sig')
    t.type(key.d, 'string')
    t.ok(r.stdout.endsWith('}\n'))
    // What it prints is what the gateway loads.
    const file = join(tempDir(t), 'printed.json')
    writeFileSync(file, r.stdout)
    t.equal((await loadSigningKeys(file, silent)).signing.kid, key.kid)
  }
  t.equal(JSON.parse((await run(['generate', '--alg=es256'])).stdout).keys[0].alg, 'ES256', '--alg is case-insensitive and takes =')
})

t.test('--out writes mode 0600 and refuses to touch an existing file without --append/--prepend', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'keys.json')
  const first = await run(['generate', '--alg', 'ES256', '--out', file])
  t.equal(first.code, 0)
  t.equal(first.stderr, '')
  const [k0] = readKeys(file)
  t.match(first.stdout, new RegExp(`^wrote ES256 key ${k0?.kid} to .*; it signs\\n$`))
  t.notOk(first.stdout.includes(k0?.d as string), 'the private key is not printed')
  t.equal(statSync(file).mode & 0o777, 0o600)

  const before = readFileSync(file, 'utf8')
  const refused = await run(['generate', '--out', file])
  t.equal(refused.code, 2)
  t.equal(refused.stdout, '')
  t.match(refused.stderr, /^latchkey keys: .*keys\.json exists; pass --append .* or --prepend .*\n$/)
  t.equal(refused.stderr.split('\n').length, 2, 'one line')
  t.equal(readFileSync(file, 'utf8'), before, 'file untouched')

  const appended = await run(['generate', '--alg', 'RS256', '--out', file, '--append'])
  t.equal(appended.code, 0)
  const afterAppend = readKeys(file)
  t.same(afterAppend.map(k => k.alg), ['ES256', 'RS256'])
  t.equal(afterAppend[0]?.kid, k0?.kid, 'the signing key stays first')
  t.match(appended.stdout, /appended RS256 key .* \(2 keys\): published; the current first key still signs/)
  t.equal(statSync(file).mode & 0o777, 0o600)

  const prepended = await run(['generate', '--out', file, '--prepend'])
  t.equal(prepended.code, 0)
  const afterPrepend = readKeys(file)
  t.same(afterPrepend.map(k => k.alg), ['EdDSA', 'ES256', 'RS256'])
  t.same(afterPrepend.slice(1), afterAppend, 'existing keys kept verbatim')
  const loaded = await loadSigningKeys(file, silent)
  t.equal(loaded.signing.kid, afterPrepend[0]?.kid, 'the prepended key signs')
  t.equal(loaded.publicJwks.keys.length, 3)
  t.equal(statSync(file).mode & 0o777, 0o600)
  t.same(readdirSync(dir), ['keys.json'], 'no temporary files left behind')
})

t.test('--append/--prepend onto a file that does not exist creates it', async t => {
  const file = join(tempDir(t), 'new.json')
  t.equal((await run(['generate', '--out', file, '--append'])).code, 0)
  t.equal(readKeys(file).length, 1)
})

t.test('an existing file the gateway would refuse is left alone (exit 1)', async t => {
  const dir = tempDir(t)
  const broken = join(dir, 'broken.json')
  writeFileSync(broken, '{"keys": [{"kty":"OKP","crv":"Ed25519","x":"c2VjcmV0LW1hdGVyaWFs"}]}')
  const r = await run(['generate', '--out', broken, '--append'])
  t.equal(r.code, 1)
  t.match(r.stderr, /^latchkey keys: .*broken\.json: key 0: has no private part "d".*\n$/)
  t.notOk(r.stderr.includes('SIGNING_KEYS_FILE'), 'speaks of the --out file, not the variable')
  t.equal(readFileSync(broken, 'utf8'), '{"keys": [{"kty":"OKP","crv":"Ed25519","x":"c2VjcmV0LW1hdGVyaWFs"}]}')

  const garbage = join(dir, 'garbage.json')
  writeFileSync(garbage, 'not json "d":"c2VjcmV0"')
  const g = await run(['generate', '--out', garbage, '--prepend'])
  t.equal(g.code, 1)
  t.equal(g.stderr, `latchkey keys: ${garbage}: not valid JSON at line 1, column 2\n`)

  const missingDir = join(dir, 'no', 'such', 'dir.json')
  const m = await run(['generate', '--out', missingDir])
  t.equal(m.code, 1)
  t.equal(m.stderr, `latchkey keys: ${missingDir}: its directory does not exist\n`)
})

t.test('--out never follows a symlink to create a file', async t => {
  const dir = tempDir(t)
  const target = join(dir, 'target.json')
  const link = join(dir, 'link.json')
  symlinkSync(target, link)
  const r = await run(['generate', '--out', link])
  t.equal(r.code, 2, 'the dangling link counts as an existing file')
  t.notOk(existsSync(target))
})

t.test('bad arguments: one line on stderr, exit 2, nothing on stdout', async t => {
  const cases: Array<[string[], RegExp]> = [
    [[], /missing subcommand: generate/],
    [['rotate'], /unknown subcommand "rotate"/],
    [['generate', 'extra'], /unexpected argument "extra"/],
    [['generate', '--alg', 'HS256'], /unsupported --alg "HS256" \(supported: EdDSA, ES256, RS256\)/],
    [['generate', '--alg'], /--alg/],
    [['generate', '--bogus'], /^latchkey keys: Unknown option '--bogus' \(see latchkey keys --help\)\n$/],
    [['generate', '--append'], /--append needs --out FILE/],
    [['generate', '--prepend'], /--prepend needs --out FILE/],
    [['generate', '--out', 'x.json', '--append', '--prepend'], /--append and --prepend are exclusive/],
    [['generate', '--out', ''], /--out needs a file name/]
  ]
  for (const [argv, expect] of cases) {
    const r = await run(argv)
    const name = argv.join(' ') || '(none)'
    t.equal(r.code, 2, `${name}: exit 2`)
    t.equal(r.stdout, '', `${name}: nothing on stdout`)
    t.match(r.stderr, expect, name)
    t.match(r.stderr, /^latchkey keys: [^\n]+\n$/, `${name}: one line`)
  }
})

t.test('--help documents --append and --prepend', async t => {
  for (const argv of [['--help'], ['generate', '--help'], ['help'], ['-h']]) {
    const r = await run(argv)
    t.equal(r.code, 0)
    t.equal(r.stderr, '')
    t.match(r.stdout, /^usage: latchkey keys generate \[--alg EdDSA\|ES256\|RS256\] \[--out FILE \[--append\|--prepend\]\]/)
    t.match(r.stdout, /--append +add the key LAST/)
    t.match(r.stdout, /--prepend +add the key FIRST/)
    t.match(r.stdout, /mode 0600/)
  }
})
