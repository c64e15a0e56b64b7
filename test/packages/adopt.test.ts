/**
 * The installable packages, used the way an adopter would: `npm pack` each workspace
 * package, `npm install` the tarballs (with fastify) into a scratch project OUTSIDE this
 * repository, then a scratch Fastify service verifies real tokens with
 * `@latchkey/verify/fastify` and a scratch Node script signs in, refreshes and signs out
 * against a running `latchkey dev` with `@latchkey/session-client`, and checks tokens with
 * the framework-agnostic `@latchkey/verify`. Nothing in the scratch project can reach the
 * repository's sources: only what the tarballs hold.
 */
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ROOT, latchkey } from '../helpers/processes.js'
import { freePort } from '../helpers/redis.js'

const run = promisify(execFile)

/** What the README's "three lines" promise, as a file an adopter would write. */
const SERVICE = `
import Fastify from 'fastify'
import { accessTokenPlugin } from '@latchkey/verify/fastify'

const app = Fastify()
await app.register(accessTokenPlugin, { jwksUrl: process.env.JWKS_URL, issuer: process.env.ISSUER, audience: 'latchkey-api' })
app.get('/hello', { onRequest: app.requireToken(['notes:read']) }, async (req) => ({ hello: req.accessToken.claims.preferred_username, sub: req.accessToken.sub, sid: req.accessToken.sid }))
app.get('/admin', { onRequest: app.requireToken(['latchkey:admin']) }, async () => ({ ok: true }))
await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write('listening ' + app.server.address().port + '\\n')
`

/** A Node program using the session client (Node has no cookie jar: the README says to bring one). */
const CLIENT = `
import { SessionClient, isLatchkeyError } from '@latchkey/session-client'
import { AccessTokenVerifier } from '@latchkey/verify'

const { GATEWAY, SERVICE, PASSWORD, ISSUER } = process.env
const jar = new Map()
async function cookieFetch (input, init = {}) {
  const url = new URL(input instanceof Request ? input.url : String(input))
  const headers = new Headers(init.headers)
  if (url.pathname.startsWith('/auth/') && jar.size > 0) headers.set('cookie', [...jar].map(([k, v]) => k + '=' + v).join('; '))
  const res = await fetch(input, { ...init, headers })
  for (const line of res.headers.getSetCookie()) {
    const [pair] = line.split(';')
    const name = pair.slice(0, pair.indexOf('='))
    const value = pair.slice(pair.indexOf('=') + 1)
    if (value === '' || /max-age=0/i.test(line)) jar.delete(name)
    else jar.set(name, value)
  }
  return res
}

const out = {}
const session = new SessionClient({ baseUrl: GATEWAY, fetch: cookieFetch, autoRefresh: false })
const signedOut = []
session.on('signed-out', ({ reason }) => signedOut.push(reason))
await session.login('demo', PASSWORD)
out.me = await (await session.fetch('/api/me')).json()
const first = await session.getAccessToken()

const verifier = new AccessTokenVerifier({ jwksUrl: GATEWAY + '/.well-known/jwks.json', issuer: ISSUER, audience: 'latchkey-api' })
const verified = await verifier.verifyAuthorization('Bearer ' + first)
out.verified = { sub: verified.sub, sid: verified.sid, kind: verified.kind, scopes: [...verified.scopes] }
try {
  await verifier.verifyAuthorization('Bearer ' + first.slice(0, -4) + (first.endsWith('AAAA') ? 'BBBB' : 'AAAA'))
  out.tampered = 'accepted'
} catch (err) {
  out.tampered = isLatchkeyError(err) ? { status: err.statusCode, challenge: err.headers['www-authenticate'] } : String(err)
}

const hello = await fetch(SERVICE + '/hello', { headers: { authorization: 'Bearer ' + first } })
out.hello = { status: hello.status, body: await hello.json() }
const admin = await fetch(SERVICE + '/admin', { headers: { authorization: 'Bearer ' + first } })
out.admin = { status: admin.status, challenge: admin.headers.get('www-authenticate') }
const anonymous = await fetch(SERVICE + '/hello')
out.anonymous = anonymous.status

await session.refresh()
const second = await session.getAccessToken()
out.refreshed = { changed: second !== first, sameSession: session.sessionId === out.me.sid, count: session.refreshCount }
const again = await fetch(SERVICE + '/hello', { headers: { authorization: 'Bearer ' + second } })
out.helloAfterRefresh = again.status

await session.logout()
out.signedOut = signedOut
out.resumeAfterLogout = await session.resume()
out.gatewayAfterLogout = (await fetch(GATEWAY + '/api/me', { headers: { authorization: 'Bearer ' + second } })).status
process.stdout.write(JSON.stringify(out) + '\\n')
`

