/**
 * WebSocket upgrades through a proxy route, with just enough RFC 6455 (handshake, one
 * masked text frame each way) to prove bytes flow after the switch.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import http, { type IncomingHttpHeaders } from 'node:http'
import net from 'node:net'
import { closedPort, listenUpstream, proxyGateway, rawExchange, route, send, statusOf } from './harness.js'

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC11B85'

function acceptFor (key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64')
}

/** A text frame, FIN set, payload < 126 bytes; clients mask (RFC 6455 §5.3). */
function frame (text: string, mask: boolean): Buffer {
  const payload = Buffer.from(text)
  if (!mask) return Buffer.concat([Buffer.from([0x81, payload.length]), payload])
  const key = randomBytes(4)
  const masked = Buffer.from(payload.map((b, i) => b ^ (key[i % 4] as number)))
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), key, masked])
}

function unframe (buf: Buffer): string {
  const len = (buf[1] as number) & 0x7f
  if (((buf[1] as number) & 0x80) === 0) return buf.subarray(2, 2 + len).toString()
  const key = buf.subarray(2, 6)
  return Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ (key[i % 4] as number))).toString()
}

interface WsUpstream { url: string, handshakes: IncomingHttpHeaders[], paths: string[], closed: Array<Promise<void>>, readonly requests: number }

async function wsUpstream (t: { teardown (fn: () => unknown): void }): Promise<WsUpstream> {
  const handshakes: IncomingHttpHeaders[] = []
  const paths: string[] = []
  const closed: Array<Promise<void>> = []
  let requests = 0
  const server = http.createServer((_req, res) => { requests++; res.end('plain') })
  server.on('upgrade', (req, socket, head) => {
    handshakes.push(req.headers)
    paths.push(req.url ?? '')
    socket.on('error', () => {})
    closed.push(new Promise(resolve => socket.once('close', () => resolve())))
    // Upgraded sockets are half-open capable: close our side when the peer closes its own.
    socket.on('end', () => socket.end())
    if (req.url === '/api/deny') {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nSet-Cookie: lk_refresh=evil\r\n\r\n2\r\nno\r\n0\r\n\r\n')
      return
    }
    socket.write([
      'HTTP/1.1 101 Switching Protocols',
      'Upgrade: websocket',
      'Connection: Upgrade, X-Ws-Private',
      'X-Ws-Private: internal',
      'Set-Cookie: lk_refresh=evil; Path=/auth',
      'X-Ws-Kept: yes',
      `Sec-WebSocket-Accept: ${acceptFor(String(req.headers['sec-websocket-key']))}`,
      '', ''
    ].join('\r\n'))
    const onData = (data: Buffer): void => { socket.write(frame(`echo: ${unframe(data)}`, false)) }
    if (head.length > 0) onData(head)
    socket.on('data', onData)
  })
  const up = await listenUpstream(t, server)
  return { url: up.url, handshakes, paths, closed, get requests () { return requests } }
}

interface Handshake {
  readonly socket: net.Socket
  readonly status: number
  readonly head: string
  /** Bytes after the response head (a refusal's body). */
  readonly rest: Buffer
  readonly closed: Promise<void>
}

function handshake (port: number, path: string, headers: Record<string, string>, key = randomBytes(16).toString('base64')): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    const closed = new Promise<void>(resolve => socket.once('close', () => resolve()))
    let buf = Buffer.alloc(0)
    const lines = [`GET ${path} HTTP/1.1`, 'Host: gw', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${key}`]
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`)
    socket.on('connect', () => socket.write(lines.join('\r\n') + '\r\n\r\n'))
    socket.on('error', reject)
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d])
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) return
      socket.off('data', onData)
      const head = buf.subarray(0, end).toString('latin1')
      const rest = buf.subarray(end + 4)
      const collected: Buffer[] = [rest]
      socket.on('data', (more: Buffer) => collected.push(more))
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0)
      if (status === 101) { resolve({ socket, status, head, rest, closed }); return }
      // A refusal: read its body to the close.
      void closed.then(() => resolve({ socket, status, head, rest: Buffer.concat(collected), closed }))
    }
    socket.on('data', onData)
  })
}

function nextMessage (socket: net.Socket): Promise<string> {
  return new Promise(resolve => socket.once('data', (d: Buffer) => resolve(unframe(d))))
}

function headerOf (head: string, name: string): string[] {
  return head.split('\r\n').slice(1).filter(l => l.toLowerCase().startsWith(`${name.toLowerCase()}:`)).map(l => l.slice(name.length + 1).trim())
}

