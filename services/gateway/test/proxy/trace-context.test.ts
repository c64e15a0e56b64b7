/**
 * W3C Trace Context at the proxy hop with tracing off (no SDK loaded in this process): the
 * caller's traceparent passes, none is invented for a request without one, and a
 * forward-auth answer names the caller's trace or a new one.
 */
import t from 'tap'
import { answerTraceparent, newTraceparent, propagate } from '#gateway/proxy/trace-context.js'

const W3C = /^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-01$/

t.test('a new traceparent is valid W3C and never repeats', async (t) => {
  const seen = new Set<string>()
  for (let i = 0; i < 1000; i++) {
    const tp = newTraceparent()
    t.match(tp, W3C)
    seen.add(tp.slice(3, 35))
  }
  t.equal(seen.size, 1000, '1,000 distinct trace ids')
})

t.test('tracing off: the caller\'s traceparent passes, nothing is added when there is none', async (t) => {
  const callers = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'vendor=1' }
  const out = { ...callers }
  propagate(undefined, out)
  t.same(out, callers, 'untouched')
  const fresh: Record<string, string | undefined> = {}
  propagate(undefined, fresh)
  t.same(fresh, {}, 'no per-request tracing work with tracing off')
})

t.test('forward-auth answers carry the caller\'s trace, or a new one', async (t) => {
  const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
  t.equal(answerTraceparent({ traceparent: tp }), tp)
  t.match(answerTraceparent({}), W3C)
})
