/**
 * The server's inactivity timeout (fast-lane.ts `closeIfIdle`, Fastify's `connectionTimeout`):
 * it ends silent connections, but never one whose request has arrived and is still being
 * answered (a slow upstream, a queued login): those used to be cut without a status.
 */
import type { AddressInfo } from 'node:net'
import net from 'node:net'
import t from 'tap'
import { FastLane } from '#gateway/proxy/fast-lane.js'
import { rawExchange, statusOf } from './harness.js'

const IDLE_MS = 300

async function server (t: { teardown: (fn: () => unknown) => void }, answerAfterMs: number): Promise<number> {
  const lane = new FastLane()
  const srv = lane.serverFactory((req, res) => {
    req.resume()
    req.on('end', () => { setTimeout(() => { res.end('done') }, answerAfterMs) })
  }, { connectionTimeout: IDLE_MS, keepAliveTimeout: 5000 })
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { srv.closeAllConnections(); srv.close() })
  return (srv.address() as AddressInfo).port
}

function closedWithin (port: number, write: string, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.write(write) })
    const timer = setTimeout(() => { socket.destroy(); resolve(false) }, ms)
    socket.on('close', () => { clearTimeout(timer); resolve(true) })
    socket.on('error', () => {})
  })
}

t.test('a request answered after three idle timeouts still gets its answer', async (t) => {
  const port = await server(t, 3 * IDLE_MS)
  const raw = await rawExchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 3000)
  t.equal(statusOf(raw), 200)
  t.match(raw, /done$/)
})

t.test('silent connections are still ended: never used, or stalled in the middle of a body', async (t) => {
  const port = await server(t, 0)
  t.ok(await closedWithin(port, '', 10 * IDLE_MS), 'a connection that sends nothing')
  t.ok(await closedWithin(port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc', 10 * IDLE_MS), 'a body that stops arriving')
  t.ok(await closedWithin(port, 'GET / HTTP/1.1\r\nHost: x\r\n', 10 * IDLE_MS), 'headers that stop arriving')
})
