/**
 * Forward-auth (/auth/verify) behind real ingress software: Debian's nginx (`auth_request`,
 * with and without its decision cache) and Caddy (`forward_auth`), each started on free
 * ports in front of an echo upstream, with two gateway replicas sharing Redis (a logout at
 * one must bite through the other). Traefik- and Envoy-style header sets over plain HTTP.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
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
  for (const path of ['/api/../auth/sessions', '/api/%2e%2e/auth/sessions']) {
    const trick = await send(ingress.port, { path, headers: bearer })
    t.ok(trick.status === 403 || trick.status === 400, `${path} refused (${trick.status})`)
  }
  t.equal(upstream.received.length, before, 'nothing refused reached the upstream')

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

function nginxConf (port: number, cache: boolean, work: string): string {
  return `
worker_processes 1;
daemon off;
# One process: no worker switching to another user (which could not read this temp dir).
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
  ${cache ? `proxy_cache_path ${work}/cache keys_zone=latchkey_auth:1m;` : ''}
  server {
    listen 127.0.0.1:${port};
    location = /healthz-probe { return 204; }
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
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      ${cache ? 'proxy_cache latchkey_auth; proxy_cache_key "$request_method $request_uri $http_authorization";' : ''}
    }
  }
}
`
}

t.test('nginx auth_request', { skip: has('nginx') ? false : 'nginx is not installed (Debian: nginx-light)' }, async (t) => {
  for (const cache of [false, true]) {
    await t.test(cache ? 'with the 1 s decision cache' : 'without a cache', async (t) => {
      const work = join(dir, `nginx-${String(cache)}`)
      mkdirSync(work, { recursive: true })
      const port = await freePort()
      writeFileSync(join(work, 'nginx.conf'), nginxConf(port, cache, work))
      start(t, 'nginx', ['-p', work, '-c', join(work, 'nginx.conf'), '-e', join(work, 'error.log')])
      await until(port)
      await ingressChecks(t, { port, cached: cache })
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
  handle /healthz-probe {
    respond 204
  }
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
  t.match(traefik.headers['cache-control'], /^private, max-age=1$/, 'cacheable for at most the revocation promise')

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
