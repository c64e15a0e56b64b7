/**
 * Configuration files speak with one voice: the same fault gets the same words whichever
 * file it is in, a malformed file says where, and "permission denied" points to the README
 * note that explains it (which comes before the commands that need it).
 */
import t, { type Test } from 'tap'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '#shared/errors.js'
import { PERMISSION_HINT, fileProblem, lineColumn, parseJsonConfig } from '#shared/config-file.js'
import { loadGatewayConfig } from '#gateway/config.js'
import { UserDirectory } from '#gateway/identity/user-directory.js'
import { ClientDirectory } from '#gateway/identity/clients-file.js'
import { loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { ROOT } from '../../../test/helpers/processes.js'

const silent = { warn: () => {} }

function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'lk-config-files-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** Every file-backed variable, loaded the way the gateway loads it. */
const loaders: Record<string, (file: string) => Promise<unknown>> = {
  ROUTES_FILE: async (file) => loadGatewayConfig({ ROUTES_FILE: file }),
  USERS_FILE: async (file) => UserDirectory.load(file),
  CLIENTS_FILE: async (file) => ClientDirectory.load(file),
  SIGNING_KEYS_FILE: async (file) => loadSigningKeys(file, silent)
}

async function problemOf (load: () => Promise<unknown>): Promise<string> {
  const err = await load().then(() => undefined, (e: unknown) => e)
  if (!(err instanceof ConfigError)) throw new Error(`expected a ConfigError, got ${String(err)}`)
  return err.message
}

t.test('a missing file, a directory and malformed JSON read the same in every file', async (t) => {
  const dir = tempDir(t)
  const missing = join(dir, 'absent.json')
  const broken = join(dir, 'broken.json')
  // Line 2, column 12: the unquoted value.
  writeFileSync(broken, '{\n  "keys": [oops]\n}\n')
  for (const [variable, load] of Object.entries(loaders)) {
    t.equal(await problemOf(async () => load(missing)), `${variable}: ${missing}: file not found`, `${variable}: missing`)
    t.equal(await problemOf(async () => load(dir)), `${variable}: ${dir}: is a directory, not a file`, `${variable}: directory`)
    t.equal(await problemOf(async () => load(broken)), `${variable}: ${broken}: not valid JSON at line 2, column 12`, `${variable}: malformed`)
  }
})

t.test('a malformed routes file says where: line and column, or the JSON path of the bad value', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'routes.json')
  const cases: Array<[string, string]> = [
    ['[\n  {"prefix": "/a/", "upstream": "http://a"},\n  {"prefix": "/b/", "upstream": http://b}\n]', 'not valid JSON at line 3, column 33'],
    ['[\n  {"prefix": "/a/", "upstream": "http://a"},\n]', 'not valid JSON at line 3, column 1'],
    ['[{"prefix": "/a/", "upstream": "http://a"', 'not valid JSON at line 1, column 42'],
    ['[{"prefix": "/a/", "upstream": "http://a"}, {"prefix": "/b/", "upstream": "ftp://b"}]', '$[1].upstream must be http or https'],
    ['[{"prefix": "/a/", "upstream": "http://a"}, {"prefix": "b", "upstream": "http://b"}]', '$[1].prefix must be a normalised path starting and ending with "/"'],
    ['[{"prefix": "/a/", "upstream": "http://a", "scopes": "notes:read"}]', '$[0].scopes must be an array of scope tokens'],
    ['{}', 'expected a non-empty JSON array of routes']
  ]
  for (const [text, problem] of cases) {
    writeFileSync(file, text)
    t.equal(await problemOf(async () => loadGatewayConfig({ ROUTES_FILE: file })), `ROUTES_FILE: ${file}: ${problem}`)
  }
})

t.test('positions are computed, never copied from the parser (which would quote secrets)', async (t) => {
  const secret = 'c2VjcmV0LW1hdGVyaWFsLXRoYXQtbXVzdC1ub3QtbGVhaw'
  for (const text of [`not json "d":"${secret}"`, `{"d": "${secret}" x}`, `{"d": "${secret}"`]) {
    const err = t.throws(() => parseJsonConfig(text, 'keys.json', 'SIGNING_KEYS_FILE')) as unknown as Error
    t.match(err.message, /^SIGNING_KEYS_FILE: keys\.json: not valid JSON at line 1, column \d+$/)
    t.notMatch(err.message, secret.slice(0, 12))
  }
  t.same(lineColumn('ab\ncd\nef', 4), { line: 2, column: 2 })
  t.same(lineColumn('ab', 0), { line: 1, column: 1 })
})

t.test('"permission denied" points to the LATCHKEY_UID note, which comes before the commands that need it', async (t) => {
  const denied = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' })
  t.equal(fileProblem(denied), `permission denied (${PERMISSION_HINT})`)
  t.equal(fileProblem(denied, 'write'), `permission denied (${PERMISSION_HINT})`)
  t.match(PERMISSION_HINT, /LATCHKEY_UID in README\.md "Docker Compose"/)
  if (process.getuid?.() !== 0) {
    // Root reads anything, so the real thing is only observable as another user.
    const dir = tempDir(t)
    const file = join(dir, 'users.json')
    writeFileSync(file, '{"users": []}')
    chmodSync(file, 0o000)
    t.equal(await problemOf(async () => UserDirectory.load(file)), `USERS_FILE: ${file}: permission denied (${PERMISSION_HINT})`)
  }

  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('\n## Docker Compose'))
  const note = section.indexOf('LATCHKEY_UID')
  const firstRun = section.indexOf('docker compose run')
  t.ok(note > 0, 'the Docker Compose section explains LATCHKEY_UID')
  t.ok(note < firstRun, 'before the first `docker compose run`, which writes ./secrets as that uid')
})
