import t from 'tap'
import {
  ARGON2_MAX_CONCURRENT, ARGON2_MEMORY_KIB, ARGON2_PARALLELISM, ARGON2_TIME_COST, argon2Load, argon2idParams, hashPassword, verifyPassword
} from '#gateway/identity/password.js'

const PHC = /^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/

t.test('hashes are argon2id PHC strings at or above the OWASP minimum', async t => {
  const phc = await hashPassword('correct horse battery staple')
  const m = PHC.exec(phc)
  t.ok(m, `PHC format: ${phc.slice(0, 32)}...`)
  t.ok(Number(m?.[1]) >= 19456, 'm >= 19456 KiB')
  t.ok(Number(m?.[2]) >= 2, 't >= 2')
  t.ok(Number(m?.[3]) >= 1, 'p >= 1')
  t.equal(Number(m?.[1]), ARGON2_MEMORY_KIB)
  t.equal(Number(m?.[2]), ARGON2_TIME_COST)
  t.equal(Number(m?.[3]), ARGON2_PARALLELISM)
  t.ok(Buffer.from(m?.[4] ?? '', 'base64').length >= 16, 'salt >= 128 bits')
  t.equal(Buffer.from(m?.[5] ?? '', 'base64').length, 32, '256-bit digest')
  t.notOk(phc.includes('correct horse'), 'no plaintext in the hash')
  t.not(await hashPassword('correct horse battery staple'), phc, 'salted: same password, different hash')
  t.same(argon2idParams(phc), { memoryKib: 19456, timeCost: 2, parallelism: 1, outputBytes: 32 })
})

t.test('verify accepts the right password only', async t => {
  const phc = await hashPassword('pw-1')
  t.equal(await verifyPassword(phc, 'pw-1'), true)
  t.equal(await verifyPassword(phc, 'pw-2'), false)
  t.equal(await verifyPassword(phc, 'pw-1 '), false)
  t.equal(await verifyPassword(phc, ''), false)
})

t.test('a malformed or foreign hash is false, never a throw', async t => {
  const argon2i = '$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Q8Qh3V3j9b3XnVGqI9d9Tqk0b3mK8g7cQfS9q1r2ZQ'
  const bad = [
    '', 'garbage', 'pw', '$argon2id$', '$argon2id$v=19$m=19456,t=2,p=1$AAAA$BBBB',
    '$2b$10$abcdefghijklmnopqrstuuJ0p0Gm3jK7kYQm7r2wS3h1Qk8b0XG6', argon2i,
    // absurd parameters from a hand-edited file must not make a login allocate 4 TiB
    '$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Q8Qh3V3j9b3XnVGqI9d9Tqk0b3mK8g7cQfS9q1r2ZQ'
  ]
  for (const phc of bad) {
    t.equal(await verifyPassword(phc, 'pw'), false, JSON.stringify(phc.slice(0, 40)))
  }
  t.equal(await verifyPassword(undefined as unknown as string, 'pw'), false, 'non-string hash')
  t.equal(argon2idParams(argon2i), null, 'argon2i is not accepted as argon2id')
})

t.test('at most ARGON2_MAX_CONCURRENT hashes run at once; the rest queue and all finish', async t => {
  const phc = await hashPassword('correct horse', { memoryKib: 1024, timeCost: 1, parallelism: 1, outputBytes: 32 })
  const n = ARGON2_MAX_CONCURRENT * 3
  let maxActive = 0
  let maxQueued = 0
  const sample = setInterval(() => {
    const { active, queued } = argon2Load()
    maxActive = Math.max(maxActive, active)
    maxQueued = Math.max(maxQueued, queued)
  }, 1)
  const results = await Promise.all(Array.from({ length: n }, async (_v, i) => await verifyPassword(phc, i % 2 === 0 ? 'correct horse' : 'wrong')))
  clearInterval(sample)
  t.same(results, Array.from({ length: n }, (_v, i) => i % 2 === 0), 'every verification answered, each its own answer')
  t.ok(maxActive >= 1 && maxActive <= ARGON2_MAX_CONCURRENT, `at most ${ARGON2_MAX_CONCURRENT} at once (saw ${maxActive})`)
  t.ok(maxQueued > 0, `the rest waited (up to ${maxQueued})`)
  t.same(argon2Load(), { active: 0, queued: 0 }, 'every slot is given back')
})
