/**
 * What crosses the proxy: the echo upstream shows exactly which headers arrive, and a raw
 * upstream shows which of its headers reach the client.
 */
import t from 'tap'
import { withoutRefreshCookie } from '#gateway/proxy/headers.js'
import { echoUpstream, proxyGateway, rawExchange, rawUpstream, route, send, statusOf } from './harness.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

t.test('request headers', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await proxyGateway(t, { routes: [route(upstream.url)] })
  const token = await gw.token()
  const authorization = `Bearer ${token}`

  await t.test('Authorization is forwarded; X-Request-Id and X-Forwarded-* are the gateway\'s', async (t) => {
    const res = await send(gw.port, {
      path: '/api/who',
      headers: {
        authorization,
        host: 'public.example:8443',
        'x-request-id': 'client-chosen-id',
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'evil.example',
        'x-forwarded-port': '443',
        'x-forwarded-prefix': '/admin',
        forwarded: 'for=6.6.6.6;proto=https',
        'x-real-ip': '6.6.6.6',
        'true-client-ip': '6.6.6.6',
        'x-original-url': '/auth/login',
        'x-rewrite-url': '/auth/login',
        'x-latchkey-user': 'admin',
        'x-latchkey-scopes': 'everything',
        'x-custom': 'kept',
        accept: 'application/json'
      }
    })
    t.equal(res.status, 200)
    const { headers } = res.json<{ headers: Record<string, string> }>()
    t.equal(headers.authorization, authorization, 'the bearer token goes upstream unchanged')
    t.match(headers['x-request-id'], UUID)
    t.not(headers['x-request-id'], 'client-chosen-id')
    t.equal(headers['x-forwarded-for'], '127.0.0.1', 'the peer address, not the claimed one')
    t.equal(headers['x-forwarded-proto'], 'http')
    t.equal(headers['x-forwarded-host'], 'public.example:8443', 'the Host the client asked for')
    t.equal(headers.host, `127.0.0.1:${upstream.port}`, 'Host is the upstream\'s own')
    for (const spoofed of ['x-forwarded-port', 'x-forwarded-prefix', 'forwarded', 'x-real-ip', 'true-client-ip', 'x-original-url', 'x-rewrite-url', 'x-latchkey-user', 'x-latchkey-scopes']) {
      t.notOk(spoofed in headers, `${spoofed} never reaches the upstream`)
    }
    t.equal(headers['x-custom'], 'kept', 'end-to-end headers pass')
    t.equal(headers.accept, 'application/json')
    // Each gateway-set header exactly once, not appended to a client value.
    const raw = upstream.received.at(-1)?.rawHeaders ?? []
    for (const name of ['x-request-id', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'host']) {
      t.equal(raw.filter((h, i) => i % 2 === 0 && h.toLowerCase() === name).length, 1, `one ${name}`)
    }
  })

  await t.test('header names with an underscore are dropped (CGI/WSGI/PHP read them as the hyphenated ones), as nginx does', async (t) => {
    for (const path of ['/api/underscore', '/api/underscore']) { // the gate, then the fast lane
      const res = await send(gw.port, { path, headers: { authorization, X_Forwarded_For: '6.6.6.6', X_Real_IP: '6.6.6.6', X_Latchkey_User: 'admin', x_custom: 'x', 'x-custom': 'kept' } })
      t.equal(res.status, 200)
      const seen = upstream.received.at(-1)?.headers ?? {}
      t.same(Object.keys(seen).filter(n => n.includes('_')), [], 'no underscore name upstream')
      t.equal(seen['x-custom'], 'kept')
      t.equal(seen['x-forwarded-for'], '127.0.0.1')
    }
  })

  await t.test('Connection: x-request-id cannot strip what the gateway sets', async (t) => {
    const res = await send(gw.port, {
      path: '/api/who',
      headers: { authorization, connection: 'keep-alive, x-request-id, x-forwarded-for, X-Forwarded-Proto, x-forwarded-host, host, x-dropme', 'x-dropme': 'named in Connection' }
    })
    t.equal(res.status, 200)
    const { headers } = res.json<{ headers: Record<string, string> }>()
    t.match(headers['x-request-id'], UUID)
    t.equal(headers['x-forwarded-for'], '127.0.0.1')
    t.equal(headers['x-forwarded-proto'], 'http')
    t.ok(headers['x-forwarded-host'])
    t.equal(headers.host, `127.0.0.1:${upstream.port}`)
    t.notOk('x-dropme' in headers, 'a header the client names in Connection is hop-by-hop (RFC 9110 §7.6.1)')
    t.not(headers.connection ?? '', /x-request-id|x-dropme/i, 'the client\'s Connection options do not travel')
  })

  await t.test('hop-by-hop request headers are dropped', async (t) => {
    const raw = [
      'GET /api/hop HTTP/1.1',
      'Host: gw',
      `Authorization: ${authorization}`,
      'Connection: keep-alive, X-Private',
      'Keep-Alive: timeout=99',
      'X-Private: secret',
      'Proxy-Authorization: Basic Zm9vOmJhcg==',
      'Proxy-Connection: keep-alive',
      'TE: trailers',
      'Upgrade: h2c',
      'HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA',
      'X-Kept: yes',
      '', ''
    ].join('\r\n')
    const out = await rawExchange(gw.port, raw, 500)
    t.equal(statusOf(out), 200)
    const seen = upstream.received.at(-1)
    t.equal(seen?.url, '/api/hop')
    const names = (seen?.rawHeaders ?? []).filter((_, i) => i % 2 === 0).map(n => n.toLowerCase())
    for (const hop of ['keep-alive', 'x-private', 'proxy-authorization', 'proxy-connection', 'te', 'upgrade', 'http2-settings']) {
      t.notOk(names.includes(hop), `${hop} dropped`)
    }
    t.ok(names.includes('x-kept'))
  })

  await t.test('the refresh cookie is removed; other cookies pass', async (t) => {
    const some = await send(gw.port, { path: '/api/c', headers: { authorization, cookie: 'theme=dark; lk_refresh=SECRET-REFRESH; lang=en' } })
    t.equal(some.json<{ headers: Record<string, string> }>().headers.cookie, 'theme=dark; lang=en')
    const only = await send(gw.port, { path: '/api/c', headers: { authorization, cookie: 'lk_refresh=SECRET-REFRESH' } })
    t.notOk('cookie' in only.json<{ headers: Record<string, string> }>().headers, 'no Cookie header left')
    const twice = await send(gw.port, { path: '/api/c', headers: { authorization, cookie: ['a=1; LK_REFRESH=x', 'lk_refresh=y; b=2'] } })
    t.equal(twice.json<{ headers: Record<string, string> }>().headers.cookie, 'a=1; b=2')
    t.notOk(JSON.stringify(upstream.received).includes('SECRET-REFRESH'), 'the refresh token never reached the upstream')
  })

  t.test('withoutRefreshCookie', async (t) => {
    t.equal(withoutRefreshCookie('lk_refresh=a'), undefined)
    t.equal(withoutRefreshCookie(' a=1 ;lk_refresh=a;; b=2 '), 'a=1; b=2')
    t.equal(withoutRefreshCookie('lk_refresh_other=1'), 'lk_refresh_other=1', 'only that exact name')
  })
})

