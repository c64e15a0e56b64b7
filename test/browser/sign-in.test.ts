// The demo page in real Chromium: sign-in, the HttpOnly refresh cookie, identity through the
// proxy, a strict CSP with nothing loaded from elsewhere, no storage use, the sessions list
// with "sign out this device", and a screenshot of the signed-in page (see screenshot.ts).
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import t from 'tap'
import { ROOT } from '../helpers/processes.js'
import { README_SCREENSHOT, SCREENSHOT, SCREENSHOT_PATH } from './screenshot.js'
import {
  type Stack, clientState, documentCookie, launchChromium, newDeviceContext, openDemo, requireChromium, signIn, startStack, waitForIdentity
} from './browser-stack.js'

async function apiMe (stack: Stack, token: string): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(`${stack.direct}/api/me`, { headers: { authorization: `Bearer ${token}` } })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

t.test('demo page in Chromium', async (t) => {
  if (!requireChromium(t)) return
  const stack = await startStack(t)
  const browser = await launchChromium(t)
  const laptop = await newDeviceContext(browser)
  const requested: string[] = []
  laptop.on('request', (req) => { requested.push(req.url()) })
  const demo = await openDemo(laptop, stack)
  const { page } = demo

  await t.test('signed out at first, with a labelled form', async (t) => {
    t.equal(await page.getAttribute('body', 'data-state'), 'signed-out')
    t.ok(await page.getByLabel('Username').isVisible())
    t.ok(await page.getByLabel('Password').isVisible())
    t.equal(await page.getByLabel('Password').getAttribute('type'), 'password')
    t.ok(await page.locator('#signed-out-notice').isHidden(), 'no "signed out" alarm for a visitor who never signed in')
    const res = await page.request.get(`${stack.base}/`)
    t.match(res.headers()['content-security-policy'], /(^|; )script-src 'self'(;|$)/)
  })

  await t.test('a wrong password is refused on the page', async (t) => {
    await page.getByLabel('Username').fill('demo')
    await page.getByLabel('Password').fill('not-the-password')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForFunction(() => (document.getElementById('sign-in-error')?.textContent ?? '') !== '')
    t.equal(await page.locator('#sign-in-error').textContent(), 'Wrong username or password.')
    t.equal(await page.getAttribute('body', 'data-state'), 'signed-out')
  })

  let accessToken = ''
  await t.test('sign in: HttpOnly refresh cookie, identity through the gateway', async (t) => {
    const loginResponse = page.waitForResponse(r => r.url() === `${stack.base}/auth/login` && r.status() === 200)
    await signIn(page, stack.password)
    accessToken = ((await (await loginResponse).json()) as { access_token: string }).access_token

    const cookies = await laptop.cookies(`${stack.base}/auth/refresh`)
    const refresh = cookies.find(c => c.name === 'lk_refresh')
    t.ok(refresh, 'the browser holds lk_refresh')
    t.equal(refresh?.httpOnly, true)
    t.equal(refresh?.secure, true)
    t.equal(refresh?.sameSite, 'Strict')
    t.equal(refresh?.path, '/auth')
    const visible = await documentCookie(page)
    t.notMatch(visible, /lk_refresh/, 'document.cookie cannot see the refresh cookie')
    t.equal(visible, '')

    const me = await apiMe(stack, accessToken)
    t.equal(me.status, 200)
    t.equal(await page.locator('#identity-error').textContent(), '')
    t.equal(me.body.preferred_username, 'demo', '/api/me names the user')
    t.equal(await page.locator('#identity-name').textContent(), 'demo', 'the page shows the user\'s name...')
    t.equal(await page.locator('#identity-sub').textContent(), me.body.sub, '...and who /api/me says the token is for')
    t.equal(await page.locator('#identity-sid').textContent(), me.body.sid)
    t.equal(await page.locator('#identity-client').textContent(), 'latchkey-browser')
    t.ok(requested.some(u => u === `${stack.base}/api/me`), 'the page called /api/me on the gateway, which proxied it')
    t.equal((await clientState(page)).sessionId, me.body.sid)

    const ttl = await page.locator('#ttl').textContent()
    t.match(ttl, /^\d+\.\d s$/, 'a live countdown of the access token')
    await page.waitForTimeout(300)
    const later = await page.locator('#ttl').textContent()
    t.ok(Number.parseFloat(later ?? '') < Number.parseFloat(ttl ?? ''), `${later} < ${ttl}`)
  })

  await t.test('the twenty-call button', async (t) => {
    await page.getByRole('button', { name: 'Call /api/me 20 times at once' }).click()
    await page.waitForFunction(() => document.getElementById('burst-result')?.dataset.ok !== undefined)
    t.equal(await page.locator('#burst-result').getAttribute('data-ok'), '20')
    t.match(await page.locator('#burst-result').textContent(), /20 × HTTP 200/)
  })

  await t.test('screenshot of the signed-in page, outside the tracked tree', async (t) => {
    await page.locator('#sessions li').first().waitFor()
    await page.screenshot({ path: SCREENSHOT_PATH, fullPage: true })
    t.same([...readFileSync(SCREENSHOT_PATH).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${SCREENSHOT} is a PNG`)
    const git = (...args: string[]): number | null => spawnSync('git', args, { cwd: ROOT }).status
    if (git('rev-parse', '--is-inside-work-tree') !== 0) return
    t.equal(git('check-ignore', '--quiet', SCREENSHOT), 0, `${SCREENSHOT} is git-ignored`)
    t.equal(git('diff', '--quiet', '--', README_SCREENSHOT), 0, `${README_SCREENSHOT} is left as committed`)
  })

  await t.test('a reload stays signed in from the cookie alone', async (t) => {
    const before = (await clientState(page)).sessionId
    await page.reload()
    await page.waitForSelector('body[data-state="signed-in"]')
    await waitForIdentity(page)
    t.equal((await clientState(page)).sessionId, before, 'same session, new page: the token came from a refresh')
    t.equal(await page.locator('#identity-sid').textContent(), before)
  })

  await t.test('sessions: "sign out this device" signs the other device out on its next call', async (t) => {
    const phone = await newDeviceContext(browser)
    const other = await openDemo(phone, stack)
    await signIn(other.page, stack.password)
    const phoneSid = (await clientState(other.page)).sessionId ?? ''
    await page.getByRole('button', { name: 'Reload the list' }).click()
    await page.waitForFunction(() => document.querySelectorAll('#sessions li').length === 2)
    const item = page.locator(`#sessions li[data-session-id="${phoneSid}"]`)
    t.equal(await item.count(), 1, 'the other device is listed')
    t.notMatch(await item.textContent(), /This device/)
    t.equal(await page.locator('#sessions li .this-device').count(), 1, 'one session is marked as this device')
    await item.getByRole('button', { name: /^Sign out this device/ }).click()
    await page.waitForFunction(() => document.querySelectorAll('#sessions li').length === 1)

    // The other device has not been told; its next call finds out from the gateway.
    t.equal(await other.page.getAttribute('body', 'data-state'), 'signed-in')
    await other.page.getByRole('button', { name: 'Call /api/me 20 times at once' }).click()
    await other.page.waitForSelector('body[data-state="signed-out"]')
    t.ok(await other.page.locator('#signed-out-notice').isVisible())
    t.equal(await other.page.locator('#signed-out-notice').getAttribute('data-reason'), 'invalid_grant')
    t.equal(await other.page.locator('#signed-out-notice').getAttribute('role'), 'alert', 'a session ended by the gateway is an alert')
    t.equal(await other.page.locator('#signed-out-notice').getAttribute('data-tone'), 'alert')
    t.match(await other.page.locator('#signed-out-message').textContent(), /session has ended/)
    t.ok(await other.page.getByLabel('Password').isVisible(), 'the form is back')
    t.equal(await page.getAttribute('body', 'data-state'), 'signed-in', 'this device is still signed in')
    t.same(await other.storageTouches(), [])
    t.same(other.problems, [])
  })

  await t.test('no storage, no CSP violations, nothing from elsewhere', async (t) => {
    t.same(await demo.storageTouches(), [], 'no localStorage, sessionStorage, IndexedDB or document.cookie use')
    t.same(await page.evaluate(() => [localStorage.length, sessionStorage.length]), [0, 0])
    t.same(demo.problems, [])
    const foreign = requested.filter(u => !u.startsWith(`${stack.base}/`))
    t.same(foreign, [], 'every request went to the gateway origin')
  })
})
