import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { runKeysCommand } from '#gateway/cli/keys.js'
import { loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { generateKeyFile, memoryIo, readKeys, tempDir } from './helpers.js'
import type { Jwk } from './helpers.js'

const silent = { warn: () => {} }

async function run (argv: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const mem = memoryIo()
  const code = await runKeysCommand(argv, mem.io)
  return { code, stdout: mem.stdout(), stderr: mem.stderr() }
}

/** A file of three keys, in this order: EdDSA (signs), ES256, RS256. */
async function threeKeys (t: Parameters<typeof tempDir>[0]): Promise<{ dir: string, file: string, keys: Jwk[] }> {
  const dir = tempDir(t)
  const file = join(dir, 'keys.json')
  await generateKeyFile(file, 'EdDSA')
  await generateKeyFile(file, 'ES256', '--append')
  await generateKeyFile(file, 'RS256', '--append')
  return { dir, file, keys: readKeys(file) }
}

const kidOf = (k: Jwk | undefined): string => String(k?.kid)

t.test('list prints one line per key in file order, the first one signing', async t => {
  const { file, keys } = await threeKeys(t)
  const r = await run(['list', '--file', file])
  t.equal(r.code, 0)
  t.equal(r.stderr, '')
  t.equal(r.stdout, `${kidOf(keys[0])} EdDSA signing\n${kidOf(keys[1])} ES256 published\n${kidOf(keys[2])} RS256 published\n`)
  for (const k of keys) t.notOk(r.stdout.includes(String(k.d)), 'no private part printed')
  t.equal((await run(['list', '-f', file])).stdout, r.stdout, '-f is --file')
})

t.test('list names a key stored without "kid" by its thumbprint, as the gateway does', async t => {
  const { file, keys } = await threeKeys(t)
  const withoutKid = keys.map(({ kid: _kid, ...rest }) => rest)
  writeFileSync(file, JSON.stringify({ keys: withoutKid }))
  const loaded = await loadSigningKeys(file, silent)
  const r = await run(['list', '--file', file])
  t.equal(r.stdout.split('\n')[0], `${loaded.signing.kid} EdDSA signing`)
  t.equal(loaded.signing.kid, kidOf(keys[0]), 'generate makes the kid the thumbprint')
  // promote finds it by that thumbprint and keeps the entry verbatim (still without kid).
  t.equal((await run(['promote', '--file', file, '--', kidOf(keys[2])])).code, 0)
  t.same(readKeys(file), [withoutKid[2], withoutKid[0], withoutKid[1]])
})

t.test('promote moves the key first: the gateway signs with it and still publishes the others', async t => {
  const { dir, file, keys } = await threeKeys(t)
  const r = await run(['promote', '--file', file, '--', kidOf(keys[2])])
  t.equal(r.code, 0)
  t.equal(r.stderr, '')
  t.equal(r.stdout, `promoted RS256 key ${kidOf(keys[2])} in ${file} (3 keys): it signs once the gateway reloads the file; the other keys stay published\n`)
  t.same(readKeys(file), [keys[2], keys[0], keys[1]], 'same keys, verbatim, new order')
  const loaded = await loadSigningKeys(file, silent)
  t.equal(loaded.signing.kid, kidOf(keys[2]))
  t.equal(loaded.signing.alg, 'RS256')
  t.same(loaded.publicJwks.keys.map(k => k.kid), [keys[2], keys[0], keys[1]].map(kidOf))
  t.equal(statSync(file).mode & 0o777, 0o600)
  t.same(readdirSync(dir), ['keys.json'], 'no temporary files left behind')

  const again = await run(['promote', '--file', file, '--', kidOf(keys[2])])
  t.equal(again.code, 0, 'promoting the signing key is a no-op, not an error')
  t.equal(again.stdout, `key ${kidOf(keys[2])} already signs in ${file}; nothing changed\n`)
  t.same(readKeys(file), [keys[2], keys[0], keys[1]])
})

t.test('retire removes a published key; the signing key cannot be retired', async t => {
  const { file, keys } = await threeKeys(t)
  const r = await run(['retire', '--file', file, '--', kidOf(keys[1])])
  t.equal(r.code, 0)
  t.equal(r.stderr, '')
  t.equal(r.stdout, `retired ES256 key ${kidOf(keys[1])} from ${file} (2 left): unpublished once the gateway reloads the file\n`)
  t.same(readKeys(file), [keys[0], keys[2]])
  const loaded = await loadSigningKeys(file, silent)
  t.equal(loaded.signing.kid, kidOf(keys[0]), 'the signing key is untouched')
  t.same(loaded.publicJwks.keys.map(k => k.kid), [keys[0], keys[2]].map(kidOf))
  t.equal(loaded.verificationKey(kidOf(keys[1])), undefined, 'tokens of the retired key no longer verify')
  t.equal(statSync(file).mode & 0o777, 0o600)

  const before = readFileSync(file, 'utf8')
  const signing = await run(['retire', '--file', file, '--', kidOf(keys[0])])
  t.equal(signing.code, 1)
  t.equal(signing.stdout, '')
  t.equal(signing.stderr, `latchkey keys: key ${kidOf(keys[0])} signs; promote another key first (latchkey keys promote <kid> --file ${file})\n`)
  t.equal(readFileSync(file, 'utf8'), before, 'file untouched')

  // The last key left is necessarily the signing key: a file never ends up empty.
  t.equal((await run(['retire', '--file', file, '--', kidOf(keys[2])])).code, 0)
  t.equal((await run(['retire', '--file', file, '--', kidOf(keys[0])])).code, 1)
  t.same(readKeys(file), [keys[0]])
})

t.test('a full rotation: append, promote, retire; every intermediate file loads', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'keys.json')
  await generateKeyFile(file, 'EdDSA')
  const [old] = readKeys(file)
  await generateKeyFile(file, 'ES256', '--append')
  const next = readKeys(file)[1]
  let loaded = await loadSigningKeys(file, silent)
  t.equal(loaded.signing.kid, kidOf(old), 'step 1: the old key still signs')
  t.ok(loaded.verificationKey(kidOf(next)), 'step 1: the next key is published')

  t.equal((await run(['promote', '--file', file, '--', kidOf(next)])).code, 0)
  loaded = await loadSigningKeys(file, silent)
  t.equal(loaded.signing.kid, kidOf(next), 'step 2: the next key signs')
  t.ok(loaded.verificationKey(kidOf(old)), 'step 2: the old key still verifies')

  t.equal((await run(['retire', '--file', file, '--', kidOf(old)])).code, 0)
  loaded = await loadSigningKeys(file, silent)
  t.equal(loaded.signing.kid, kidOf(next))
  t.same(loaded.publicJwks.keys.map(k => k.kid), [kidOf(next)], 'step 3: only the new key is published')
})

