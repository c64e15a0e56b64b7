/**
 * Path normalisation: unit cases for the policy in path.ts, then the tricks sent as raw
 * bytes through a listening gateway — none may reach anything outside its prefix.
 */
import t from 'tap'
import { normalisePath, normalisePathFully, routeFor } from '#gateway/proxy/path.js'
import { echoUpstream, proxyGateway, rawExchange, route, statusOf } from './harness.js'

t.test('the already-normal shortcut agrees with the full algorithm', async (t) => {
  // Pieces chosen to hit every rule's edge: dots, empty segments, params, triplets, bad bytes.
  const pieces = ['/', 'a', '.', '..', '.a', 'a.', ';', ';x', '%2e', '%2E', '%41', '%2f', '%25', '%', '~', '-', '@', ':', '\\', 'é', ' ', '#']
  let seed = 42
  const next = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n }
  let shortcut = 0
  for (let i = 0; i < 20_000; i++) {
    let raw = '/'
    for (let k = next(7); k > 0; k--) raw += pieces[next(pieces.length)]
    const fast = normalisePath(raw)
    const full = normalisePathFully(raw)
    if (fast.ok && full.ok && fast.path === raw) shortcut++
    if (JSON.stringify(fast) !== JSON.stringify(full)) {
      t.fail(`${raw}: ${JSON.stringify(fast)} vs ${JSON.stringify(full)}`)
      return
    }
  }
  t.ok(shortcut > 1000, `20,000 random paths agree (${shortcut} already normal)`)
  for (const raw of ['/api/me', '/api/', '/', '/api/a.b/c-d_e~f', "/api/!$&'()*+,=:@"]) t.same(normalisePath(raw), { ok: true, path: raw }, raw)
})

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

t.test('routeFor matches whole segments without ;params, and a prefix without its slash', async (t) => {
  const routes = [{ prefix: '/echo/' }, { prefix: '/echo/admin/' }]
  t.equal(routeFor(routes, '/echo/admin;x/secret'), routes[1])
  t.equal(routeFor(routes, '/echo;v=1/admin;x=2/secret'), routes[1])
  t.equal(routeFor(routes, '/echo/admin'), routes[1])
  t.equal(routeFor(routes, '/echo/admin;x'), routes[1])
  t.equal(routeFor(routes, '/echo'), routes[0])
  t.equal(routeFor(routes, '/echo/adminx'), routes[0], 'a longer segment is another segment')
  t.equal(routeFor(routes, '/ech'), undefined)
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

  // Nested routes (issue 13 #8): the child's scope cannot be skipped by spelling its path.
  for (const path of ['/api/admin;x/secret', '/api/admin', '/api/admin?x=1', '/api;v=1/admin/secret', '/api/admin;/secret']) {
    const before = upstream.received.length
    const { status } = await get(path)
    t.equal(status, 403, `${path}: the admin route's scope is required`)
    t.equal(upstream.received.length, before, `${path} reached no upstream`)
  }

  for (const [path, forwarded] of [['/api/./x', '/api/x'], ['/api/a/../b?q=../..', '/api/b?q=../..'], ['/api/%2e/y', '/api/y'], ['/api//x', '/api/x'], ['/api/%7Ex', '/api/~x']]) {
    const { status, raw } = await get(path as string)
    t.equal(status, 200, `${path as string} is proxied`)
    t.match(raw, `"url":"${forwarded as string}"`, `${path as string} goes upstream as ${forwarded as string}`)
  }
  t.same(gw.ownRouteHits, [])
})
