/**
 * Real-browser tests: a `latchkey dev` process (gateway + resource, from source) and
 * Debian's Chromium driven by playwright-core. A browser is never downloaded: the tests use
 * /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it).
 *
 * The page is served from dist/public, so the browser bundle is rebuilt from the current
 * sources first (scripts/build-browser.mjs; atomic writes, so parallel test files can share it).
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core'
import type { Test } from 'tap'
import { type Proc, ROOT, latchkey } from '../helpers/processes.js'
import { freePort } from '../helpers/redis.js'

export const CHROMIUM_PATH = '/usr/bin/chromium'
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]
/** How long to wait for the gateway to proxy /api/* (another part of the build registers it). */
const PROXY_WAIT_MS = 15_000
/** Bound on waiting for a marker request's log line (request logging could be turned off). */
const LOG_FLUSH_WAIT_MS = 2_000

export interface LogLine {
  readonly time: number
  readonly level: number
  readonly event?: string
  readonly outcome?: string
  readonly sid?: string
  readonly [key: string]: unknown
}

export interface Stack {
  /** http://localhost:PORT: Chromium treats localhost as a secure context, so the Secure cookie is kept. */
  readonly base: string
  /** The same gateway by address, for calls from Node. */
  readonly direct: string
  readonly password: string
  readonly proc: Proc
  logs (): LogLine[]
  /** `"event":"refresh"` lines of one session (refresh family). */
  refreshes (sid: string): LogLine[]
  reuseDetections (): LogLine[]
  /** Resolves once every line the gateway logged before this call has been read. */
  flushLogs (): Promise<void>
}

let bundled = false

export function buildBrowserBundle (): void {
  if (bundled) return
  execFileSync(process.execPath, ['scripts/build-browser.mjs'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] })
  bundled = true
}

export function requireChromium (t: Test): boolean {
  if (existsSync(CHROMIUM_PATH)) return true
  t.fail(`${CHROMIUM_PATH} not found: install Debian's chromium (apt-get install chromium); browser tests never download one`)
  return false
}

