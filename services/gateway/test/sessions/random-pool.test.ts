import t from 'tap'
import { RANDOM_POOL_BYTES, RandomPool } from '#gateway/sessions/random-pool.js'

t.test('hands every byte out once, across refills, each take in a buffer of its own', async t => {
  const pool = new RandomPool(64)
  const seen = new Set<string>()
  const takes: Buffer[] = []
  for (let i = 0; i < 1000; i++) {
    const b = pool.take(24)
    t.equal(b.length, 24)
    takes.push(b)
    seen.add(b.toString('hex'))
  }
  t.equal(seen.size, 1000, '1,000 takes of 24 bytes (each crossing refills of 64): no two alike')
  const bytes = Buffer.concat(takes)
  const ones = [...bytes].reduce((n, x) => n + x.toString(2).split('1').length - 1, 0)
  t.ok(Math.abs(ones / (bytes.length * 8) - 0.5) < 0.02, `about half the bits set (${(ones / (bytes.length * 8)).toFixed(3)})`)
  const first = takes[0] as Buffer
  const copy = Buffer.from(first)
  for (const b of takes.slice(1)) b.fill(0)
  t.same(first, copy, 'zeroing later takes leaves an earlier one alone: nothing is shared')
})

t.test('a take larger than the pool is drawn directly; bad sizes throw', async t => {
  const pool = new RandomPool(16)
  t.equal(pool.take(100).length, 100)
  t.equal(pool.take(0).length, 0)
  t.throws(() => pool.take(-1), RangeError)
  t.throws(() => pool.take(1.5), RangeError)
  t.throws(() => new RandomPool(0), RangeError)
  t.equal(RANDOM_POOL_BYTES, 4096)
})
