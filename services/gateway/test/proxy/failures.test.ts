/**
 * Hostile and broken traffic on both sides: malformed framing and oversized headers from
 * clients, refused, silent and garbled upstreams. The gateway answers each with a generic
 * status and keeps serving.
 */
import t from 'tap'
import http from 'node:http'
import { classifyUpstreamError } from '#gateway/proxy/upstream.js'
import {
  closedPort, echoUpstream, listenUpstream, proxyGateway, rawExchange, rawUpstream, route, send, statusOf, upstreamErrorCount
} from './harness.js'

t.test('client-side framing', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await proxyGateway(t, { routes: [route(upstream.url)] })
  const token = await gw.token()
  const auth = `Authorization: Bearer ${token}\r\n`

  await t.test('Content-Length with Transfer-Encoding: 400, nothing upstream', async (t) => {
    const before = upstream.received.length
    const out = await rawExchange(gw.port,
      `POST /api/x HTTP/1.1\r\nHost: gw\r\n${auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n`)
    t.equal(statusOf(out), 400)
    t.equal(upstream.received.length, before)
    t.notOk(upstream.received.some(r => r.url.includes('smuggled')))
  })

  await t.test('two different Content-Lengths: 400', async (t) => {
    const out = await rawExchange(gw.port, `POST /api/x HTTP/1.1\r\nHost: gw\r\n${auth}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde`)
    t.equal(statusOf(out), 400)
  })

  await t.test('32 KB of headers: 431', async (t) => {
    const out = await rawExchange(gw.port, `GET /api/x HTTP/1.1\r\nHost: gw\r\n${auth}X-Big: ${'a'.repeat(32 * 1024)}\r\n\r\n`)
    t.equal(statusOf(out), 431)
  })

  await t.test('a chunked DELETE body stays framed upstream (no second request)', async (t) => {
    const smuggled = 'GET /api/smuggled HTTP/1.1\r\nHost: up\r\n\r\n'
    const chunk = `${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`
    const out = await rawExchange(gw.port, `DELETE /api/thing HTTP/1.1\r\nHost: gw\r\n${auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunk}`)
    t.equal(statusOf(out), 200)
    const seen = upstream.received.at(-1)
    t.equal(seen?.method, 'DELETE')
    t.equal(seen?.bodyBytes, smuggled.length, 'the body arrived as a body')
    // undici sends a body that has fully arrived with its length, one still arriving chunked:
    // framed either way, never unframed.
    const framing = seen?.headers['transfer-encoding'] ?? `content-length: ${seen?.headers['content-length']}`
    t.ok(framing === 'chunked' || framing === `content-length: ${smuggled.length}`, `framed upstream (${framing})`)
    // Give a smuggled request the time to arrive, then make sure it did not.
    await new Promise(resolve => setTimeout(resolve, 100))
    t.notOk(upstream.received.some(r => r.url.includes('smuggled')))
  })

  await t.test('a request with a Trailer header and trailers is proxied without them', async (t) => {
    const out = await rawExchange(gw.port,
      `POST /api/t HTTP/1.1\r\nHost: gw\r\n${auth}Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n`)
    t.equal(statusOf(out), 200)
    const seen = upstream.received.at(-1)
    t.equal(seen?.bodyBytes, 5)
    t.notOk('trailer' in (seen?.headers ?? {}))
    t.equal((await send(gw.port, { path: '/api/after', headers: { authorization: `Bearer ${token}` } })).status, 200, 'still serving')
  })

  await t.test('Expect: 100-continue is answered by the gateway and the body still arrives', async (t) => {
    const net = await import('node:net')
    const out = await new Promise<string>((resolve) => {
      const socket = net.connect(gw.port, '127.0.0.1', () => {
        socket.write(`POST /api/e HTTP/1.1\r\nHost: gw\r\n${auth}Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`)
      })
      let text = ''
      socket.on('data', (d: Buffer) => {
        text += d.toString()
        if (text.startsWith('HTTP/1.1 100') && !text.includes('hello-sent')) { text += 'hello-sent'; socket.write('hello') }
      })
      socket.on('close', () => resolve(text))
    })
    t.match(out, /^HTTP\/1\.1 100 Continue/)
    t.match(out, /HTTP\/1\.1 200 OK/)
    const seen = upstream.received.at(-1)
    t.equal(seen?.url, '/api/e')
    t.equal(seen?.bodyBytes, 5)
    t.notOk('expect' in (seen?.headers ?? {}), 'the expectation was met here, not forwarded')
    t.match(String(seen?.headers['x-request-id']), /^[0-9a-f-]{36}$/, 'gateway headers set on this path too')
  })

  await t.test('a body under an unparseable Content-Type still streams through', async (t) => {
    const res = await send(gw.port, { method: 'POST', path: '/api/b', headers: { authorization: `Bearer ${token}`, 'content-type': 'no slash here' }, body: 'x'.repeat(2 * 1024 * 1024) })
    t.equal(res.status, 200, 'not 415, and not 413: the gateway does not parse proxied bodies')
    t.equal(res.json<{ bodyBytes: number }>().bodyBytes, 2 * 1024 * 1024)
  })
})

