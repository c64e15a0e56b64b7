/**
 * Forward-auth (/auth/verify) behind real ingress software: Debian's nginx (`auth_request`,
 * with and without its decision cache) and Caddy (`forward_auth`), each started on free
 * ports in front of an echo upstream, with two gateway replicas sharing Redis (a logout at
 * one must bite through the other). Traefik- and Envoy-style header sets over plain HTTP.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { redisForTest, freePort } from '../helpers/redis.js'
import { buildTestGateway, login, type TestGateway } from '../../services/gateway/test/helpers/gateway.js'
import { echoUpstream, send, type Answer } from '../../services/gateway/test/proxy/harness.js'

const has = (cmd: string): boolean => spawnSync(cmd, ['version'], { stdio: 'ignore' }).error === undefined
const redis = await redisForTest(t)
const dir = mkdtempSync(join(tmpdir(), 'lk-ingress-'))
t.teardown(() => { if (process.env.KEEP_INGRESS_DIR === undefined) rmSync(dir, { recursive: true, force: true }) })
const upstream = await echoUpstream(t)

// Routes: /api/ open to any valid token; /api/admin/ needs `admin`; /ops/ exists for forward-auth only.
const routesFile = join(dir, 'routes.json')
writeFileSync(routesFile, JSON.stringify([
  { prefix: '/api/', upstream: upstream.url, scopes: [] },
  { prefix: '/api/admin/', upstream: upstream.url, scopes: ['admin'] },
  { prefix: '/ops/', scopes: ['notes:read'] }
]))
const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, ROUTES_FILE: routesFile, ACCESS_TOKEN_TTL: '60' }

async function listening (gw: TestGateway): Promise<number> {
  await gw.app.listen({ port: 0, host: '127.0.0.1' })
  return (gw.app.server.address() as AddressInfo).port
}
const a = await buildTestGateway(t, env)
const b = await buildTestGateway(t, env)
const gwPort = await listening(a)

function start (t: Test, cmd: string, args: string[], envExtra: Record<string, string> = {}): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...envExtra } })
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
  child.on('exit', (code) => { if (code !== 0 && code !== null) t.comment(`${cmd} exited ${code}: ${stderr.slice(-500)}`) })
  t.teardown(() => { child.kill('SIGTERM') })
  return child
}

async function until (port: number): Promise<void> {
  const deadline = Date.now() + 10_000
  for (;;) {
    try { await send(port, { path: '/healthz-probe' }); return } catch (err) { if (Date.now() > deadline) throw err }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

interface Ingress { readonly port: number, readonly cached: boolean }

/** The checks every ingress must pass; `cached`: a revocation may take one more whole second. */
async function ingressChecks (t: Test, ingress: Ingress): Promise<void> {
  const alice = await login(a.app)
  const bearer = { authorization: `Bearer ${alice.body.access_token as string}` }

  const ok = await send(ingress.port, { path: '/api/notes?x=1', headers: bearer })
  t.equal(ok.status, 200, 'a valid token passes')
  const seen = upstream.received.at(-1)
  t.equal(seen?.url, '/api/notes?x=1')
  t.equal(seen?.headers['x-auth-request-user'], (await whoami(bearer)).sub, 'identity headers reach the upstream')
  t.equal(seen?.headers['x-auth-request-scope'], 'notes:read notes:write')
  t.equal(seen?.headers['x-auth-request-client-id'], 'latchkey-browser')
  t.match(seen?.headers['x-auth-request-sid'], /.+/)

  const before = upstream.received.length
  const none = await send(ingress.port, { path: '/api/notes' })
  t.equal(none.status, 401, 'no token: 401')
  t.equal(none.headers['www-authenticate'], 'Bearer realm="latchkey"', 'with the RFC 6750 challenge')
  const scope = await send(ingress.port, { path: '/api/admin/users', headers: bearer })
  t.equal(scope.status, 403, 'missing scope: 403')
  for (const path of ['/api/../internal/stats', '/api/%2e%2e/internal/stats']) {
    const trick = await send(ingress.port, { path, headers: bearer })
    t.ok(trick.status === 403 || trick.status === 400, `${path} refused (${trick.status})`)
  }
  t.equal(upstream.received.length, before, 'nothing refused reached the upstream')

  if (ingress.cached) {
    const asked = (): number => a.logs.filter(l => l.msg === 'incoming request' && String((l.req as { url?: string }).url).startsWith('/auth/verify')).length
    const before = asked()
    for (let i = 0; i < 5; i++) t.equal((await send(ingress.port, { path: '/api/cached', headers: bearer })).status, 200)
    t.ok(asked() - before < 5, `the decision cache answered some (${asked() - before} of 5 asked latchkey)`)
  }

  // Revoked at the other replica: refused here within the promise (1 s; 2 s with nginx's whole-second cache).
  t.equal((await send(ingress.port, { path: '/api/notes', headers: bearer })).status, 200)
  const out = await b.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: `lk_refresh=${String(alice.refresh)}` } })
  t.equal(out.statusCode, 204)
  const revokedAt = Date.now()
  let last: Answer | undefined
  while (Date.now() - revokedAt < 3000) {
    last = await send(ingress.port, { path: '/api/notes', headers: bearer })
    if (last.status === 401) break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const took = Date.now() - revokedAt
  t.equal(last?.status, 401, 'the revoked session is refused')
  t.ok(took <= (ingress.cached ? 2000 : 1000) + 250, `within the promise (${took} ms)`)
}

