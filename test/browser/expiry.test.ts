// Access tokens that live 2 s (ACCESS_TOKEN_TTL=2), in real Chromium: the page stays signed in
// across expiries on its own, and the gateway sees one refresh per token lifetime, whether the
// page is idle, fires twenty calls at once, or has two tabs whose timers go off together.
import t, { type Test } from 'tap'
import type { Page } from 'playwright-core'
import {
  type LogLine, type Stack, burst, clientState, launchChromium, newDeviceContext, openDemo, requireChromium, signIn, startStack
} from './browser-stack.js'

const TTL_S = 2
/** Refresh at 80 % of a 2 s lifetime (REFRESH_MARGIN_FRACTION): one rotation every ~1.6 s. */
const MIN_GAP_MS = 1_200

function rotated (lines: LogLine[], from = 0, to = Number.POSITIVE_INFINITY): LogLine[] {
  return lines.filter(l => l.outcome === 'rotated' && l.time >= from && l.time <= to)
}

/** One refresh per token lifetime: consecutive rotations of the session are at least MIN_GAP_MS apart. */
function assertOnePerLifetime (t: Test, lines: LogLine[], what: string): void {
  const gaps = lines.slice(1).map((l, i) => l.time - (lines[i] as LogLine).time)
  t.ok(gaps.every(g => g >= MIN_GAP_MS), `${what}: rotations ${MIN_GAP_MS} ms or more apart (gaps: ${gaps.join(', ')} ms)`)
}

async function waitUntilSignedIn (page: Page): Promise<void> {
  await page.waitForSelector('body[data-state="signed-in"]')
}

t.test('two-second access tokens in Chromium', async (t) => {
  if (!requireChromium(t)) return
  const stack: Stack = await startStack(t, { ACCESS_TOKEN_TTL: String(TTL_S), REFRESH_REUSE_GRACE: '1' })
  const browser = await launchChromium(t)

  await t.test('the page keeps working across expiries, one refresh per expiry', async (t) => {
    const context = await newDeviceContext(browser)
    const demo = await openDemo(context, stack)
    const { page } = demo
    await signIn(page, stack.password)
    const sid = (await clientState(page)).sessionId ?? ''
    t.not(sid, '')

    // Left alone for three lifetimes and more: the client refreshes on its timer.
    const idleFrom = Date.now()
    await page.waitForTimeout(6_500)
    await stack.flushLogs()
    const idle = rotated(stack.refreshes(sid), idleFrom)
    t.ok(idle.length >= 3 && idle.length <= 5, `idle 6.5 s: ${idle.length} rotations (expect ~4)`)
    assertOnePerLifetime(t, idle, 'idle')
    t.equal(await page.getAttribute('body', 'data-state'), 'signed-in')
    t.match(await page.locator('#ttl').textContent(), /^\d\.\d s$/, 'the countdown shows a live token')

    // Twenty calls at once, again and again, across several expiries.
    const busyFrom = Date.now()
    let bursts = 0
    while (Date.now() - busyFrom < 6_000) {
      const statuses = await burst(page, 20)
      if (statuses.some(s => s !== 200)) t.fail(`burst ${bursts}: ${statuses.join(',')}`)
      bursts++
      await page.waitForTimeout(150)
    }
    const busyTo = Date.now()
    await stack.flushLogs()
    const busy = rotated(stack.refreshes(sid), busyFrom, busyTo)
    t.ok(bursts >= 10, `${bursts} bursts of 20`)
    t.ok(busy.length >= 2 && busy.length <= 5, `busy 6 s: ${busy.length} rotations (expect ~4), not one per call`)
    assertOnePerLifetime(t, busy, 'busy')

    const all = stack.refreshes(sid)
    t.same(all.filter(l => l.outcome !== 'rotated'), [], 'no grace or invalid refreshes: never the same cookie twice')
    t.equal((await clientState(page)).refreshCount, rotated(all).length, 'every rotation the gateway saw was this page\'s')
    await page.getByRole('button', { name: 'Call /api/me 20 times at once' }).click()
    await page.waitForFunction(() => document.getElementById('burst-result')?.dataset.ok === '20')
    t.same(demo.problems, [])
    t.same(await demo.storageTouches(), [])
  })

  await t.test('twenty calls at once on an expired token: exactly one refresh', async (t) => {
    // A client without the timer, so that every burst meets an expired token.
    const context = await newDeviceContext(browser)
    const { page } = await openDemo(context, stack)
    const sid = await page.evaluate(async (password) => {
      const demo = (window as unknown as { latchkeyDemo: { SessionClient: new (o: object) => { login: (u: string, p: string) => Promise<void>, sessionId: string } } }).latchkeyDemo
      const lazy = new demo.SessionClient({ autoRefresh: false, locks: null, channel: null })
      Object.assign(window, { lazy })
      await lazy.login('demo', password)
      return lazy.sessionId
    }, stack.password)
    for (let round = 1; round <= 3; round++) {
      await page.waitForTimeout(TTL_S * 1000 + 150)
      const statuses = await page.evaluate(async () => {
        const lazy = (window as unknown as { lazy: { fetch: (u: string) => Promise<Response> } }).lazy
        return await Promise.all(Array.from({ length: 20 }, async () => (await lazy.fetch('/api/me')).status))
      })
      t.same(statuses, Array(20).fill(200), `round ${round}: 20 × 200`)
      await stack.flushLogs()
      t.equal(rotated(stack.refreshes(sid)).length, round, `round ${round}: one rotation for 20 concurrent calls`)
    }
  })

  await t.test('two tabs whose timers fire together rotate once per expiry', async (t) => {
    const context = await newDeviceContext(browser)
    const first = await openDemo(context, stack)
    await signIn(first.page, stack.password)
    const second = await openDemo(context, stack)
    await waitUntilSignedIn(second.page)
    const sid = (await clientState(first.page)).sessionId ?? ''
    t.equal((await clientState(second.page)).sessionId, sid, 'the second tab joined the same session')
    const a = await clientState(first.page)
    const b = await clientState(second.page)
    t.equal(a.expiresAt, b.expiresAt, 'both tabs hold the same token, so both refresh at the same moment')

    const from = Date.now()
    await first.page.waitForTimeout(6_500)
    await stack.flushLogs()
    const lines = rotated(stack.refreshes(sid), from)
    t.ok(lines.length >= 3 && lines.length <= 5, `two tabs, 6.5 s: ${lines.length} rotations (expect ~4, not ~8)`)
    assertOnePerLifetime(t, lines, 'two tabs')
    t.same(stack.refreshes(sid).filter(l => l.outcome !== 'rotated'), [], 'no tab presented a cookie another had rotated')
    t.same(stack.reuseDetections(), [], 'no refresh_reuse_detected: the family is intact')
    const [sa, sb] = [await clientState(first.page), await clientState(second.page)]
    t.equal(sa.refreshCount + sb.refreshCount, rotated(stack.refreshes(sid)).length, 'each rotation was made by exactly one tab')
    t.same(await burst(first.page), Array(20).fill(200))
    t.same(await burst(second.page), Array(20).fill(200))
  })
})