t.test('unknown kid, missing or broken file: exit 1, one line, nothing changed', async t => {
  const { dir, file } = await threeKeys(t)
  const before = readFileSync(file, 'utf8')
  for (const sub of ['promote', 'retire']) {
    const r = await run([sub, 'no-such-kid', '--file', file])
    t.equal(r.code, 1, sub)
    t.equal(r.stdout, '')
    t.equal(r.stderr, `latchkey keys: no key with kid "no-such-kid" in ${file} (see latchkey keys list --file ${file})\n`)
  }
  t.equal(readFileSync(file, 'utf8'), before)

  const missing = join(dir, 'missing.json')
  const m = await run(['list', '--file', missing])
  t.equal(m.code, 1)
  t.equal(m.stderr, `latchkey keys: ${missing}: file not found\n`)

  const broken = join(dir, 'broken.json')
  writeFileSync(broken, '{"keys": [{"kty":"OKP","crv":"Ed25519","x":"c2VjcmV0LW1hdGVyaWFs"}]}')
  const b = await run(['promote', '--file', broken, '--', 'x'])
  t.equal(b.code, 1)
  t.match(b.stderr, /^latchkey keys: .*broken\.json: key 0: has no private part "d".*\n$/)
  t.equal(readFileSync(broken, 'utf8'), '{"keys": [{"kty":"OKP","crv":"Ed25519","x":"c2VjcmV0LW1hdGVyaWFs"}]}')
})

t.test('a kid that starts with "-" (one thumbprint in 64) is taken after "--", with a hint without it', async t => {
  const { file, keys } = await threeKeys(t)
  writeFileSync(file, JSON.stringify({ keys: [keys[0], { ...keys[1], kid: '-Dash' }] }))
  const bare = await run(['promote', '-Dash', '--file', file])
  t.equal(bare.code, 2)
  t.match(bare.stderr, /^latchkey keys: Unknown option '-D'; a kid that starts with "-" goes after "--" \(see latchkey keys --help\)\n$/)
  const r = await run(['promote', '--file', file, '--', '-Dash'])
  t.equal(r.code, 0, r.stderr)
  t.equal((await loadSigningKeys(file, silent)).signing.kid, '-Dash')
  t.equal((await run(['retire', '--file', file, '--', kidOf(keys[0])])).code, 0)
  t.same(readKeys(file).map(k => k.kid), ['-Dash'])
})

t.test('bad arguments for list/promote/retire: one line on stderr, exit 2', async t => {
  const cases: Array<[string[], RegExp]> = [
    [['list'], /list needs --file FILE/],
    [['promote', 'k'], /promote needs --file FILE/],
    [['retire', 'k', '--file', ''], /retire needs --file FILE/],
    [['promote', '--file', 'k.json'], /promote needs the kid of a key/],
    [['retire', '--file', 'k.json'], /retire needs the kid of a key/],
    [['promote', 'a', 'b', '--file', 'k.json'], /unexpected argument "b"/],
    [['list', 'extra', '--file', 'k.json'], /unexpected argument "extra"/],
    [['promote', 'a', '--file', 'k.json', '--out', 'x'], /--out applies to generate only/],
    [['retire', 'a', '--file', 'k.json', '--alg', 'ES256'], /--alg applies to generate only/],
    [['list', '--file', 'k.json', '--append'], /--append applies to generate only/],
    [['generate', '--file', 'k.json'], /generate writes with --out FILE, not --file/]
  ]
  for (const [argv, expect] of cases) {
    const r = await run(argv)
    const name = argv.join(' ')
    t.equal(r.code, 2, `${name}: exit 2`)
    t.equal(r.stdout, '', `${name}: nothing on stdout`)
    t.match(r.stderr, expect, name)
    t.match(r.stderr, /^latchkey keys: [^\n]+ \(see latchkey keys --help\)\n$/, `${name}: one line`)
  }
})

t.test('--help documents list, promote and retire', async t => {
  const r = await run(['--help'])
  t.equal(r.code, 0)
  t.match(r.stdout, /^ +latchkey keys list --file FILE$/m)
  t.match(r.stdout, /^ +latchkey keys promote <kid> --file FILE$/m)
  t.match(r.stdout, /^ +latchkey keys retire <kid> --file FILE$/m)
  t.match(r.stdout, /^promote KID +move key KID first/m)
  t.match(r.stdout, /^retire KID +remove key KID/m)
  t.match(r.stdout, /cannot be retired: promote another key first/)
})