async function whoami (headers: Record<string, string>): Promise<{ sub: string }> {
  const payload = (headers.authorization as string).split('.')[1] as string
  return JSON.parse(Buffer.from(payload, 'base64url').toString()) as { sub: string }
}

/** nginx's main context around a server block (one process: no switch to a user that could not read the temp dir). */
function nginxMain (work: string, server: string): string {
  return `
worker_processes 1;
daemon off;
master_process off;
pid ${work}/nginx.pid;
error_log ${work}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${work}/body;
  proxy_temp_path ${work}/proxy;
  fastcgi_temp_path ${work}/fastcgi;
  uwsgi_temp_path ${work}/uwsgi;
  scgi_temp_path ${work}/scgi;
  ${server}
}
`
}

/** The smallest auth_request setup: nginx's X-Original-* only, no cache. */
function minimalServer (port: number): string {
  return `
  server {
    listen 127.0.0.1:${port};
    location / {
      auth_request /_latchkey_verify;
      auth_request_set $lk_user $upstream_http_x_auth_request_user;
      auth_request_set $lk_scope $upstream_http_x_auth_request_scope;
      auth_request_set $lk_client $upstream_http_x_auth_request_client_id;
      auth_request_set $lk_sid $upstream_http_x_auth_request_sid;
      proxy_set_header X-Auth-Request-User $lk_user;
      proxy_set_header X-Auth-Request-Scope $lk_scope;
      proxy_set_header X-Auth-Request-Client-Id $lk_client;
      proxy_set_header X-Auth-Request-Sid $lk_sid;
      proxy_pass ${upstream.url};
    }
    location = /_latchkey_verify {
      internal;
      proxy_pass http://127.0.0.1:${gwPort}/auth/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }
  }`
}

/** compose/ingress-nginx.conf as shipped (decision cache on), pointed at this test's processes. */
function shippedServer (port: number, work: string): string {
  return readFileSync(new URL('../../compose/ingress-nginx.conf', import.meta.url), 'utf8')
    .replace('listen 8080;', `listen 127.0.0.1:${port};`)
    .replaceAll('http://gateway:8080', `http://127.0.0.1:${gwPort}`)
    .replaceAll('http://resource:8081', upstream.url)
    .replace('/var/cache/nginx/latchkey', join(work, 'cache'))
}

t.test('nginx auth_request', { skip: has('nginx') ? false : 'nginx is not installed (Debian: nginx-light)' }, async (t) => {
  for (const shipped of [false, true]) {
    await t.test(shipped ? 'the shipped compose/ingress-nginx.conf, decision cache on' : 'a minimal X-Original-URI config, no cache', async (t) => {
      const work = join(dir, `nginx-${String(shipped)}`)
      mkdirSync(work, { recursive: true })
      const port = await freePort()
      writeFileSync(join(work, 'nginx.conf'), nginxMain(work, shipped ? shippedServer(port, work) : minimalServer(port)))
      start(t, 'nginx', ['-p', work, '-c', join(work, 'nginx.conf'), '-e', join(work, 'error.log')])
      await until(port)
      await ingressChecks(t, { port, cached: shipped })
    })
  }
})

