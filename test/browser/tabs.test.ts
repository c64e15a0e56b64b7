// Tabs of one origin share the refresh cookie. In real Chromium: two tabs refreshing at the
// same moment rotate it once (Web Locks + the BroadcastChannel hand-off) and stay signed in;
// signing out in one tab signs the other out; and a refresh token replayed from outside the
// browser (reuse) revokes the session, which the page discovers on its next call and says so.
import t from 'tap'
import type { Page } from 'playwright-core'
import {
  type Stack, burst, clientState, launchChromium, newDeviceContext, openDemo, requireChromium, signIn, startStack
} from './browser-stack.js'

const GRACE_S = 1

/** Both pages call `client.refresh()` at the same wall-clock instant. */
async function refreshTogether (pages: Page[]): Promise<string[]> {
  const at = Date.now() + 400
  return await Promise.all(pages.map(async page => await page.evaluate(async (when) => {
    const client = (window as unknown as { latchkeyDemo: { client: { refresh: () => Promise<void> } } }).latchkeyDemo.client
    await new Promise(resolve => setTimeout(resolve, when - Date.now()))
    try {
      await client.refresh()
      return 'ok'
    } catch (err) {
      return String((err as { code?: string }).code ?? err)
    }
  }, at)))
}

async function refreshFromNode (stack: Stack, cookie: string): Promise<{ status: number, cookie: string | undefined }> {
  const res = await fetch(`${stack.direct}/auth/refresh`, { method: 'POST', headers: { cookie: `lk_refresh=${cookie}` } })
  await res.arrayBuffer()
  const set = res.headers.getSetCookie().find(c => c.startsWith('lk_refresh='))
  return { status: res.status, cookie: set?.slice('lk_refresh='.length).split(';')[0] }
}

