import t from 'tap'
import { ManualClock } from '#shared/clock.js'
import { VERIFIED_TOKEN_CACHE_SIZE, VerifiedTokenCache } from '#shared/verified-token-cache.js'

t.test('an entry is served until its expiry and dropped at it', async (t) => {
  const clock = new ManualClock(1_000_000)
  const cache = new VerifiedTokenCache<string>({ clock })
  cache.set('a', 'A', 1_000_500)
  t.equal(cache.get('a'), 'A')
  clock.advance(499)
  t.equal(cache.get('a'), 'A')
  clock.advance(1)
  t.equal(cache.get('a'), undefined, 'gone exactly at exp')
  t.equal(cache.size, 0, 'and removed, not just hidden')
  cache.set('b', 'B', clock.now())
  t.equal(cache.size, 0, 'an already expired entry is never stored')
})

/** A cache of three entries, full: a, b, c set in that order, none hit yet. */
function fullCacheOfThree (): VerifiedTokenCache<number> {
  const cache = new VerifiedTokenCache<number>({ clock: new ManualClock(0), maxEntries: 3 })
  cache.set('a', 1, 10_000)
  cache.set('b', 2, 10_000)
  cache.set('c', 3, 10_000)
  return cache
}

t.test('least recently used goes first when full', async (t) => {
  const cache = fullCacheOfThree()
  t.equal(cache.get('a'), 1, 'touch a: b is now the oldest')
  cache.set('d', 4, 10_000)
  t.equal(cache.size, 3)
  t.equal(cache.get('b'), undefined, 'b evicted')
  t.equal(cache.get('a'), 1)
  t.equal(cache.get('c'), 3)
  t.equal(cache.get('d'), 4)
})

t.test('second chance: only entries hit since their last pass survive eviction', async (t) => {
  const cache = fullCacheOfThree()
  cache.get('a')
  cache.get('b')
  cache.set('d', 4, 10_000)
  t.equal(cache.get('c'), undefined, 'c, never hit, goes although a and b are older')
  cache.set('e', 5, 10_000)
  // a and b lost their marks when they were passed over; d was never hit: d goes
  // (a strict LRU, re-ordering on every hit, would have evicted a here).
  t.equal(cache.get('d'), undefined)
  t.same([cache.get('a'), cache.get('b'), cache.get('e')], [1, 2, 5])
  t.equal(cache.size, 3)
})

t.test('expired entries at the old end are swept on insertion', async (t) => {
  const clock = new ManualClock(0)
  const cache = new VerifiedTokenCache<number>({ clock, maxEntries: 100 })
  cache.set('old1', 1, 100)
  cache.set('old2', 2, 100)
  cache.set('live', 3, 10_000)
  clock.set(200)
  cache.set('new', 4, 10_000)
  t.equal(cache.size, 2, 'the two expired entries were dropped without being looked up')
})

t.test('size bound is a named default', async (t) => {
  t.equal(new VerifiedTokenCache().maxEntries, VERIFIED_TOKEN_CACHE_SIZE)
  const cache = new VerifiedTokenCache<number>({ maxEntries: 0 })
  cache.set('a', 1, Date.now() + 10_000)
  t.equal(cache.get('a'), undefined, 'size 0 disables caching')
  t.throws(() => new VerifiedTokenCache({ maxEntries: -1 }), TypeError)
})
