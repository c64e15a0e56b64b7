import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError } from '#shared/errors.js'
import { ManualClock } from '#shared/clock.js'
import { runClientsCommand } from '#gateway/cli/clients.js'
import { ClientDirectory, addClient, hashClientSecret, readClientsFile } from '#gateway/identity/clients-file.js'
import { pipedIo } from './cli-io.js'

const NO_ENV = {}

function secretFrom (out: string): string {
  const m = /^client_secret: (\S+)$/m.exec(out)
  if (m?.[1] === undefined) throw new Error(`no secret in output: ${out}`)
  return m[1]
}

t.test('clients add prints the secret once; the file holds only its keyed hash', async t => {
  const dir = t.testdir()
  const file = join(dir, 'clients.json')
  const fake = pipedIo('')
  const code = await runClientsCommand(
    ['add', 'svc-a', '--scope', 'internal:read internal:write', '--audience', 'latchkey-api', '--audience', 'billing', '--file', file],
    fake.io, NO_ENV)
  t.equal(code, 0, fake.err())
  const out = fake.out()
  const secret = secretFrom(out)
  t.match(secret, /^[A-Za-z0-9_-]{43}$/, '43 base64url chars')
  t.equal(Buffer.from(secret, 'base64url').length, 32, '256 bits')
  t.equal(out.split(secret).length - 1, 1, 'printed exactly once')
  t.match(out, /^client_id: svc-a$/m)
  t.match(out, /shown only this once/)
  t.equal(fake.err(), '')

  t.equal((await stat(file)).mode & 0o777, 0o600)
  t.same((await readdir(dir)).sort(), ['clients.json'], 'no temp file left behind')
  const text = await readFile(file, 'utf8')
  t.notOk(text.includes(secret), 'no plaintext secret in the file')
  t.notOk(text.includes(Buffer.from(secret, 'base64url').toString('hex')), 'nor its hex form')
  const json = JSON.parse(text) as { clients: Array<Record<string, unknown>> }
  t.same(json.clients, [{
    id: 'svc-a',
    secret: json.clients[0]?.secret,
    scope: 'internal:read internal:write',
    audiences: ['latchkey-api', 'billing'],
    grants: ['client_credentials']
  }])
  t.match(json.clients[0]?.secret, /^hs256\$[A-Za-z0-9_-]{43}\$[A-Za-z0-9_-]{43}$/)

  const clients = await ClientDirectory.load(file)
  const expected = { id: 'svc-a', scope: ['internal:read', 'internal:write'], audiences: ['latchkey-api', 'billing'], grants: ['client_credentials'] }
  t.same(clients.authenticate('svc-a', secret), expected)
  t.same(clients.get('svc-a'), expected)
  t.equal(clients.get('svc-b'), undefined)
  t.equal(clients.authenticate('svc-a', secret.slice(0, -1) + (secret.endsWith('A') ? 'B' : 'A')), null, 'wrong secret')
  t.equal(clients.authenticate('svc-a', ''), null)
  t.equal(clients.authenticate('svc-a', `${secret} `), null)
  t.equal(clients.authenticate('svc-b', secret), null, 'unknown id')
  t.equal(clients.authenticate('SVC-A', secret), null, 'ids are exact')
  t.equal(clients.authenticate(undefined, secret), null)
  t.equal(clients.authenticate('svc-a', undefined), null)
  t.equal(clients.authenticate('svc-a', 'x'.repeat(100 * 1024)), null)
  t.equal(clients.authenticate('x'.repeat(100 * 1024), secret), null)
  t.equal(clients.authenticate({}, []), null)
})

