/**
 * `latchkey users list|remove|disable|enable|passwd|set-scope`, `latchkey clients
 * list|remove|disable|enable|rotate-secret`, `latchkey --version`: what each does to the
 * file (which stays 0600) and what the gateway's directories then accept.
 */
import t from 'tap'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { ManualClock } from '#shared/clock.js'
import { runClientsCommand } from '#gateway/cli/clients.js'
import { main } from '#gateway/cli/main.js'
import { runUsersCommand } from '#gateway/cli/users.js'
import { ClientDirectory, readClientsFile } from '#gateway/identity/clients-file.js'
import { UserDirectory } from '#gateway/identity/user-directory.js'
import { readUsersFile } from '#gateway/identity/users-file.js'
import { pipedIo } from '../identity/cli-io.js'

const PASSWORD = 'lifecycle passphrase'

async function users (file: string, argv: string[], stdin = ''): Promise<{ code: number, out: string, err: string }> {
  const fake = pipedIo(stdin)
  const code = await runUsersCommand([...argv, '--file', file], fake.io, {})
  return { code, out: fake.out(), err: fake.err() }
}

async function clients (file: string, argv: string[]): Promise<{ code: number, out: string, err: string }> {
  const fake = pipedIo('')
  const code = await runClientsCommand([...argv, '--file', file], fake.io, {})
  return { code, out: fake.out(), err: fake.err() }
}

const mode = (file: string): number => statSync(file).mode & 0o777

