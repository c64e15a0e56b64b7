// "Sign in with …" in real Chromium: a `latchkey dev` started with a provider from the
// environment (PROVIDERS_JSON), a real OpenID Provider (oidc-provider) in this process; the
// button on the demo page, the IdP's own login and consent pages, and back on the demo page
// signed in, with the identity fetched through the proxy.
import t from 'tap'
import { startTestIdp } from '../../services/gateway/test/identity/oidc/test-idp.js'
import { freePort } from '../helpers/redis.js'
import { launchChromium, newDeviceContext, openDemo, requireChromium, startStack, waitForIdentity } from './browser-stack.js'

const CLIENT = { clientId: 'latchkey-demo', clientSecret: 'a-browser-test-client-secret' }

t.test('click "Sign in with Test IdP", sign in at the IdP, land signed in on the demo page', async (t) => {
  if (!requireChromium(t)) return
  const port = await freePort()
  const base = `http://localhost:${port}`
  const idp = await startTestIdp(t, [{ ...CLIENT, redirectUris: [`${base}/auth/oidc/test/callback`] }], {
    alice: { email: 'alice@example.com', name: 'Alice', groups: ['eng'] }
  })
  const stack = await startStack(t, {
    PORT: String(port),
    PROVIDERS_JSON: JSON.stringify({
      providers: [{
        id: 'test', name: 'Test IdP', issuer: idp.issuer, client_id: CLIENT.clientId, client_secret: CLIENT.clientSecret,
        scopes: ['openid', 'email', 'profile', 'groups'], allow: [{ group: 'eng', scopes: ['notes:read', 'notes:write'] }]
      }]
    })
  })
  const browser = await launchChromium(t)
  const context = await newDeviceContext(browser)
  const { page, problems } = await openDemo(context, stack)
  t.equal(await page.getAttribute('body', 'data-state'), 'signed-out')

  const button = page.getByRole('link', { name: 'Sign in with Test IdP' })
  await button.waitFor()
  await button.click()
  await page.waitForURL(url => url.origin === idp.issuer)
  await page.locator('input[name="login"]').fill('alice')
  await page.locator('input[name="password"]').fill('whatever the IdP checks')
  await page.getByRole('button', { name: 'Sign-in' }).click()
  await page.getByRole('button', { name: 'Continue' }).click()

  await page.waitForURL(`${base}/`)
  await page.waitForSelector('body[data-state="signed-in"]')
  await waitForIdentity(page)
  t.equal(await page.locator('#identity-sub').textContent(), 'test:alice', 'identity through the proxy, mapped from the IdP')
  t.equal(await page.locator('#identity-scope').textContent(), 'notes:read notes:write')
  const refresh = (await context.cookies(`${base}/auth/refresh`)).find(c => c.name === 'lk_refresh')
  t.equal(refresh?.httpOnly, true, 'the ordinary HttpOnly refresh cookie')
  t.equal(refresh?.sameSite, 'Strict')
  t.same(problems, [], 'no CSP violations or page errors')
})