t.test('a remembered secret (the repeat path): the same answers as the full check, the overlap still expires, a reload forgets', async t => {
  const clock = new ManualClock(1_000_000)
  const [oldSecret, newSecret, otherSecret] = ['old', 'new', 'other'].map(w => `${w}-${'s'.repeat(40)}`) as [string, string, string]
  const base = { scope: ['internal:read'], audiences: ['latchkey-api'], grants: ['client_credentials'] }
  const rotated = [
    { id: 'svc', ...base, secret: hashClientSecret(newSecret), previousSecret: { hash: hashClientSecret(oldSecret), expiresAt: clock.now() + 60_000 } },
    { id: 'other', ...base, secret: hashClientSecret(otherSecret) }
  ]
  const clients = ClientDirectory.fromClients(rotated, clock)
  for (let i = 0; i < 3; i++) {
    t.equal(clients.authenticate('svc', newSecret)?.id, 'svc', `new secret, call ${i + 1}`)
    t.equal(clients.authenticate('svc', oldSecret)?.id, 'svc', `old secret inside the overlap, call ${i + 1}`)
    t.equal(clients.authenticate('other', otherSecret)?.id, 'other', `another client, call ${i + 1}`)
  }
  t.equal(clients.authenticate('svc', otherSecret), null, "another client's remembered secret is not this one's")
  t.equal(clients.authenticate('other', newSecret), null, "nor the other way round")
  t.equal(clients.authenticate('svc', `${newSecret}x`), null, 'a wrong secret after remembered ones')
  t.equal(clients.authenticate('svc', ''), null)
  t.equal(clients.authenticate('nobody', newSecret), null, 'an unknown id with a remembered secret')

  clock.advance(60_000)
  t.equal(clients.authenticate('svc', oldSecret), null, 'the remembered old secret is refused once the overlap has ended')
  t.equal(clients.authenticate('svc', newSecret)?.id, 'svc', 'the new one still passes')

  // A reload that changes the secret: what was remembered goes with the old entries.
  clients.replace([{ id: 'svc', ...base, secret: hashClientSecret(otherSecret) }])
  t.equal(clients.authenticate('svc', newSecret), null, 'the secret remembered before the reload is refused')
  t.equal(clients.authenticate('svc', otherSecret)?.id, 'svc', 'the reloaded one passes')
  clients.replace([{ id: 'svc', ...base, disabled: true, secret: hashClientSecret(otherSecret) }])
  t.equal(clients.authenticate('svc', otherSecret), null, 'disabled by a reload: refused though remembered')
})

t.test('CLIENTS_FILE from env, several grants, duplicates refused', async t => {
  const file = join(t.testdir(), 'c.json')
  const env = { CLIENTS_FILE: file }
  const a = pipedIo('')
  t.equal(await runClientsCommand(['add', 'web', '--scope', 'notes:read', '--audience', 'latchkey-api', '--grant', 'password', '--grant', 'refresh_token'], a.io, env), 0, a.err())
  const b = pipedIo('')
  t.equal(await runClientsCommand(['add', 'svc', '--scope', '', '--audience', 'x'], b.io, env), 0, b.err())
  t.same((await readClientsFile(file)).map(c => [c.id, c.grants, c.scope]), [['web', ['password', 'refresh_token'], ['notes:read']], ['svc', ['client_credentials'], []]])

  const before = await readFile(file, 'utf8')
  const dup = pipedIo('')
  t.equal(await runClientsCommand(['add', 'web', '--scope', 'a', '--audience', 'x'], dup.io, env), 1)
  t.match(dup.err(), /^latchkey clients: CLIENTS_FILE: .*"web" already exists\n$/)
  t.equal(dup.out(), '', 'no secret printed for a refused add')
  await t.rejects(addClient(file, { id: 'web', scope: 'a', audiences: ['x'] }), { name: 'ConfigError', variable: 'CLIENTS_FILE' })
  t.equal(await readFile(file, 'utf8'), before, 'file unchanged')

  const added = await addClient(file, { id: 'api', scope: 'a b a', audiences: ['x', 'x'] })
  t.same(added.client, { id: 'api', scope: ['a', 'b'], audiences: ['x'], grants: ['client_credentials'] }, 'deduplicated')
  t.ok((await ClientDirectory.load(file)).authenticate('api', added.secret))
  t.equal((await ClientDirectory.load(file)).authenticate('web', added.secret), null, "another client's secret")
})