t.test('response headers', async (t) => {
  const body = '{"ok":true}'
  const upstream = await rawUpstream(t, [
    'HTTP/1.1 200 OK',
    'Content-Type: application/json',
    `Content-Length: ${body.length}`,
    'Connection: close, X-Upstream-Private',
    'X-Upstream-Private: internal-detail',
    'Keep-Alive: timeout=5',
    'Proxy-Authenticate: Basic realm="upstream"',
    'Proxy-Connection: keep-alive',
    'Trailer: X-Checksum',
    'Upgrade: h2c',
    'Set-Cookie: lk_refresh=attacker-chosen; Path=/auth; HttpOnly',
    'Set-Cookie: theme=dark; Path=/',
    'Set-Cookie: LK_Refresh=; Max-Age=0',
    'X-Kept: yes',
    '',
    body
  ].join('\r\n'))
  const gw = await proxyGateway(t, { routes: [route(upstream.url)] })
  const token = await gw.token()
  const res = await send(gw.port, { path: '/api/x', headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 200)
  t.equal(res.body, body)
  t.equal(res.headers['x-kept'], 'yes')
  t.equal(res.headers['content-type'], 'application/json')
  t.same(res.headers['set-cookie'], ['theme=dark; Path=/'], 'an upstream cannot set or clear the refresh cookie')
  for (const hop of ['x-upstream-private', 'keep-alive', 'proxy-authenticate', 'proxy-connection', 'trailer', 'upgrade']) {
    t.notOk(hop in res.headers, `${hop} never reaches the client`)
  }
  t.not(res.headers.connection ?? '', /x-upstream-private/i)
})
