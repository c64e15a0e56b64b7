import { readdir, readFile, stat, writeFile, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError } from '#shared/errors.js'
import { runUsersCommand } from '#gateway/cli/users.js'
import { UserDirectory } from '#gateway/identity/user-directory.js'
import { addUser, readUsersFile } from '#gateway/identity/users-file.js'
import { hashPassword } from '#gateway/identity/password.js'
import { pipedIo, ttyIo } from './cli-io.js'

const NO_ENV = {}

t.test('users add: password from piped stdin, then UserDirectory authenticates it', async t => {
  const dir = t.testdir()
  const file = join(dir, 'users.json')
  const fake = pipedIo('s3cret pass phrase\n')
  const code = await runUsersCommand(['add', 'alice', '--scope', 'notes:read notes:write', '--file', file], fake.io, NO_ENV)
  t.equal(code, 0, fake.err())
  t.match(fake.out(), /^added user "alice" \(id usr_[A-Za-z0-9_-]{16}, scope "notes:read notes:write"\) to .*users\.json\n$/)
  t.notOk(fake.out().includes('s3cret') || fake.err().includes('s3cret'), 'the password is never printed')

  t.equal((await stat(file)).mode & 0o777, 0o600, 'created 0600')
  const text = await readFile(file, 'utf8')
  t.notOk(text.includes('s3cret'), 'no plaintext in the file')
  const json = JSON.parse(text) as { users: Array<Record<string, string>> }
  t.equal(json.users.length, 1)
  t.same(Object.keys(json.users[0] ?? {}).sort(), ['id', 'password', 'scope', 'username'])
  t.match(json.users[0], { username: 'alice', scope: 'notes:read notes:write', password: /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/, id: /^usr_/ })
  t.same((await readdir(dir)).sort(), ['users.json'], 'no temp file left behind')

  const { directory, demoPassword } = await UserDirectory.load(file)
  t.equal(demoPassword, undefined, 'no demo user when a file is given')
  t.same(await directory.authenticate('alice', 's3cret pass phrase'), { id: json.users[0]?.id, username: 'alice', scope: 'notes:read notes:write' })
  t.equal(await directory.authenticate('alice', 's3cret pass phrase\n'), null, 'the trailing newline was stripped, not stored')
  t.equal(await directory.authenticate('alice', 'wrong'), null)
  t.equal(await directory.authenticate('Alice', 's3cret pass phrase'), null, 'usernames are case-sensitive')
  t.equal(directory.getById(json.users[0]?.id ?? '')?.username, 'alice')
})

t.test('users add: USERS_FILE from env, default scope is none, second user appended', async t => {
  const file = join(t.testdir(), 'u.json')
  const a = pipedIo('pw-a long enough')
  t.equal(await runUsersCommand(['add', 'bob'], a.io, { USERS_FILE: file }), 0, a.err())
  t.match(a.out(), /scope \(none\)/)
  const b = pipedIo('pw-c long enough\r\n')
  t.equal(await runUsersCommand(['add', 'carol', '--scope', 'x'], b.io, { USERS_FILE: file }), 0, b.err())
  const users = await readUsersFile(file)
  t.same(users.map(u => [u.username, u.scope]), [['bob', ''], ['carol', 'x']])
  const { directory } = await UserDirectory.load(file)
  t.ok(await directory.authenticate('bob', 'pw-a long enough'))
  t.ok(await directory.authenticate('carol', 'pw-c long enough'), 'CRLF stripped too')
})

t.test('users add refuses duplicates, including case variants, and leaves the file unchanged', async t => {
  const file = join(t.testdir(), 'users.json')
  await addUser(file, { username: 'alice', password: 'password one' })
  const before = await readFile(file, 'utf8')
  for (const name of ['alice', 'ALICE', 'ａｌｉｃｅ']) {
    const fake = pipedIo('password two')
    t.equal(await runUsersCommand(['add', name, '--file', file], fake.io, NO_ENV), 1, name)
    t.match(fake.err(), /^latchkey users: USERS_FILE: .* already exists\n$/)
  }
  await t.rejects(addUser(file, { username: 'alice', password: 'password two' }), { name: 'ConfigError', variable: 'USERS_FILE' })
  t.equal(await readFile(file, 'utf8'), before)
})

t.test('users add: input validation', async t => {
  const file = join(t.testdir(), 'users.json')
  const empty = pipedIo('\n')
  t.equal(await runUsersCommand(['add', 'alice', '--file', file], empty.io, NO_ENV), 1)
  t.match(empty.err(), /password: must not be empty/)
  await t.rejects(stat(file), { code: 'ENOENT' }, 'nothing written')

  const noFile = pipedIo('password')
  t.equal(await runUsersCommand(['add', 'alice'], noFile.io, NO_ENV), 2)
  t.equal(noFile.err(), 'latchkey users: no users file: pass --file FILE or set USERS_FILE\n')

  for (const argv of [[], ['add'], ['delete', 'x'], ['add', 'a', 'b'], ['add', 'a', '--bogus']]) {
    const fake = pipedIo('password')
    t.equal(await runUsersCommand([...argv, '--file', file], fake.io, NO_ENV), 2, argv.join(' '))
  }

  const badScope = pipedIo('password')
  t.equal(await runUsersCommand(['add', 'alice', '--scope', 'a "b"', '--file', file], badScope.io, NO_ENV), 1)
  t.match(badScope.err(), /scope: /)

  for (const username of ['', 'a'.repeat(65), 'tab\there', 'nl\n', ' lead', 'trail ']) {
    await t.rejects(addUser(file, { username, password: 'password' }), { name: 'ConfigError', variable: 'username' }, JSON.stringify(username))
  }
  await t.rejects(addUser(file, { username: 'ok', password: 'x'.repeat(1025) }), { name: 'ConfigError', variable: 'password' })
  t.ok(await addUser(file, { username: 'ü'.repeat(64), password: 'password' }), '64 characters is allowed')
})