t.test('clients add: usage and validation', async t => {
  const file = join(t.testdir(), 'clients.json')
  const usage: string[][] = [
    [], ['add'], ['add', 'x', '--audience', 'a'], ['add', 'x', '--scope', 's'], ['add', 'x', 'y', '--scope', 's', '--audience', 'a'],
    ['list', 'x'], ['rotate'], ['add', 'x', '--scope', 's', '--audience', 'a', '--nope']
  ]
  for (const argv of usage) {
    const fake = pipedIo('')
    t.equal(await runClientsCommand([...argv, '--file', file], fake.io, NO_ENV), 2, argv.join(' '))
  }
  const noFile = pipedIo('')
  t.equal(await runClientsCommand(['add', 'x', '--scope', 's', '--audience', 'a'], noFile.io, NO_ENV), 2)
  t.equal(noFile.err(), 'latchkey clients: no clients file: pass --file FILE or set CLIENTS_FILE\n')

  const refused: Array<[string[], RegExp]> = [
    [['add', 'x', '--scope', 's', '--audience', 'a', '--grant', 'implicit'], /grant: "implicit" is not one of/],
    [['add', 'a:b', '--scope', 's', '--audience', 'a'], /^latchkey clients: id: /],
    [['add', 'x', '--scope', 'bad\\scope', '--audience', 'a'], /scope: /],
    [['add', 'x', '--scope', 's', '--audience', 'has space'], /audience: /]
  ]
  for (const [argv, message] of refused) {
    const fake = pipedIo('')
    t.equal(await runClientsCommand([...argv, '--file', file], fake.io, NO_ENV), 1, argv.join(' '))
    t.match(fake.err(), message)
    t.equal(fake.out(), '')
  }
  await t.rejects(stat(file), { code: 'ENOENT' }, 'nothing written')
  await t.rejects(addClient(file, { id: 'x', scope: '', audiences: [] }), { name: 'ConfigError', variable: 'audience' })
  await t.rejects(addClient(file, { id: 'x', scope: '', audiences: ['a'], grants: [] }), { name: 'ConfigError', variable: 'grant' })
})

t.test('no clients file: an empty directory', async t => {
  const clients = await ClientDirectory.load(undefined)
  t.equal(clients.size, 0)
  t.equal(clients.authenticate('svc-a', 'anything'), null)
})

