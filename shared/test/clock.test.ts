import t from 'tap'
import { ManualClock, systemClock } from '#shared/clock.js'

t.test('ManualClock moves only when told', async (t) => {
  const clock = new ManualClock(1000)
  t.equal(clock.now(), 1000)
  clock.advance(500)
  t.equal(clock.now(), 1500)
  clock.set(10)
  t.equal(clock.now(), 10)
})

t.test('systemClock follows Date.now', async (t) => {
  const before = Date.now()
  const now = systemClock.now()
  t.ok(now >= before && now <= Date.now())
})
