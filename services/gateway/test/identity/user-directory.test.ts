import { join } from 'node:path'
import t from 'tap'
import { DEMO_SCOPE, DEMO_USERNAME, UserDirectory } from '#gateway/identity/user-directory.js'
import { addUser } from '#gateway/identity/users-file.js'

// Passwords a careless default would use; the demo password must be none of them.
const FIXED = ['demo', 'password', 'Password1', 'changeme', 'admin', 'secret', 'latchkey', 'letmein', '123456', '12345678', 'demo123', 'demodemo']

t.test('demo mode: a generated password, different at every load, never a fixed one', async t => {
  const one = await UserDirectory.load(undefined)
  const two = await UserDirectory.load(undefined)
  t.type(one.demoPassword, 'string')
  t.type(two.demoPassword, 'string')
  const p1 = one.demoPassword ?? ''
  const p2 = two.demoPassword ?? ''
  t.not(p1, p2, 'differs between loads')
  t.match(p1, /^[A-Za-z0-9_-]{16}$/, '16 base64url chars (96 bits)')
  for (const fixed of FIXED) t.not(p1.toLowerCase(), fixed.toLowerCase())
  t.equal(one.directory.size, 1)

  const user = await one.directory.authenticate(DEMO_USERNAME, p1)
  t.match(user, { username: 'demo', scope: DEMO_SCOPE, id: /^usr_/ })
  t.equal(DEMO_SCOPE, 'notes:read notes:write')
  t.equal(await one.directory.authenticate('demo', p2), null, "the other load's password does not work")
  for (const fixed of FIXED) t.equal(await one.directory.authenticate('demo', fixed), null, `not "${fixed}"`)
})

t.test('unknown user and wrong password both fail, in comparable time (dummy hash is verified)', async t => {
  const file = join(t.testdir(), 'users.json')
  await addUser(file, { username: 'alice', password: 'right-password' })
  const { directory } = await UserDirectory.load(file)

  t.equal(await directory.authenticate('alice', 'wrong-password'), null)
  t.equal(await directory.authenticate('mallory', 'right-password'), null)
  t.ok(await directory.authenticate('alice', 'right-password'))

  // Interleaved so machine load drifts affect both sides alike. Not a benchmark: it only
  // fails if one path skips argon2 (an unknown user answering in microseconds).
  const wrong: number[] = []
  const unknown: number[] = []
  for (let i = 0; i < 5; i++) {
    let start = performance.now()
    await directory.authenticate('alice', `wrong-${i}`)
    wrong.push(performance.now() - start)
    start = performance.now()
    await directory.authenticate(`nobody-${i}`, `wrong-${i}`)
    unknown.push(performance.now() - start)
  }
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length
  const ratio = mean(unknown) / mean(wrong)
  t.comment(`argon2id verify: wrong password ${mean(wrong).toFixed(1)} ms, unknown user ${mean(unknown).toFixed(1)} ms (ratio ${ratio.toFixed(2)})`)
  t.ok(ratio > 0.5 && ratio < 2, `ratio ${ratio.toFixed(2)} within 0.5..2`)
})

t.test('hostile input returns null quickly, never throws, never hashes 100 KB', async t => {
  const file = join(t.testdir(), 'users.json')
  await addUser(file, { username: 'alice', password: 'password' })
  const { directory } = await UserDirectory.load(file)
  const big = 'a'.repeat(100 * 1024)
  const inputs: Array<[unknown, unknown]> = [
    [big, 'pw'], ['alice', big], [big, big], [undefined, 'pw'], ['alice', undefined], [null, null],
    [42, 'pw'], ['alice', { toString: () => 'pw' }], [['alice'], ['pw']], ['', ''], ['alice', '']
  ]
  for (const [username, password] of inputs) {
    const start = performance.now()
    const result = await directory.authenticate(username, password)
    const ms = performance.now() - start
    t.equal(result, null, `${typeof username}/${typeof password}`)
    t.ok(ms < 1000, `quick (${ms.toFixed(0)} ms)`)
  }
  t.ok(await directory.authenticate('alice', 'password'), 'the real user still works')
  t.equal(await directory.authenticate('alice', 'p'.repeat(1025)), null, 'a password past the limit is refused')
})