t.test('websocket through a proxy route', async (t) => {
  const upstream = await wsUpstream(t)
  const gw = await proxyGateway(t, { routes: [route(upstream.url), route(upstream.url, { prefix: '/admin/', scopes: ['admin'] })] })
  const token = await gw.token()

  await t.test('with a token: switched, and messages echo both ways', async (t) => {
    const key = randomBytes(16).toString('base64')
    const ws = await handshake(gw.port, '/api/ws?room=1', { Authorization: `Bearer ${token}`, 'X-Forwarded-For': '6.6.6.6', 'X-Request-Id': 'mine' }, key)
    t.equal(ws.status, 101)
    t.same(headerOf(ws.head, 'sec-websocket-accept'), [acceptFor(key)], 'the upstream\'s accept reaches the client')
    t.same(headerOf(ws.head, 'x-ws-kept'), ['yes'])
    t.same(headerOf(ws.head, 'x-ws-private'), [], 'a header the upstream names in Connection is dropped')
    t.same(headerOf(ws.head, 'set-cookie'), [], 'no refresh cookie from upstream')
    t.match(headerOf(ws.head, 'connection')[0] ?? '', /^upgrade$/i)
    const seen = upstream.handshakes.at(-1) ?? {}
    t.equal(upstream.paths.at(-1), '/api/ws?room=1')
    t.equal(seen.authorization, `Bearer ${token}`)
    t.equal(seen['x-forwarded-for'], '127.0.0.1')
    t.not(seen['x-request-id'], 'mine')
    t.match(String(seen['x-request-id']), /^[0-9a-f-]{36}$/)
    const reply = nextMessage(ws.socket)
    ws.socket.write(frame('hello', true))
    t.equal(await reply, 'echo: hello')
    const again = nextMessage(ws.socket)
    ws.socket.write(frame('again', true))
    t.equal(await again, 'echo: again')
    // A client that vanishes takes the upstream connection with it.
    ws.socket.destroy()
    await upstream.closed.at(-1)
    t.pass('the upstream socket closed')
  })

  await t.test('without a token: 401 on the socket, then closed; nothing upstream', async (t) => {
    const before = upstream.handshakes.length
    const ws = await handshake(gw.port, '/api/ws', {})
    t.equal(ws.status, 401)
    t.same(headerOf(ws.head, 'www-authenticate'), ['Bearer realm="latchkey"'])
    t.same(JSON.parse(ws.rest.toString()), { error: 'unauthorized', error_description: 'An access token is required.' })
    await ws.closed
    t.equal(upstream.handshakes.length, before)
  })

  await t.test('a bad token: 401 invalid_token; a missing scope: 403', async (t) => {
    const bad = await handshake(gw.port, '/api/ws', { Authorization: 'Bearer nope' })
    t.equal(bad.status, 401)
    t.same(headerOf(bad.head, 'www-authenticate'), ['Bearer realm="latchkey", error="invalid_token"'])
    const scope = await handshake(gw.port, '/admin/ws', { Authorization: `Bearer ${token}` })
    t.equal(scope.status, 403)
    t.same(headerOf(scope.head, 'www-authenticate'), ['Bearer realm="latchkey", error="insufficient_scope", scope="admin"'])
  })

  await t.test('a path trick on an upgrade: 400', async (t) => {
    const before = upstream.handshakes.length
    const ws = await handshake(gw.port, '/api/%2e%2e/auth/ws', { Authorization: `Bearer ${token}` })
    t.equal(ws.status, 400)
    t.equal(upstream.handshakes.length, before)
  })

  await t.test('an upstream refusal is relayed, hop-by-hop and refresh cookie stripped', async (t) => {
    const ws = await handshake(gw.port, '/api/deny', { Authorization: `Bearer ${token}` })
    t.equal(ws.status, 403)
    t.same(headerOf(ws.head, 'set-cookie'), [])
    t.same(headerOf(ws.head, 'transfer-encoding'), [])
    t.equal(ws.rest.toString(), 'no', 'the body, decoded, read to the close')
  })

  await t.test('upgrades elsewhere are ordinary requests', async (t) => {
    const plain = await handshake(gw.port, '/healthz', {})
    t.equal(plain.status, 200, 'a gateway route ignores Upgrade (RFC 9110 §7.8)')
    t.equal(JSON.parse(plain.rest.toString()).status, 'ok')
    const missing = await handshake(gw.port, '/nowhere', {})
    t.equal(missing.status, 404)
    t.equal((await send(gw.port, { path: '/healthz' })).status, 200)
  })

  await t.test('a POST with Upgrade: websocket and a body is answered at once, not left hanging', async (t) => {
    const before = upstream.requests
    const started = Date.now()
    const raw = await rawExchange(gw.port, `POST /api/ws HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\nhello`, 5000)
    t.equal(statusOf(raw), 400, 'refused: Node hands an upgrade request over without reading its body')
    t.match(raw, /"error":"invalid_request"/)
    t.ok(Date.now() - started < 5000, 'before any timeout')
    t.equal(upstream.requests, before, 'nothing went upstream')
  })

})

t.test('closing the gateway ends open websockets', async (t) => {
  const upstream = await wsUpstream(t)
  const { buildProxyApp } = await import('./harness.js')
  const gw = await buildProxyApp({ routes: [route(upstream.url)] })
  await gw.app.listen({ port: 0, host: '127.0.0.1' })
  const port = (gw.app.server.address() as net.AddressInfo).port
  const ws = await handshake(port, '/api/ws', { Authorization: `Bearer ${await gw.token()}` })
  t.equal(ws.status, 101)
  await gw.app.close()
  await ws.closed
  t.pass('app.close() returned and the socket is closed')
})

t.test('websocket to an upstream that is down: 502 on the socket', async (t) => {
  const port = await closedPort()
  const gw = await proxyGateway(t, { routes: [route(`http://127.0.0.1:${port}`)] })
  const token = await gw.token()
  const ws = await handshake(gw.port, '/api/ws', { Authorization: `Bearer ${token}` })
  t.equal(ws.status, 502)
  t.same(JSON.parse(ws.rest.toString()), { error: 'bad_gateway', error_description: 'The upstream service is unavailable.' })
})
