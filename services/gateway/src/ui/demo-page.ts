/**
 * The demo page (docs/contract.md "Browser client and demo page"): `GET /` and its assets under
 * `/demo/`, read once at start from the browser bundle that `npm run build` writes to
 * dist/public (scripts/build-browser.mjs). Registered only in `dev` mode or with
 * DEMO_PAGE=true:
 *
 *   if (config.demoPage) await app.register(demoPagePlugin)
 *
 * The page runs under a strict Content-Security-Policy: scripts, styles and fetches from
 * this origin only, no inline code, no framing, Trusted Types enforced. Assets are served
 * from memory by name, so no request path ever reaches the file system.
 */
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { gatewayError } from '../errors.js'

export const DEMO_ASSET_PREFIX = '/demo/'
export const DEMO_INDEX = 'index.html'

export const DEMO_PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'"
].join('; ')

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.map': 'application/json; charset=utf-8'
}

export interface DemoPageOptions {
  /** Where the built page is; default: dist/public (see `defaultDemoAssetsDir`). */
  readonly assetsDir?: string
}

interface Asset {
  readonly body: Buffer
  readonly type: string
  readonly etag: string
}

/**
 * dist/public, found from this module's own location: compiled, it runs from
 * dist/services/gateway/src/ui/; from source (tsx, tests), from services/gateway/src/ui/.
 */
export function defaultDemoAssetsDir (): string {
  const compiled = fileURLToPath(new URL('../../../../public/', import.meta.url))
  const source = fileURLToPath(new URL('../../../../dist/public/', import.meta.url))
  return existsSync(join(compiled, DEMO_INDEX)) ? compiled : source
}

function loadAssets (dir: string): Map<string, Asset> | undefined {
  if (!existsSync(join(dir, DEMO_INDEX))) return undefined
  const assets = new Map<string, Asset>()
  for (const name of readdirSync(dir)) {
    const type = CONTENT_TYPES[extname(name)]
    if (type === undefined) continue
    const body = readFileSync(join(dir, name))
    assets.set(name, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` })
  }
  return assets
}

function securityHeaders (reply: FastifyReply): void {
  reply.header('Content-Security-Policy', DEMO_PAGE_CSP)
  reply.header('X-Content-Type-Options', 'nosniff')
  reply.header('Referrer-Policy', 'no-referrer')
  reply.header('X-Frame-Options', 'DENY')
  reply.header('Cross-Origin-Opener-Policy', 'same-origin')
  reply.header('Cross-Origin-Resource-Policy', 'same-origin')
}

function send (req: FastifyRequest, reply: FastifyReply, asset: Asset): FastifyReply {
  securityHeaders(reply)
  // Revalidate every time: a rebuilt bundle must show up on the next load.
  reply.header('Cache-Control', 'no-cache')
  reply.header('ETag', asset.etag)
  if (req.headers['if-none-match'] === asset.etag) return reply.code(304).send()
  return reply.type(asset.type).send(asset.body)
}

async function demoPage (app: FastifyInstance, opts: DemoPageOptions): Promise<void> {
  const dir = opts.assetsDir ?? defaultDemoAssetsDir()
  const assets = loadAssets(dir)
  const index = assets?.get(DEMO_INDEX)
  if (assets === undefined || index === undefined) {
    app.log.warn({ dir }, 'demo page not built: run `npm run build` (it bundles the browser code into dist/public)')
    app.get('/', async (_req, reply) => {
      securityHeaders(reply)
      return reply.code(503).header('Cache-Control', 'no-store').type('text/plain; charset=utf-8')
        .send('The demo page is not built: run `npm run build`.\n')
    })
    return
  }
  app.get('/', async (req, reply) => send(req, reply, index))
  app.get(`${DEMO_ASSET_PREFIX}:file`, async (req, reply) => {
    const { file } = req.params as { file: string }
    const asset = file === DEMO_INDEX ? undefined : assets.get(file)
    if (asset === undefined) throw gatewayError('GW_NOT_FOUND')
    return send(req, reply, asset)
  })
}

export const demoPagePlugin = fp(demoPage, { name: 'latchkey-demo-page', fastify: '5.x' })
export default demoPagePlugin
