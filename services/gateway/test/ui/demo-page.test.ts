import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { loadGatewayConfig } from '#gateway/config.js'
import { installErrorHandling } from '#gateway/ops/error-handler.js'
import { DEMO_PAGE_CSP, demoPagePlugin } from '#gateway/ui/demo-page.js'

function fakeBuild (files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'lk-demo-'))
  for (const [name, body] of Object.entries(files)) writeFileSync(join(dir, name), body)
  return dir
}

async function appWith (t: Test, assetsDir: string): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  installErrorHandling(app)
  await app.register(demoPagePlugin, { assetsDir })
  t.teardown(() => app.close())
  await app.ready()
  return app
}

const BUILT = {
  'index.html': '<!doctype html><title>demo</title>',
  'demo.js': 'console.log(1)',
  'demo.css': 'body{}',
  'icon.svg': '<svg/>',
  'notes.txt': 'not served'
}

t.test('GET / serves the page under a strict CSP', async (t) => {
  const app = await appWith(t, fakeBuild(BUILT))
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 200)
  t.equal(res.body, BUILT['index.html'])
  t.equal(res.headers['content-type'], 'text/html; charset=utf-8')
  const csp = String(res.headers['content-security-policy'])
  t.equal(csp, DEMO_PAGE_CSP)
  t.match(csp, /(^|; )script-src 'self'(;|$)/)
  t.match(csp, /(^|; )default-src 'none'(;|$)/)
  t.match(csp, /frame-ancestors 'none'/)
  t.notMatch(csp, /unsafe-inline|unsafe-eval|https?:|data:|\*/, 'nothing from elsewhere, nothing inline')
  t.equal(res.headers['x-content-type-options'], 'nosniff')
  t.equal(res.headers['referrer-policy'], 'no-referrer')
  t.equal(res.headers['cache-control'], 'no-cache')
})

t.test('assets by name only, with types and revalidation', async (t) => {
  const app = await appWith(t, fakeBuild(BUILT))
  const js = await app.inject({ url: '/demo/demo.js' })
  t.equal(js.statusCode, 200)
  t.equal(js.headers['content-type'], 'text/javascript; charset=utf-8')
  t.equal(js.body, BUILT['demo.js'])
  t.equal((await app.inject({ url: '/demo/demo.css' })).headers['content-type'], 'text/css; charset=utf-8')
  t.equal((await app.inject({ url: '/demo/icon.svg' })).headers['content-type'], 'image/svg+xml')
  const etag = String(js.headers.etag)
  const again = await app.inject({ url: '/demo/demo.js', headers: { 'if-none-match': etag } })
  t.equal(again.statusCode, 304)
  t.equal(again.body, '')
  for (const url of ['/demo/notes.txt', '/demo/index.html', '/demo/..%2Fpackage.json', '/demo/../package.json', '/demo/nope.js', '/demo/']) {
    const res = await app.inject({ url })
    t.equal(res.statusCode, 404, url)
    t.same(res.json(), { error: 'not_found', error_description: 'Not found.' }, url)
  }
  t.equal((await app.inject({ method: 'HEAD', url: '/' })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/' })).statusCode, 404)
})

t.test('not built: GET / says how to build it, start-up does not fail', async (t) => {
  const app = await appWith(t, fakeBuild({}))
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 503)
  t.match(res.body, /npm run build/)
  t.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
  t.equal((await app.inject({ url: '/demo/demo.js' })).statusCode, 404)
})

t.test('DEMO_PAGE: on in dev, opt-in elsewhere', async (t) => {
  t.equal(loadGatewayConfig({}).demoPage, false)
  t.equal(loadGatewayConfig({ DEMO_PAGE: 'true' }).demoPage, true)
  t.equal(loadGatewayConfig({}, { devMode: true }).demoPage, true)
  t.equal(loadGatewayConfig({ DEMO_PAGE: 'false' }, { devMode: true }).demoPage, false)
  t.throws(() => loadGatewayConfig({ DEMO_PAGE: 'maybe' }), { message: /DEMO_PAGE/ })
})