t.test('bad clients files: ConfigError naming CLIENTS_FILE, one line, no secrets echoed', async t => {
  const plain = 'PLAINTEXT-secret-value-that-must-not-leak-000'
  const ok = { id: 'svc', secret: hashClientSecret('s'), scope: 'a', audiences: ['aud'], grants: ['client_credentials'] }
  const cases: Array<[string, string, RegExp]> = [
    ['missing', '', /: file not found$/],
    ['not-json', `{"clients": [{"secret": "${plain}"`, /: not valid JSON at line 1, column \d+$/],
    ['no-clients', '{"users": []}', /expected an object \{"clients"/],
    ['plaintext', JSON.stringify({ clients: [{ ...ok, secret: plain }] }), /clients\[0\]\.secret: expected hs256/],
    ['short-salt', JSON.stringify({ clients: [{ ...ok, secret: 'hs256$AAAA$BBBB' }] }), /clients\[0\]\.secret/],
    ['dup', JSON.stringify({ clients: [ok, ok] }), /clients\[1\]\.id: duplicate id "svc"/],
    ['bad-id', JSON.stringify({ clients: [{ ...ok, id: 'a:b' }] }), /clients\[0\]\.id/],
    ['no-aud', JSON.stringify({ clients: [{ ...ok, audiences: [] }] }), /clients\[0\]\.audiences/],
    ['aud-string', JSON.stringify({ clients: [{ ...ok, audiences: 'aud' }] }), /clients\[0\]\.audiences/],
    ['bad-grant', JSON.stringify({ clients: [{ ...ok, grants: ['implicit'] }] }), /clients\[0\]\.grants/],
    ['no-grants', JSON.stringify({ clients: [{ ...ok, grants: [] }] }), /clients\[0\]\.grants/],
    ['bad-scope', JSON.stringify({ clients: [{ ...ok, scope: ['a'] }] }), /clients\[0\]\.scope/],
    ['unknown-key', JSON.stringify({ clients: [{ ...ok, audience: 'x' }] }), /clients\[0\]: unknown key "audience"/]
  ]
  const dir = t.testdir()
  for (const [name, content, problem] of cases) {
    const file = join(dir, `${name}.json`)
    if (content !== '') await writeFile(file, content)
    const err = await ClientDirectory.load(file).then(() => null, (e: unknown) => e)
    t.ok(err instanceof ConfigError, `${name}: ConfigError`)
    if (!(err instanceof ConfigError)) continue
    t.equal(err.variable, 'CLIENTS_FILE', name)
    t.ok(err.message.startsWith(`CLIENTS_FILE: ${file}: `), `${name}: ${err.message}`)
    t.match(err.message, problem, name)
    t.notOk(/[\r\n]/.test(err.message), `${name}: one line`)
    t.notOk(err.message.includes(plain) || err.message.includes(ok.secret) || err.message.includes('hs256$AAAA'), `${name}: nothing secret echoed`)
  }
})

t.test('public clients: clients add --public, redirect URIs validated, loopback on any port', async t => {
  const dir = t.testdir()
  const file = join(dir, 'clients.json')
  const ok = pipedIo('')
  t.equal(await runClientsCommand(['add', 'notes-app', '--public', '--redirect-uri', 'http://127.0.0.1/callback', '--redirect-uri', 'com.example.notes:/oauth',
    '--scope', 'notes:read', '--audience', 'latchkey-api', '--file', file], ok.io, NO_ENV), 0, ok.err())
  t.notMatch(ok.out(), /client_secret/, 'no secret')
  const [stored] = await readClientsFile(file)
  t.same([stored?.public, stored?.grants, stored?.redirectUris, stored?.secret], [true, ['authorization_code', 'refresh_token'], ['http://127.0.0.1/callback', 'com.example.notes:/oauth'], undefined])
  const dirClients = ClientDirectory.fromClients(await readClientsFile(file))
  t.equal(dirClients.getPublic('notes-app')?.id, 'notes-app')
  t.equal(dirClients.authenticate('notes-app', ''), null, 'a public client never authenticates')

  for (const [why, args] of [
    ['http off loopback', ['--redirect-uri', 'http://app.example.com/cb']],
    ['localhost (RFC 8252 §8.3)', ['--redirect-uri', 'http://localhost/cb']],
    ['a fragment', ['--redirect-uri', 'https://app.example.com/cb#x']],
    ['a scheme not in reverse-domain form', ['--redirect-uri', 'myapp:/cb']],
    ['the password grant', ['--redirect-uri', 'https://app.example.com/cb', '--grant', 'password']],
    ['no redirect URI', []]
  ] as const) {
    const bad = pipedIo('')
    t.equal(await runClientsCommand(['add', `x${why.length}`, '--public', ...args, '--scope', 'a', '--audience', 'b', '--file', file], bad.io, NO_ENV), 1, why)
  }
  t.equal((await readClientsFile(file)).length, 1, 'nothing refused was written')
  const { redirectUriMatches } = await import('#gateway/identity/clients-file.js')
  t.ok(redirectUriMatches('http://127.0.0.1/callback', 'http://127.0.0.1:49152/callback'))
  t.ok(redirectUriMatches('http://[::1]/cb', 'http://[::1]:8080/cb'))
  t.notOk(redirectUriMatches('http://127.0.0.1/callback', 'http://127.0.0.1:1/callback/x'))
  t.notOk(redirectUriMatches('https://app.example.com/cb', 'https://app.example.com:444/cb'), 'https matches exactly')
})