t.test('users: list, set-scope, disable, enable, passwd, remove', async (t) => {
  const file = join(t.testdir(), 'users.json')
  t.equal((await users(file, ['add', 'alice', '--scope', 'a b'], PASSWORD)).code, 0)
  t.equal((await users(file, ['add', 'bob'], PASSWORD)).code, 0)
  const [alice, bob] = await readUsersFile(file)

  const list = await users(file, ['list'])
  t.equal(list.code, 0)
  t.equal(list.out, `alice\t${alice?.id ?? ''}\tenabled\ta b\nbob\t${bob?.id ?? ''}\tenabled\t\n`)
  t.notMatch(list.out, /argon2/, 'no hashes listed')

  const scoped = await users(file, ['set-scope', 'alice', '--scope', 'a'])
  t.equal(scoped.code, 0, scoped.err)
  t.match(scoped.out, /scope of "alice" is now "a" .*ends their sessions/)
  t.equal((await readUsersFile(file))[0]?.scope, 'a')

  t.equal((await users(file, ['disable', 'alice'])).code, 0)
  t.equal((await readUsersFile(file))[0]?.disabled, true)
  t.match((await users(file, ['list'])).out, /^alice\t\S+\tdisabled\ta\n/)
  let directory = (await UserDirectory.load(file)).directory
  t.equal(await directory.authenticate('alice', PASSWORD), null, 'a disabled user does not authenticate')
  t.equal((await users(file, ['enable', 'alice'])).code, 0)
  t.equal((await readUsersFile(file))[0]?.disabled, undefined, 'enabled: the key is gone')

  const short = await users(file, ['passwd', 'alice'], 'seven77')
  t.equal(short.code, 1)
  t.match(short.err, /password: must be at least 8 characters \(NIST SP 800-63B/, 'says why')
  const passwd = await users(file, ['passwd', 'alice'], 'a brand new passphrase\n')
  t.equal(passwd.code, 0, passwd.err)
  directory = (await UserDirectory.load(file)).directory
  t.ok(await directory.authenticate('alice', 'a brand new passphrase'))
  t.equal(await directory.authenticate('alice', PASSWORD), null, 'the old password is gone')

  const removed = await users(file, ['remove', 'bob'])
  t.equal(removed.code, 0)
  t.match(removed.out, /removed user "bob"/)
  t.same((await readUsersFile(file)).map(u => u.username), ['alice'])
  t.equal(mode(file), 0o600, 'the file stays 0600')

  const unknown = await users(file, ['remove', 'bob'])
  t.equal(unknown.code, 1)
  t.match(unknown.err, /no user named "bob"/)
  for (const argv of [['list', 'x'], ['remove'], ['set-scope', 'alice'], ['disable', 'alice', '--scope', 'x'], ['passwd']]) {
    t.equal((await users(file, argv)).code, 2, argv.join(' '))
  }
})

t.test('users add refuses passwords under 8 characters and says why; 8 are enough', async (t) => {
  const file = join(t.testdir(), 'users.json')
  const short = await users(file, ['add', 'carol'], '1234567')
  t.equal(short.code, 1)
  t.equal(short.err, 'latchkey users: password: must be at least 8 characters (NIST SP 800-63B §5.1.1: shorter passwords are guessed too easily)\n')
  t.equal((await users(file, ['add', 'carol'], 'ünïcödé')).code, 1, 'counted in characters, not bytes')
  t.equal((await users(file, ['add', 'carol'], '12345678')).code, 0)
})

t.test('clients: list, disable, enable, rotate-secret with an overlap, remove', async (t) => {
  const file = join(t.testdir(), 'clients.json')
  const added = await clients(file, ['add', 'svc', '--scope', 'internal:read', '--audience', 'api'])
  const oldSecret = /^client_secret: (\S+)$/m.exec(added.out)?.[1] as string
  t.equal((await clients(file, ['add', 'other', '--scope', '', '--audience', 'api'])).code, 0)
  t.equal((await clients(file, ['list'])).out, 'svc\tenabled\tinternal:read\tapi\tclient_credentials\nother\tenabled\t\tapi\tclient_credentials\n')

  t.equal((await clients(file, ['disable', 'svc'])).code, 0)
  t.equal((await readClientsFile(file))[0]?.disabled, true)
  t.equal((await ClientDirectory.load(file)).authenticate('svc', oldSecret), null, 'a disabled client does not authenticate')
  t.match((await clients(file, ['list'])).out, /^svc\tdisabled\t/)
  t.equal((await clients(file, ['enable', 'svc'])).code, 0)
  t.ok((await ClientDirectory.load(file)).authenticate('svc', oldSecret))

  const before = Date.now()
  const rotated = await clients(file, ['rotate-secret', 'svc', '--overlap', '2h'])
  t.equal(rotated.code, 0, rotated.err)
  const newSecret = /^client_secret: (\S+)$/m.exec(rotated.out)?.[1] as string
  t.not(newSecret, oldSecret)
  t.match(rotated.out, /the old one keeps working until \d{4}-\d\d-\d\dT/)
  const stored = (await readClientsFile(file))[0]
  const expiresAt = stored?.previousSecret?.expiresAt ?? 0
  t.ok(expiresAt >= before + 2 * 3600_000 && expiresAt <= Date.now() + 2 * 3600_000, 'expiry is now + the overlap')
  const text = readFileSync(file, 'utf8')
  t.notOk(text.includes(newSecret) || text.includes(oldSecret), 'no secret in the file')
  t.match(text, /"previous_secret": "hs256\$/)

  const clock = new ManualClock(expiresAt - 1)
  const directory = await ClientDirectory.load(file, clock)
  t.ok(directory.authenticate('svc', newSecret), 'the new secret works')
  t.ok(directory.authenticate('svc', oldSecret), 'the old one too, inside the overlap')
  t.equal(directory.authenticate('other', oldSecret), null, 'for its own client only')
  clock.advance(1)
  t.equal(directory.authenticate('svc', oldSecret), null, 'and not after')
  t.ok(directory.authenticate('svc', newSecret))

  const defaultOverlap = await clients(file, ['rotate-secret', 'svc'])
  t.equal(defaultOverlap.code, 0)
  const replaced = (await readClientsFile(file))[0]?.previousSecret?.expiresAt ?? 0
  t.ok(Math.abs(replaced - (Date.now() + 24 * 3600_000)) < 60_000, 'default overlap: 24 h')
  const latest = /^client_secret: (\S+)$/m.exec(defaultOverlap.out)?.[1] as string
  const now = await ClientDirectory.load(file)
  t.ok(now.authenticate('svc', newSecret), 'the secret it replaced overlaps')
  t.equal(now.authenticate('svc', oldSecret), null, 'the one before that is dropped: one previous secret at most')
  t.ok(now.authenticate('svc', latest))

  t.equal((await clients(file, ['rotate-secret', 'svc', '--overlap', '0'])).code, 0)
  t.equal((await readClientsFile(file))[0]?.previousSecret, undefined, '--overlap 0 stops the old secret at once')
  t.equal((await clients(file, ['rotate-secret', 'svc', '--overlap', 'soon'])).code, 1)

  t.equal((await clients(file, ['remove', 'other'])).code, 0)
  t.same((await readClientsFile(file)).map(c => c.id), ['svc'])
  t.equal(mode(file), 0o600, 'the file stays 0600')
  t.match((await clients(file, ['disable', 'nobody'])).err, /no client with id "nobody"/)
  for (const argv of [['list', 'x'], ['remove'], ['disable', 'svc', '--scope', 'x'], ['remove', 'svc', '--overlap', '1h']]) {
    t.equal((await clients(file, argv)).code, 2, argv.join(' '))
  }
})

t.test('latchkey --version prints the package version', async (t) => {
  const fake = pipedIo('')
  t.equal(await main(['--version'], fake.io, {}), 0)
  const pkg = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version: string }
  t.equal(fake.out(), `latchkey ${pkg.version}\n`)
})
