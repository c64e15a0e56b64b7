/**
 * The `latchkey` command end to end: real processes, files written by the CLI and loaded
 * by the gateway, the walkthrough run verbatim, and bad configuration in one line.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from '../../../../test/helpers/redis.js'
import { latchkey, ROOT } from '../../../../test/helpers/processes.js'

const run = promisify(execFile)

t.test('a bad configuration value stops start-up with one clear line', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ ACCESS_TOKEN_TTL: 'soon' }, /^latchkey: invalid configuration: ACCESS_TOKEN_TTL: expected a duration/],
    [{ PORT: '99999' }, /^latchkey: invalid configuration: PORT: expected 0\.\.65535/],
    [{ REDIS_URL: 'http://localhost:6379' }, /^latchkey: invalid configuration: REDIS_URL: expected a redis or rediss URL/],
    [{ COOKIE_SECURE: 'maybe' }, /^latchkey: invalid configuration: COOKIE_SECURE: expected true or false/],
    [{ ROUTES_FILE: '/nonexistent/routes.json' }, /^latchkey: invalid configuration: ROUTES_FILE: \/nonexistent\/routes\.json: file not found$/],
    [{ SIGNING_KEYS_FILE: '/nonexistent/keys.json' }, /^latchkey: invalid configuration: SIGNING_KEYS_FILE: /],
    [{ REDIS_SENTINELS: 'a:1' }, /^latchkey: invalid configuration: REDIS_SENTINEL_NAME: required/]
  ]
  for (const [env, pattern] of cases) {
    const p = latchkey(t, ['gateway'], { PORT: '0', ...env })
    const code = await p.exited
    t.equal(code, 2, `${JSON.stringify(env)} exits 2`)
    const lines = p.stderr.trim().split('\n')
    t.equal(lines.length, 1, `one line: ${p.stderr}`)
    t.match(lines[0], pattern)
    t.notMatch(p.stderr, /\n\s+at /, 'no stack trace')
  }
})

t.test('keys generate + users add write files the gateway then loads', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-cli-'))
  const keys = join(dir, 'keys.json')
  const users = join(dir, 'users.json')
  const gen = latchkey(t, ['keys', 'generate', '--alg', 'ES256', '--out', keys])
  t.equal(await gen.exited, 0, gen.stderr)
  const jwks = JSON.parse(readFileSync(keys, 'utf8')) as { keys: Array<{ kid: string, alg: string, d?: string }> }
  t.equal(jwks.keys[0]?.alg, 'ES256')
  t.ok(jwks.keys[0]?.d, 'a private JWKS')
  t.equal(statSync(keys).mode & 0o777, 0o600, 'key file readable by its owner only')

  const add = latchkey(t, ['users', 'add', 'carol', '--scope', 'notes:read'], { USERS_FILE: users }, 'a passphrase from stdin\n')
  t.equal(await add.exited, 0, add.stderr)
  t.notMatch(add.stdout + add.stderr, /a passphrase from stdin/, 'the password is never echoed')
  t.match(readFileSync(users, 'utf8'), /\$argon2id\$/)

  const port = await freePort()
  const gw = latchkey(t, ['gateway'], { PORT: String(port), HOST: '127.0.0.1', SIGNING_KEYS_FILE: keys, USERS_FILE: users, LOG_LEVEL: 'info' })
  await gw.waitFor(/Server listening/)
  const base = `http://127.0.0.1:${port}`
  const published = await (await fetch(`${base}/.well-known/jwks.json`)).json() as { keys: Array<Record<string, unknown>> }
  t.equal(published.keys[0]?.kid, jwks.keys[0]?.kid, 'the generated key is published')
  t.equal(published.keys[0]?.d, undefined)
  const res = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'carol', password: 'a passphrase from stdin' }) })
  t.equal(res.status, 200)
  const body = await res.json() as { access_token: string, scope: string }
  t.equal(body.scope, 'notes:read')
  const header = JSON.parse(Buffer.from(body.access_token.split('.')[0] as string, 'base64url').toString()) as { alg: string, kid: string, typ: string }
  t.same(header, { alg: 'ES256', kid: jwks.keys[0]?.kid, typ: 'at+jwt' })
  t.equal(await gw.stop(), 0, 'SIGTERM exits 0')
})

t.test('latchkey dev prints a walkthrough that works verbatim (no Redis, no files)', async (t) => {
  const port = await freePort()
  const resourcePort = await freePort()
  const dev = latchkey(t, ['dev'], { PORT: String(port), RESOURCE_PORT: String(resourcePort), HOST: '127.0.0.1' })
  await dev.waitFor(/# 5\. .*\n.*\n.*\n/)
  t.match(dev.stdout, /Demo user: demo \/ \S{12,}/, 'a generated demo password is printed')
  // Log lines may reach the pipe after the walkthrough (pino writes asynchronously): wait for them.
  t.ok(await dev.waitFor(/sessions are kept in this process only/, 5000), 'warns: in-memory sessions')
  t.ok(await dev.waitFor(/ephemeral/i, 5000), 'warns: ephemeral signing key')
  const commands = dev.stdout.split('\n').filter(l => l.startsWith('  ')).map(l => l.slice(2)).join('\n')
  const { stdout } = await run('bash', ['-c', `set -e\n${commands}`], { cwd: ROOT })
  const lines = stdout.trim().split('\n')
  t.match(lines[0], /^access token: [\w-]{24}\.\.\.$/, 'step 1: signed in')
  t.match(lines[1], /"sub":"[^"]+"/, 'step 2: identity through the gateway')
  t.match(lines[2], /"access_token":/, 'step 3: refreshed')
  t.equal(lines[3], 'logout: 204', 'step 4: signed out')
  t.equal(lines[4], 'api after logout: 401', 'step 5: the access token is refused at the edge')
  t.match(lines[5], /"error":"invalid_grant"/, 'step 5: the session is gone')
  t.equal(await dev.stop(), 0)
})

t.test('a second dev run generates a different demo password', async (t) => {
  const passwords: string[] = []
  for (let i = 0; i < 2; i++) {
    const port = await freePort()
    const dev = latchkey(t, ['dev'], { PORT: String(port), RESOURCE_PORT: String(await freePort()), HOST: '127.0.0.1' })
    const m = await dev.waitFor(/Demo user: demo \/ (\S+)/)
    passwords.push(m[1] as string)
    await dev.stop()
  }
  t.not(passwords[0], passwords[1])
})

t.test('the built bin answers --help', { skip: !existsBuilt() && 'run npm run build first' }, async (t) => {
  const { stdout } = await run(process.execPath, ['bin/latchkey.js', '--help'], { cwd: ROOT })
  t.match(stdout, /usage: latchkey <command>/)
})

function existsBuilt (): boolean {
  try { return statSync(join(ROOT, 'dist/services/gateway/src/cli/main.js')).isFile() } catch { return false }
}
