/**
 * Path normalisation: unit cases for the policy in path.ts, then the tricks sent as raw
 * bytes through a listening gateway — none may reach anything outside its prefix.
 */
import t from 'tap'
import { normalisePath, routeFor } from '#gateway/proxy/path.js'
import { echoUpstream, proxyGateway, rawExchange, route, statusOf } from './harness.js'

t.test('normalisePath', async (t) => {
  const ok: Array<[string, string]> = [
    ['/api/x', '/api/x'],
    ['/api/', '/api/'],
    ['/api/./x', '/api/x'],
    ['/api/a/../b', '/api/b'],
    ['/api/a/..', '/api/'],
    ['/api/.', '/api/'],
    ['/api/%2e%2e/auth/login', '/auth/login'],
    ['/api/%2E%2e/x', '/x'],
    ['/api/.%2e/x', '/x'],
    ['/api//../x', '/x'],
    ['/api//x//y/', '/api/x/y/'],
    ['/../../etc', '/etc'],
    ['/api/%7euser/%41', '/api/~user/A'],
    ['/api/a%20b/%c3%a9', '/api/a%20b/%C3%A9'],
    ['/api/a;b=c/d', '/api/a;b=c/d'],
    ['/api/%25', '/api/%25']
  ]
  for (const [raw, expected] of ok) t.same(normalisePath(raw), { ok: true, path: expected }, raw)
  const refused: Array<[string, string]> = [
    ['/api/..%2fauth', 'encoded_separator'],
    ['/api/%2Fetc', 'encoded_separator'],
    ['/api/%5c..%5cauth', 'encoded_separator'],
    ['/api/\\..\\auth', 'characters'],
    ['/api/%00', 'encoded_control'],
    ['/api/%0d%0a', 'encoded_control'],
    ['/api/%zz', 'characters'],
    ['/api/%', 'characters'],
    ['/api/é', 'characters'],
    ['/api/a#b', 'characters'],
    ['api/x', 'characters'],
    ['/api/..;/auth', 'dot_segment_params'],
    ['/api/.;x/y', 'dot_segment_params'],
    ['/api/%2e%2e;/auth', 'dot_segment_params']
  ]
  for (const [raw, reason] of refused) t.same(normalisePath(raw), { ok: false, reason }, raw)
})

t.test('routeFor picks the longest prefix', async (t) => {
  const routes = [{ prefix: '/api/' }, { prefix: '/api/admin/' }, { prefix: '/b/' }]
  t.equal(routeFor(routes, '/api/admin/x'), routes[1])
  t.equal(routeFor(routes, '/api/adminx'), routes[0])
  t.equal(routeFor(routes, '/auth/login'), undefined)
})

t.test('path tricks through the gateway', async (t) => {
  const upstream = await echoUpstream(t)
  const gw = await proxyGateway(t, {
    routes: [route(upstream.url), route(upstream.url, { prefix: '/api/admin/', scopes: ['admin'] })]
  })
  const token = await gw.token({ scope: 'notes:read' })

  async function get (path: string): Promise<{ status: number, raw: string }> {
    const raw = await rawExchange(gw.port, `GET ${path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`)
    return { status: statusOf(raw), raw }
  }

  const escapes = [
    '/api/../auth/login',
    '/api/%2e%2e/auth/login',
    '/api/%2E%2E/.well-known/jwks.json',
    '/api/..%2fauth',
    '/api/..%2Fauth/login',
    '/api//../x',
    '/api/%2fetc',
    '/api/..%5cauth',
    '/api/..\\auth/login',
    '/api/..;/auth/login',
    '/api/a/../../auth/login',
    '/api/./../.well-known/openid-configuration',
    '/api/x/../admin/secret',
    '/api/%00/x'
  ]
  for (const path of escapes) {
    const before = upstream.received.length
    const { status, raw } = await get(path)
    t.equal(status, 400, `${path} refused`)
    t.match(raw, /"error":"invalid_request"/, `${path}: a JSON error`)
    t.equal(upstream.received.length, before, `${path} reached no upstream`)
  }
  t.same(gw.ownRouteHits, [], '/auth/* and /.well-known/* were never reached through a prefix')

  for (const [path, forwarded] of [['/api/./x', '/api/x'], ['/api/a/../b?q=../..', '/api/b?q=../..'], ['/api/%2e/y', '/api/y'], ['/api//x', '/api/x'], ['/api/%7Ex', '/api/~x']]) {
    const { status, raw } = await get(path as string)
    t.equal(status, 200, `${path as string} is proxied`)
    t.match(raw, `"url":"${forwarded as string}"`, `${path as string} goes upstream as ${forwarded as string}`)
  }
  t.same(gw.ownRouteHits, [])
})