export async function startStack (t: Test, env: Record<string, string> = {}): Promise<Stack> {
  buildBrowserBundle()
  // A test that must know the port before start (an IdP's redirect URI) passes PORT itself.
  const port = env.PORT === undefined ? await freePort() : Number(env.PORT)
  const resourcePort = await freePort()
  const proc = latchkey(t, ['dev'], { PORT: String(port), RESOURCE_PORT: String(resourcePort), HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env })
  const match = await proc.waitFor(/Demo user: demo \/ (\S+)/)
  const password = match[1] ?? ''
  const direct = `http://127.0.0.1:${port}`
  const page = await fetch(`${direct}/`)
  if (page.status !== 200) throw new Error(`GET / answered ${page.status}: the demo page is not registered (app.ts: if (config.demoPage) register demoPagePlugin)`)
  // /api/me without a token: 401 once the proxy is registered, the gateway's 404 until then.
  const deadline = Date.now() + PROXY_WAIT_MS
  for (;;) {
    const status = (await fetch(`${direct}/api/me`)).status
    if (status === 401) break
    if (Date.now() > deadline) throw new Error(`GET /api/me answered ${status}, not 401: the gateway does not proxy /api/* (proxy plugin not registered)`)
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  const logs = (): LogLine[] => proc.stdout.split('\n').flatMap((line) => {
    if (!line.startsWith('{')) return []
    try { return [JSON.parse(line) as LogLine] } catch { return [] }
  })
  return {
    base: `http://localhost:${port}`,
    direct,
    password,
    proc,
    logs,
    refreshes: (sid) => logs().filter(l => l.event === 'refresh' && l.sid === sid),
    reuseDetections: () => logs().filter(l => l.event === 'refresh_reuse_detected'),
    flushLogs: async () => {
      // Log lines are written in order: once a marker request's own line is in, so is every earlier one.
      const marker = `flush-${Math.random().toString(36).slice(2)}`
      await (await fetch(`${direct}/healthz?${marker}`)).arrayBuffer()
      const until = Date.now() + LOG_FLUSH_WAIT_MS
      while (!proc.stdout.includes(marker) && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
}

export async function launchChromium (t: Test): Promise<Browser> {
  // launch() starts Chromium on a fresh temporary profile (user-data-dir) each time.
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true, timeout: 30_000 })
  t.teardown(() => browser.close())
  return browser
}

export interface DemoPage {
  readonly page: Page
  /** Content-Security-Policy violations and uncaught errors seen on the page. */
  readonly problems: string[]
  /** Calls the page made to storage APIs or document.cookie (the client must make none). */
  storageTouches (): Promise<string[]>
}

/** Counts storage and document.cookie use from the first script on: the session client must make none. */
const STORAGE_SPY = `(() => {
  const touches = []
  Object.defineProperty(window, '__storageTouches', { value: touches })
  for (const name of ['getItem', 'setItem', 'removeItem', 'clear', 'key']) {
    const original = Storage.prototype[name]
    Storage.prototype[name] = function (...args) { touches.push('Storage.' + name); return original.apply(this, args) }
  }
  const cookie = Object.getOwnPropertyDescriptor(Document.prototype, 'cookie')
  Object.defineProperty(Document.prototype, 'cookie', {
    configurable: true,
    get () { if (!window.__testReadsCookie) touches.push('document.cookie'); return cookie.get.call(this) },
    set (v) { touches.push('document.cookie='); cookie.set.call(this, v) }
  })
  const open = IDBFactory.prototype.open
  IDBFactory.prototype.open = function (...args) { touches.push('indexedDB.open'); return open.apply(this, args) }
  document.addEventListener('securitypolicyviolation', (e) => { (window.__csp ??= []).push(e.violatedDirective + ' ' + e.blockedURI) })
})()`

/** A fresh context (its own cookie jar: another "device"), with the storage spy in every page. */
export async function newDeviceContext (browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext()
  await context.addInitScript({ content: STORAGE_SPY })
  return context
}

/** A new tab on the demo page, loaded (signed in from the cookie, or showing the form). */
export async function openDemo (context: BrowserContext, stack: Stack): Promise<DemoPage> {
  const page = await context.newPage()
  const problems: string[] = []
  page.on('pageerror', (err) => { problems.push(`pageerror: ${err.message}`) })
  page.on('console', (msg) => { if (/Content Security Policy|Trusted Type/i.test(msg.text())) problems.push(`console: ${msg.text()}`) })
  await page.goto(`${stack.base}/`)
  await page.waitForSelector('body:not([data-state="loading"])')
  return {
    page,
    problems,
    storageTouches: async () => {
      const csp = await page.evaluate(() => (window as unknown as { __csp?: string[] }).__csp ?? [])
      problems.push(...csp.map(c => `csp: ${c}`))
      return await page.evaluate(() => [...(window as unknown as { __storageTouches: string[] }).__storageTouches])
    }
  }
}

/** Sign in through the form and wait for the identity fetched through the proxy. */
export async function signIn (page: Page, password: string): Promise<void> {
  await page.getByLabel('Username').fill('demo')
  await page.getByLabel('Password').fill(password)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForSelector('body[data-state="signed-in"]')
  await waitForIdentity(page)
}

export async function waitForIdentity (page: Page): Promise<void> {
  await page.waitForFunction(() => {
    const sub = document.getElementById('identity-sub')?.textContent ?? '…'
    const error = document.getElementById('identity-error')?.textContent ?? ''
    return sub !== '…' || error !== ''
  })
}

/** Read document.cookie as a test (not counted as the page touching it). */
export async function documentCookie (page: Page): Promise<string> {
  return await page.evaluate(() => {
    const w = window as unknown as { __testReadsCookie?: boolean }
    w.__testReadsCookie = true
    try { return document.cookie } finally { w.__testReadsCookie = false }
  })
}

/** The demo client's state, read in the page. */
export async function clientState (page: Page): Promise<{ signedIn: boolean, expiresAt: number | undefined, sessionId: string | undefined, refreshCount: number }> {
  return await page.evaluate(() => {
    const c = (window as unknown as { latchkeyDemo: { client: { signedIn: boolean, expiresAt: number | undefined, sessionId: string | undefined, refreshCount: number } } }).latchkeyDemo.client
    return { signedIn: c.signedIn, expiresAt: c.expiresAt, sessionId: c.sessionId, refreshCount: c.refreshCount }
  })
}

/** Fire `n` concurrent /api/me calls through the page's client; resolves with their statuses (or error codes). */
export async function burst (page: Page, n = 20): Promise<Array<number | string>> {
  return await page.evaluate(async (count) => {
    const c = (window as unknown as { latchkeyDemo: { client: { fetch: (u: string) => Promise<Response> } } }).latchkeyDemo.client
    return await Promise.all(Array.from({ length: count }, async () => {
      try {
        const r = await c.fetch('/api/me')
        return r.status
      } catch (err) {
        return String((err as { code?: string }).code ?? err)
      }
    }))
  }, n)
}