t.test('Caddy forward_auth', { skip: has('caddy') ? false : 'caddy is not installed (Debian: caddy)' }, async (t) => {
  const work = join(dir, 'caddy')
  mkdirSync(work, { recursive: true })
  const port = await freePort()
  writeFileSync(join(work, 'Caddyfile'), `{
  admin off
  auto_https off
}
http://127.0.0.1:${port} {
  handle {
    forward_auth 127.0.0.1:${gwPort} {
      uri /auth/verify
      copy_headers X-Auth-Request-User X-Auth-Request-Scope X-Auth-Request-Client-Id X-Auth-Request-Sid
    }
    reverse_proxy ${upstream.url.replace('http://', '')}
  }
}
`)
  start(t, 'caddy', ['run', '--config', join(work, 'Caddyfile'), '--adapter', 'caddyfile'], { HOME: work, XDG_DATA_HOME: work, XDG_CONFIG_HOME: work })
  await until(port)
  await ingressChecks(t, { port, cached: false })
})

t.test('Traefik- and Envoy-style requests, plain HTTP', async (t) => {
  const alice = await login(a.app)
  const token = alice.body.access_token as string
  const verify = (url: string, headers: Record<string, string>, method: 'GET' | 'POST' = 'GET') => a.app.inject({ method, url, headers })

  const traefik = await verify('/auth/verify', { authorization: `Bearer ${token}`, 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/ops/deploy', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example' })
  t.equal(traefik.statusCode, 200, 'Traefik: a forward-auth-only route (no upstream) admits')
  t.equal(traefik.headers['x-auth-request-scope'], 'notes:read notes:write')
  t.equal(traefik.headers['cache-control'], 'max-age=1, must-revalidate', 'cacheable (by a shared cache too) for at most the revocation promise')

  const envoy = await verify('/auth/verify/api/admin/x?y=1', { authorization: `Bearer ${token}` }, 'POST')
  t.equal(envoy.statusCode, 403, 'Envoy (path suffix, original method): the admin route wants a scope')
  t.match(envoy.headers['www-authenticate'], /error="insufficient_scope", scope="admin"/)
  t.equal(envoy.headers['cache-control'], 'no-store')
  t.equal((await verify('/auth/verify/api/notes', { authorization: `Bearer ${token}` }, 'POST')).statusCode, 200, 'Envoy: an open route admits')

  t.equal((await verify('/auth/verify', { authorization: `Bearer ${token}`, 'x-forwarded-uri': '/nowhere/x' })).statusCode, 403, 'no route: 403 (nginx would make a 500 of a 404)')
  t.equal((await verify('/auth/verify', { authorization: `Bearer ${token}` })).statusCode, 403, 'no original URI at all: 403')
  const ambiguous = await verify('/auth/verify', { authorization: `Bearer ${token}`, 'x-forwarded-uri': '/api/admin/x', 'x-original-uri': '/api/notes' })
  t.equal(ambiguous.statusCode, 403, 'two sources that disagree: 403, whichever a proxy set')
  const agreeing = await verify('/auth/verify', { authorization: `Bearer ${token}`, 'x-forwarded-uri': '/api/notes', 'x-original-uri': '/api/notes' })
  t.equal(agreeing.statusCode, 200, 'sources that agree (the shipped nginx config sets both)')
  const expired = await verify('/auth/verify', { authorization: 'Bearer x.y.z', 'x-forwarded-uri': '/api/notes' })
  t.equal(expired.statusCode, 401)
  t.equal(expired.headers['www-authenticate'], 'Bearer realm="latchkey", error="invalid_token"')
})

t.test('TRUSTED_PROXIES set: only those peers may ask', async (t) => {
  const gw = await buildTestGateway(t, { ...env, TRUSTED_PROXIES: '10.0.0.0/8' })
  const alice = await login(gw.app)
  const headers = { authorization: `Bearer ${alice.body.access_token as string}`, 'x-forwarded-uri': '/api/notes' }
  t.equal((await gw.app.inject({ method: 'GET', url: '/auth/verify', headers, remoteAddress: '10.0.0.7' })).statusCode, 200)
  t.equal((await gw.app.inject({ method: 'GET', url: '/auth/verify', headers, remoteAddress: '192.0.2.1' })).statusCode, 403)
})
