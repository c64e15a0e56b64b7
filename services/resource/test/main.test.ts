/**
 * The resource as a real listening server: raw HTTP edge cases the in-process tests cannot
 * show, the service-to-service path (ServiceTokenSource → /internal/stats), and shutdown hooks.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { type AddressInfo, connect } from 'node:net'
import t from 'tap'
import { ServiceTokenSource } from '#shared/service-token-source.js'
import { TestIssuer } from '../../../shared/test/helpers/test-issuer.js'
import { loadResourceConfig } from '../src/config.js'
import { startResource } from '../src/main.js'

const issuer = await TestIssuer.start()
t.teardown(() => issuer.close())

const sigtermBefore = process.listenerCount('SIGTERM')
const running = await startResource(loadResourceConfig({ PORT: '0', HOST: '127.0.0.1', JWKS_URL: issuer.jwksUrl, ISSUER: issuer.issuer, LOG_LEVEL: 'silent' }))
t.teardown(() => running.close())
const base = `http://127.0.0.1:${(running.app.server.address() as AddressInfo).port}`

/** Send raw request bytes; resolve with the status line's code. */
async function rawStatus (request: string): Promise<number> {
  const { port } = running.app.server.address() as AddressInfo
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(request))
    let data = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      data += chunk
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data)
      if (m !== null) {
        resolve(Number(m[1]))
        socket.destroy()
      }
    })
    socket.on('error', reject)
  })
}

t.test('a genuine token over HTTP → 200; SIGTERM handler installed', async (t) => {
  const res = await fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${await issuer.sign()}` } })
  t.equal(res.status, 200)
  t.equal((await res.json() as { sub: string }).sub, 'alice')
  t.equal(process.listenerCount('SIGTERM'), sigtermBefore + 1, 'close-with-grace listens for SIGTERM')
})

t.test('what HTTP itself does with non-canonical header bytes', async (t) => {
  const token = await issuer.sign()
  // RFC 9110 §5.5: whitespace around a field value is not part of it; Node strips it before
  // the app sees the header, so the token that reaches the format check is canonical.
  t.equal(await rawStatus(`GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}   \r\nConnection: close\r\n\r\n`), 200, 'trailing spaces are OWS')
  // A bare LF inside a header line never reaches the app.
  t.equal(await rawStatus(`GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\n\r\nConnection: close\r\n\r\n`), 400, 'a stray newline is a 400 from the parser')
  // Node caps the header block at 16 KB: a 20 KB token is refused before the app (431).
  const big = await issuer.sign({ claims: { pad: 'x'.repeat(20 * 1024) } })
  t.equal(await rawStatus(`GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${big}\r\nConnection: close\r\n\r\n`), 431)
})

t.test('service to service: one client-credentials token for 100 callers, accepted by /internal/stats', async (t) => {
  let requests = 0
  // A fake token endpoint that mints service tokens with the test issuer's key.
  const tokenEndpoint = createServer((req, res) => {
    requests++
    const expected = `Basic ${Buffer.from('reporting:secret-1').toString('base64')}`
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      const form = new URLSearchParams(body)
      if (req.headers.authorization !== expected || form.get('grant_type') !== 'client_credentials') {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid_client"}')
        return
      }
      void issuer.signService({ clientId: 'reporting', scope: form.get('scope') ?? 'internal:read', claims: { aud: form.get('audience') ?? undefined } }).then((accessToken) => {
        setTimeout(() => res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
          .end(JSON.stringify({ access_token: accessToken, token_type: 'Bearer', expires_in: 300 })), 20)
      })
    })
  })
  await new Promise<void>((resolve) => tokenEndpoint.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => tokenEndpoint.close(() => resolve())))
  const source = new ServiceTokenSource({
    tokenUrl: `http://127.0.0.1:${(tokenEndpoint.address() as AddressInfo).port}/oauth/token`,
    clientId: 'reporting',
    clientSecret: 'secret-1',
    audience: 'latchkey-api',
    scope: 'internal:read'
  })
  const tokens = await Promise.all(Array.from({ length: 100 }, () => source.getToken()))
  t.equal(requests, 1, 'one token request for 100 concurrent callers')
  t.equal(new Set(tokens).size, 1)

  const stats = await fetch(`${base}/internal/stats`, { headers: { authorization: `Bearer ${tokens[0]}` } })
  t.equal(stats.status, 200)
  t.match(await stats.json(), { notes: { owners: 0, notes: 0 } })

  const user = await fetch(`${base}/internal/stats`, { headers: { authorization: `Bearer ${await issuer.sign({ claims: { scope: 'internal:read' } })}` } })
  t.equal(user.status, 403)
  t.equal(user.headers.get('www-authenticate'), 'Bearer realm="latchkey", error="insufficient_scope", scope="internal:read"')
})

t.test('close() stops listening and removes the signal handlers', async (t) => {
  await running.close()
  t.equal(process.listenerCount('SIGTERM'), sigtermBefore)
  await t.rejects(fetch(`${base}/healthz`))
})

t.test('SIGTERM: the process closes the server and exits 0', async (t) => {
  const child = spawn(process.execPath, ['--import=tsx', '--conditions=latchkey-source', new URL('./fixtures/start-resource.ts', import.meta.url).pathname], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', JWKS_URL: issuer.jwksUrl, ISSUER: issuer.issuer, LOG_LEVEL: 'silent' },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout.setEncoding('utf8')
  const url = await new Promise<string>((resolve) => {
    child.stdout.on('data', (chunk: string) => {
      out += chunk
      if (out.includes('\n')) resolve(out.trim())
    })
  })
  t.equal((await fetch(`${url}/healthz`)).status, 200)
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit') as [number | null]
  t.equal(code, 0)
})
