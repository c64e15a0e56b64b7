import t from 'tap'
import { Slots } from '#gateway/identity/slots.js'

function deferred (): { promise: Promise<void>, resolve: () => void, reject: (e: Error) => void } {
  let resolve!: () => void
  let reject!: (e: Error) => void
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

t.test('runs at most size tasks at once, the next in arrival order, and frees a slot on a throw', async t => {
  const slots = new Slots(2)
  const gates = Array.from({ length: 5 }, deferred)
  const started: number[] = []
  const runs = gates.map(async (g, i) => await slots.run(async () => { started.push(i); await g.promise; return i }))
  await new Promise(resolve => setImmediate(resolve))
  t.same(started, [0, 1], 'two run, three wait')
  t.same([slots.active, slots.queued], [2, 3])
  gates[1]?.reject(new Error('task failed'))
  await t.rejects(runs[1] as Promise<number>, /task failed/)
  await new Promise(resolve => setImmediate(resolve))
  t.same(started, [0, 1, 2], 'a failed task gives its slot to the first waiter')
  gates[0]?.resolve()
  gates[2]?.resolve()
  await new Promise(resolve => setImmediate(resolve))
  t.same(started, [0, 1, 2, 3, 4], 'then the others, in order')
  gates[3]?.resolve()
  gates[4]?.resolve()
  t.same(await Promise.all([runs[0], runs[2], runs[3], runs[4]]), [0, 2, 3, 4])
  t.same([slots.active, slots.queued], [0, 0])
})

t.test('size must be a positive integer', async t => {
  for (const bad of [0, -1, 1.5, Number.NaN]) t.throws(() => new Slots(bad), RangeError)
})