t.test('tabs of one origin in Chromium', async (t) => {
  if (!requireChromium(t)) return
  const stack = await startStack(t, { REFRESH_REUSE_GRACE: String(GRACE_S) })
  const browser = await launchChromium(t)

  await t.test('two tabs refreshing at the same moment: one rotation, both signed in, family intact', async (t) => {
    const context = await newDeviceContext(browser)
    const first = await openDemo(context, stack)
    await signIn(first.page, stack.password)
    const second = await openDemo(context, stack)
    await second.page.waitForSelector('body[data-state="signed-in"]')
    const sid = (await clientState(first.page)).sessionId ?? ''
    for (let round = 1; round <= 3; round++) {
      const before = stack.refreshes(sid).length
      t.same(await refreshTogether([first.page, second.page]), ['ok', 'ok'], `round ${round}: both tabs refreshed`)
      await stack.flushLogs()
      const lines = stack.refreshes(sid).slice(before)
      t.same(lines.map(l => l.outcome), ['rotated'], `round ${round}: the gateway rotated the cookie once, and saw no second presentation`)
      const [a, b] = [await clientState(first.page), await clientState(second.page)]
      t.ok(a.signedIn && b.signedIn, 'both tabs still signed in')
      t.equal(a.expiresAt, b.expiresAt, 'both tabs hold the one new token')
    }
    await stack.flushLogs()
    t.same(stack.reuseDetections(), [], 'no refresh_reuse_detected')
    t.same(await burst(first.page), Array(20).fill(200))
    t.same(await burst(second.page), Array(20).fill(200))
    const sessions = await first.page.evaluate(async () => {
      const client = (window as unknown as { latchkeyDemo: { client: { sessions: () => Promise<Array<{ id: string }>> } } }).latchkeyDemo.client
      return (await client.sessions()).map(s => s.id)
    })
    t.same(sessions, [sid], 'one session for the two tabs')
    t.same([...first.problems, ...second.problems], [])
    t.same([...await first.storageTouches(), ...await second.storageTouches()], [])
  })

  await t.test('sign out in one tab: the other tab\'s next call fails and it shows signed out', async (t) => {
    const context = await newDeviceContext(browser)
    const first = await openDemo(context, stack)
    const loginResponse = first.page.waitForResponse(r => r.url() === `${stack.base}/auth/login` && r.status() === 200)
    await signIn(first.page, stack.password)
    const accessToken = ((await (await loginResponse).json()) as { access_token: string }).access_token
    const second = await openDemo(context, stack)
    await second.page.waitForSelector('body[data-state="signed-in"]')
    const cookie = (await context.cookies(`${stack.base}/auth/refresh`)).find(c => c.name === 'lk_refresh')?.value ?? ''

    await first.page.getByRole('button', { name: 'Sign out', exact: true }).first().click()
    await first.page.waitForSelector('body[data-state="signed-out"]')
    t.match(await first.page.locator('#signed-out-message').textContent(), /You signed out/)
    t.equal(await first.page.locator('#signed-out-notice').getAttribute('role'), 'status', 'a chosen sign-out is news, not an alert')
    t.equal(await first.page.locator('#signed-out-notice').getAttribute('data-tone'), 'info')
    const border = await first.page.locator('#signed-out-notice').evaluate(el => getComputedStyle(el).borderTopColor)
    const danger = await first.page.evaluate(() => { const probe = document.createElement('p'); probe.className = 'error'; document.body.append(probe); const c = getComputedStyle(probe).color; probe.remove(); return c })
    t.not(border, danger, 'not drawn in the danger colour')

    await second.page.waitForSelector('body[data-state="signed-out"]')
    t.ok(await second.page.locator('#signed-out-notice').isVisible(), 'the other tab shows it is signed out')
    t.equal(await second.page.locator('#signed-out-notice').getAttribute('data-reason'), 'other_tab')
    t.match(await second.page.locator('#signed-out-message').textContent(), /another tab/)
    t.same(await burst(second.page, 1), ['SC_SIGNED_OUT'], 'the other tab\'s next API call fails')
    // ...because the gateway says so, not only because the tabs agreed.
    const api = await fetch(`${stack.direct}/api/me`, { headers: { authorization: `Bearer ${accessToken}` } })
    t.equal(api.status, 401, 'the access token is refused at the gateway after logout')
    t.match(api.headers.get('www-authenticate'), /error="invalid_token"/)
    t.equal((await refreshFromNode(stack, cookie)).status, 401, 'the refresh cookie is dead')
    t.equal((await context.cookies(`${stack.base}/auth/refresh`)).find(c => c.name === 'lk_refresh'), undefined, 'and gone from the browser')
  })

  await t.test('a refresh token replayed from outside the browser signs the page out on its next call', async (t) => {
    const context = await newDeviceContext(browser)
    const demo = await openDemo(context, stack)
    const { page } = demo
    await signIn(page, stack.password)
    const sid = (await clientState(page)).sessionId ?? ''
    const stolen = (await context.cookies(`${stack.base}/auth/refresh`)).find(c => c.name === 'lk_refresh')?.value ?? ''
    t.not(stolen, '')

    // The thief rotates the stolen token, waits out the grace window, then replays it.
    const rotatedByThief = await refreshFromNode(stack, stolen)
    t.equal(rotatedByThief.status, 200)
    await new Promise(resolve => setTimeout(resolve, GRACE_S * 1000 + 300))
    t.equal((await refreshFromNode(stack, stolen)).status, 401, 'the replay is refused')
    await stack.flushLogs()
    const detections = stack.reuseDetections().filter(l => l.sid === sid)
    t.equal(detections.length, 1, 'one refresh_reuse_detected line for the family')
    t.notMatch(JSON.stringify(detections), stolen, 'the log line does not carry the token')
    t.equal((await refreshFromNode(stack, rotatedByThief.cookie ?? '')).status, 401, 'the whole family is revoked, the thief\'s successor too')

    // The page has not noticed yet; its next call does.
    t.equal(await page.getAttribute('body', 'data-state'), 'signed-in')
    await page.getByRole('button', { name: 'Call /api/me 20 times at once' }).click()
    await page.waitForSelector('body[data-state="signed-out"]')
    t.ok(await page.locator('#signed-out-notice').isVisible())
    t.equal(await page.locator('#signed-out-notice').getAttribute('data-reason'), 'invalid_grant')
    t.match(await page.locator('#signed-out-message').textContent(), /used twice/, 'it says why')
    await page.waitForFunction(() => document.getElementById('burst-result')?.dataset.ok !== undefined)
    t.match(await page.locator('#burst-result').textContent(), /20 × SC_SIGNED_OUT/)
    t.same(demo.problems, [])
  })
})