t.test('@latchkey/verify and @latchkey/session-client, packed and installed outside the repository', async (t) => {
  const scratch = mkdtempSync(join(tmpdir(), 'lk-adopter-'))
  t.teardown(() => { rmSync(scratch, { recursive: true, force: true }) })

  // The gateway starts while the packages are packed and installed.
  const port = await freePort()
  const gateway = `http://127.0.0.1:${port}`
  const issuer = `http://localhost:${port}`
  const dev = latchkey(t, ['dev'], { PORT: String(port), RESOURCE_PORT: String(await freePort()), ISSUER: issuer })
  const devReady = dev.waitFor(/Demo user: demo \/ (\S+)/, 60_000)
  devReady.catch(() => {})

  // Each package's prepack builds it from shared/src (scripts/build-packages.mjs).
  const packed = JSON.parse((await run('npm', ['pack', '--json', '--pack-destination', scratch, '-w', '@latchkey/verify', '-w', '@latchkey/session-client'], { cwd: ROOT })).stdout) as Array<{ name: string, filename: string, files: Array<{ path: string }> }>
  const tarball = (name: string): string => {
    const entry = packed.find(p => p.name === name)
    if (entry === undefined) throw new Error(`npm pack made no ${name}`)
    t.ok(entry.files.every(f => f.path === 'package.json' || f.path.startsWith('dist/')), `${name}: the tarball holds package.json and dist/ only`)
    t.ok(entry.files.some(f => f.path.endsWith('.d.ts')), `${name}: typed`)
    return join(scratch, entry.filename)
  }
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({
    name: 'scratch-adopter',
    private: true,
    type: 'module',
    dependencies: {
      '@latchkey/verify': `file:${tarball('@latchkey/verify')}`,
      '@latchkey/session-client': `file:${tarball('@latchkey/session-client')}`,
      fastify: '5.12.8'
    },
    // As in this repository: the newest light-my-request needs Node 22.
    overrides: { 'light-my-request': '6.6.0' }
  }))
  writeFileSync(join(scratch, 'service.mjs'), SERVICE)
  writeFileSync(join(scratch, 'client.mjs'), CLIENT)
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: scratch })

  const password = (await devReady)[1] ?? ''

  const svc = spawn(process.execPath, ['service.mjs'], { cwd: scratch, env: { PATH: process.env.PATH ?? '', JWKS_URL: `${gateway}/.well-known/jwks.json`, ISSUER: issuer }, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { svc.kill('SIGKILL') })
  const servicePort = await new Promise<string>((resolve, reject) => {
    let text = ''
    svc.stdout.on('data', (d: Buffer) => { text += d.toString(); const m = /listening (\d+)/.exec(text); if (m?.[1] !== undefined) resolve(m[1]) })
    svc.once('exit', (code) => { reject(new Error(`scratch service exited ${String(code)}`)) })
  })

  const { stdout } = await run(process.execPath, ['client.mjs'], {
    cwd: scratch,
    env: { PATH: process.env.PATH ?? '', GATEWAY: gateway, SERVICE: `http://127.0.0.1:${servicePort}`, PASSWORD: password, ISSUER: issuer }
  })
  const out = JSON.parse(stdout) as Record<string, unknown>
  t.match(out.me, { sub: /^usr_/, preferred_username: 'demo' }, 'the session client signs in and calls the API through the gateway')
  t.match(out.verified, { kind: 'user', sid: (out.me as { sid: string }).sid }, 'the framework-agnostic verifier accepts the real token')
  t.match(out.tampered, { status: 401, challenge: /error="invalid_token"/ }, 'and refuses a tampered one with the RFC 6750 challenge')
  t.match(out.hello, { status: 200, body: { hello: 'demo', sid: (out.me as { sid: string }).sid } }, 'the scratch Fastify service verifies it with the plugin')
  t.match(out.admin, { status: 403, challenge: /error="insufficient_scope"/ }, 'a missing scope is 403')
  t.equal(out.anonymous, 401, 'no token is 401')
  t.same(out.refreshed, { changed: true, sameSession: true, count: 1 }, 'a refresh rotates to a new token in the same session')
  t.equal(out.helloAfterRefresh, 200, 'the refreshed token verifies too')
  t.same(out.signedOut, ['logout'], 'logout fires signed-out')
  t.equal(out.resumeAfterLogout, false, 'the session cannot be resumed')
  t.equal(out.gatewayAfterLogout, 401, 'and the gateway refuses its tokens at the edge')
  await dev.stop()
})
