/**
 * Slow request bodies (issue 13 #7): one caller trickling bodies holds at most
 * `maxInFlightPerCaller` upstream requests; beyond that it is answered 429 at once, and every
 * other caller's requests still get through.
 */
import http from 'node:http'
import t from 'tap'
import { echoUpstream, proxyGateway, route, send } from './harness.js'

const CAP = 3

t.test('a caller trickling bodies cannot take the upstream from everyone', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await proxyGateway(t, { routes: [route(upstream.url)], maxInFlightPerCaller: CAP })
  const slow = `Bearer ${await gw.token({ sid: 'sid-slow' })}`
  const other = `Bearer ${await gw.token({ sid: 'sid-other', sub: 'bob' })}`

  // CAP + 2 POSTs that promise 100 bytes and send 1: each holds its request open.
  const held: http.ClientRequest[] = []
  const answers: Array<Promise<number>> = []
  for (let i = 0; i < CAP + 2; i++) {
    answers.push(new Promise<number>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: gw.port, method: 'POST', path: `/api/upload-${i}`, agent: false, headers: { authorization: slow, 'content-length': '100' } }, (res) => { res.resume(); resolve(res.statusCode ?? 0) })
      req.on('error', () => resolve(0))
      req.write('x')
      held.push(req)
    }))
    // One at a time, so the first CAP are in flight before the next arrives.
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.teardown(() => { for (const r of held) r.destroy() })

  const refused = await Promise.race([Promise.all(answers.slice(CAP)), new Promise<null>(resolve => setTimeout(() => resolve(null), 3000))])
  t.same(refused, [429, 429], 'the caller\'s requests beyond its share are answered 429 at once')
  const res = await send(gw.port, { path: '/api/fast', headers: { authorization: other } })
  t.equal(res.status, 200, 'another caller is served')
  const again = await send(gw.port, { path: '/api/fast', headers: { authorization: slow } })
  t.equal(again.status, 429, 'the slow caller stays at its share while its bodies trickle')
  t.equal(again.headers['retry-after'], '1')

  // Once its bodies end, the caller has its share back.
  for (const r of held.slice(0, CAP)) r.end('y'.repeat(99))
  const done = await Promise.all(answers.slice(0, CAP))
  t.same(done, Array(CAP).fill(200))
  t.equal((await send(gw.port, { path: '/api/after', headers: { authorization: slow } })).status, 200)
})