t.test('upstream down: 502 with a generic body', async (t) => {
  const port = await closedPort()
  const gw = await proxyGateway(t, { routes: [route(`http://127.0.0.1:${port}`)] })
  const token = await gw.token()
  const res = await send(gw.port, { path: '/api/x', headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 502)
  t.same(res.json(), { error: 'bad_gateway', error_description: 'The upstream service is unavailable.' })
  t.notMatch(res.body, /ECONNREFUSED|127\.0\.0\.1|\d{4,5}/)
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  t.equal(await upstreamErrorCount(gw.metrics, { route: '/api/', kind: 'refused' }), 1)
})

t.test('upstream silent: 504 with a generic body', async (t) => {
  const held: http.ServerResponse[] = []
  const upstream = await listenUpstream(t, http.createServer((req, res) => {
    if (req.url === '/api/fast') { res.end('fast'); return }
    held.push(res)
  }))
  const gw = await proxyGateway(t, { routes: [route(upstream.url)], timeoutMs: 300 })
  const token = await gw.token()
  const headers = { authorization: `Bearer ${token}` }
  t.equal((await send(gw.port, { path: '/api/fast', headers })).body, 'fast')
  // A pooled socket idle past the timeout is not an upstream failure of the next request.
  await new Promise(resolve => setTimeout(resolve, 450))
  const started = Date.now()
  const res = await send(gw.port, { path: '/api/slow', headers })
  t.equal(res.status, 504)
  t.same(res.json(), { error: 'gateway_timeout', error_description: 'The upstream service did not answer in time.' })
  t.notMatch(res.body, /127\.0\.0\.1|ETIMEDOUT|ECONN/)
  t.ok(Date.now() - started < 3000, 'answered at the proxy timeout')
  t.equal(await upstreamErrorCount(gw.metrics, { route: '/api/', kind: 'timeout' }), 1)
  t.equal(await upstreamErrorCount(gw.metrics, { route: '/api/' }), 1, 'and nothing else counted')
  for (const r of held) r.destroy()
})

t.test('upstream stalls mid-body: the client connection is cut, not hung', async (t) => {
  const upstream = await listenUpstream(t, http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': '100' })
    res.write('partial')
  }))
  const gw = await proxyGateway(t, { routes: [route(upstream.url)], timeoutMs: 300 })
  const token = await gw.token()
  const err = await send(gw.port, { path: '/api/x', headers: { authorization: `Bearer ${token}` } }).then(() => undefined, (e: Error) => e)
  t.ok(err, 'the truncated response ends in a connection error, never a complete-looking answer')
})

t.test('garbled upstream answers: 502, and the gateway keeps serving', async (t) => {
  const cases: Array<[string, string]> = [
    ['a space in a header name', 'HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok'],
    ['a NUL in a header value', 'HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\nok'],
    ['a bare CR in a header value', 'HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 2\r\n\r\nok'],
    ['a non-HTTP status line', 'SSH-2.0-OpenSSH_9.6\r\n\r\n'],
    ['a status code out of range', 'HTTP/1.1 1000 Huge\r\nContent-Length: 2\r\n\r\nok'],
    ['a status code Node will not write', 'HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok'],
    ['a 101 to a plain request', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n'],
    ['two Content-Lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok'],
    ['Content-Length with Transfer-Encoding', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n']
  ]
  for (const [what, bytes] of cases) {
    const upstream = await rawUpstream(t, bytes)
    const gw = await proxyGateway(t, { routes: [route(upstream.url)] })
    const token = await gw.token()
    const res = await send(gw.port, { path: '/api/x', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.status, 502, what)
    t.same(res.json(), { error: 'bad_gateway', error_description: 'The upstream service is unavailable.' }, what)
    t.equal((await send(gw.port, { path: '/healthz' })).status, 200, `${what}: still up`)
  }
})

t.test('an interim 103 Early Hints answer is not relayed; the final answer is', async (t) => {
  const upstream = await rawUpstream(t, 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
  const gw = await proxyGateway(t, { routes: [route(upstream.url)] })
  const token = await gw.token()
  const res = await send(gw.port, { path: '/api/x', headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 200)
  t.equal(res.body, 'ok')
  t.notOk('link' in res.headers, 'the hint\'s headers stay with the hint')
})

t.test('classifyUpstreamError sorts by code', async (t) => {
  const e = (code: string): Error => Object.assign(new Error('x'), { code })
  t.equal(classifyUpstreamError(e('ECONNREFUSED')), 'refused')
  t.equal(classifyUpstreamError(e('ENOTFOUND')), 'unreachable')
  t.equal(classifyUpstreamError(e('ECONNRESET')), 'reset')
  t.equal(classifyUpstreamError(e('HPE_INVALID_HEADER_TOKEN')), 'bad_response')
  t.equal(classifyUpstreamError(e('UND_ERR_HEADERS_TIMEOUT')), 'timeout')
  t.equal(classifyUpstreamError(e('UND_ERR_BODY_TIMEOUT')), 'timeout')
  t.equal(classifyUpstreamError(e('UND_ERR_SOCKET')), 'reset')
  t.equal(classifyUpstreamError(e('UND_ERR_CONNECT_TIMEOUT')), 'unreachable')
  t.equal(classifyUpstreamError(new Error('no code')), 'other')
})