t.test('users add: prompted twice on a terminal, echo off', async t => {
  const file = join(t.testdir(), 'users.json')
  const fake = ttyIo()
  const run = runUsersCommand(['add', 'dave', '--file', file], fake.io, NO_ENV)
  fake.stdin.write('hunter2x')
  fake.stdin.write('\u007f2\r') // backspace edits: hunter22
  await new Promise(resolve => setImmediate(resolve))
  fake.stdin.write('hunter22\r')
  t.equal(await run, 0, fake.err())
  t.same(fake.rawModes, [true, false], 'raw mode on for the prompt, restored after')
  t.match(fake.err(), /Password for dave: \nRepeat password: \n/)
  t.notOk(fake.err().includes('hunter') || fake.out().includes('hunter'), 'nothing echoed')
  const { directory } = await UserDirectory.load(file)
  t.ok(await directory.authenticate('dave', 'hunter22'))

  const mismatch = ttyIo()
  const run2 = runUsersCommand(['add', 'erin', '--file', file], mismatch.io, NO_ENV)
  mismatch.stdin.write('password one\rpassword two\r')
  t.equal(await run2, 1)
  t.match(mismatch.err(), /do not match/)
  t.same(mismatch.rawModes, [true, false])

  const cancel = ttyIo()
  const run3 = runUsersCommand(['add', 'erin', '--file', file], cancel.io, NO_ENV)
  cancel.stdin.write('abc\u0003')
  t.equal(await run3, 130)
  t.same(cancel.rawModes, [true, false])
  t.same((await readUsersFile(file)).map(u => u.username), ['dave'])
})

t.test('an existing file keeps its mode', async t => {
  const file = join(t.testdir(), 'users.json')
  await writeFile(file, '{"users": []}\n')
  await chmod(file, 0o640)
  await addUser(file, { username: 'alice', password: 'password' })
  t.equal((await stat(file)).mode & 0o777, 0o640)
})

t.test('bad users files: ConfigError naming USERS_FILE, one line, no secrets echoed', async t => {
  const phc = await hashPassword('pw')
  const ok = { id: 'usr_a', username: 'a', password: phc, scope: '' }
  const cases: Array<[string, string, RegExp]> = [
    ['missing', '', /: file not found$/],
    ['not-json', '{"users": [ {"password": "plain-secret-1"', /: not valid JSON at line 1, column \d+$/],
    ['not-object', '[]', /expected an object \{"users"/],
    ['no-users', '{"people": []}', /expected an object \{"users"/],
    ['plaintext', JSON.stringify({ users: [{ ...ok, password: 'plain-secret-1' }] }), /users\[0\]\.password: expected an argon2id PHC string/],
    ['dup-name', JSON.stringify({ users: [ok, { ...ok, id: 'usr_b' }] }), /users\[1\]\.username: duplicate/],
    ['dup-id', JSON.stringify({ users: [ok, { ...ok, username: 'b' }] }), /users\[1\]\.id: duplicate/],
    ['unknown-key', JSON.stringify({ users: [{ ...ok, scopes: 'x' }] }), /users\[0\]: unknown key "scopes"/],
    ['bad-scope', JSON.stringify({ users: [{ ...ok, scope: 'a\\b' }] }), /users\[0\]\.scope/],
    ['no-scope', JSON.stringify({ users: [{ id: 'usr_a', username: 'a', password: phc }] }), /users\[0\]\.scope/],
    ['bad-id', JSON.stringify({ users: [{ ...ok, id: 'has space' }] }), /users\[0\]\.id/],
    ['bad-name', JSON.stringify({ users: [{ ...ok, username: '' }] }), /users\[0\]\.username: must be 1\.\.64/]
  ]
  const dir = t.testdir()
  for (const [name, content, problem] of cases) {
    const file = join(dir, `${name}.json`)
    if (content !== '') await writeFile(file, content)
    const err = await UserDirectory.load(file).then(() => null, (e: unknown) => e)
    t.ok(err instanceof ConfigError, `${name}: ConfigError`)
    if (!(err instanceof ConfigError)) continue
    t.equal(err.variable, 'USERS_FILE', name)
    t.ok(err.message.startsWith(`USERS_FILE: ${file}: `), `${name}: ${err.message}`)
    t.match(err.message, problem, name)
    t.notOk(/[\r\n]/.test(err.message), `${name}: one line`)
    t.notOk(err.message.includes('plain-secret') || err.message.includes('$argon2id$'), `${name}: nothing secret echoed`)
  }
  const cli = pipedIo('password')
  t.equal(await runUsersCommand(['add', 'x', '--file', join(dir, 'plaintext.json')], cli.io, NO_ENV), 1, 'add refuses to rewrite a broken file')
  t.match(cli.err(), /^latchkey users: USERS_FILE: .*users\[0\]\.password/)
})
