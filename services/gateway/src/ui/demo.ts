/**
 * The demo page's script (browser only; bundled by scripts/build-browser.mjs into
 * dist/public/demo.js). Everything goes through the session client: the page never sees
 * the refresh cookie and never stores a token. The DOM is built with textContent only
 * (the page's CSP requires Trusted Types for script sinks, so innerHTML would throw).
 */
import { isLatchkeyError } from '#shared/errors.js'
import { type SessionInfo, SessionClient, type SignedOutReason } from '#shared/session-client.js'

/** How often the token countdown is redrawn. */
const COUNTDOWN_INTERVAL_MS = 100
/** The burst the "20 at once" button fires. */
const BURST_SIZE = 20

function byId<T extends HTMLElement = HTMLElement> (id: string): T {
  const el = document.getElementById(id)
  if (el === null) throw new Error(`demo page: #${id} missing`)
  return el as T
}

const ui = {
  status: byId('status'),
  notice: byId('signed-out-notice'),
  noticeMessage: byId('signed-out-message'),
  signIn: byId('sign-in'),
  form: byId<HTMLFormElement>('sign-in-form'),
  username: byId<HTMLInputElement>('username'),
  password: byId<HTMLInputElement>('password'),
  signInButton: byId<HTMLButtonElement>('sign-in-button'),
  signInError: byId('sign-in-error'),
  session: byId('session'),
  name: byId('identity-name'),
  sub: byId('identity-sub'),
  scope: byId('identity-scope'),
  clientId: byId('identity-client'),
  sid: byId('identity-sid'),
  identityError: byId('identity-error'),
  ttl: byId<HTMLOutputElement>('ttl'),
  refreshCount: byId<HTMLOutputElement>('refresh-count'),
  callTwenty: byId<HTMLButtonElement>('call-twenty'),
  burstResult: byId('burst-result'),
  signOut: byId<HTMLButtonElement>('sign-out'),
  sessionsSection: byId('sessions-section'),
  sessions: byId<HTMLUListElement>('sessions'),
  reloadSessions: byId<HTMLButtonElement>('reload-sessions'),
  sessionsError: byId('sessions-error'),
  providers: byId('providers')
}

/**
 * Only a session the gateway ended (revoked elsewhere, expired, a reused refresh token) is
 * an alert; signing out here or in another tab of this browser is what the person asked for.
 */
const SIGNED_OUT_TONE: Record<SignedOutReason, 'alert' | 'info'> = { invalid_grant: 'alert', logout: 'info', other_tab: 'info' }

const SIGNED_OUT_MESSAGES: Record<SignedOutReason, string> = {
  invalid_grant: 'Your session has ended: the gateway refused to refresh it. It was signed out from another device, ' +
    'expired, or its refresh token was used twice (a sign of theft), which revokes the whole session. Sign in again.',
  logout: 'You signed out. The session was revoked at the gateway.',
  other_tab: 'Your session ended in another tab of this browser. Sign in again.'
}

const client = new SessionClient()

function describe (err: unknown): string {
  if (isLatchkeyError(err)) return err.description
  return 'Something went wrong; see the browser console.'
}

function show (state: 'signed-in' | 'signed-out'): void {
  document.body.dataset.state = state
  const signedIn = state === 'signed-in'
  ui.session.hidden = !signedIn
  ui.sessionsSection.hidden = !signedIn
  ui.signIn.hidden = signedIn
  if (signedIn) ui.notice.hidden = true
}

function renderCountdown (): void {
  const expiresAt = client.expiresAt
  ui.refreshCount.value = String(client.refreshCount)
  if (expiresAt === undefined) {
    ui.ttl.value = '—'
    return
  }
  const left = Math.max(0, expiresAt - Date.now())
  ui.ttl.value = left === 0 ? 'expired (the next call refreshes it)' : `${(left / 1000).toFixed(1)} s`
  ui.ttl.dataset.expiresAt = String(expiresAt)
}

async function loadIdentity (): Promise<void> {
  ui.identityError.textContent = ''
  try {
    const response = await client.fetch('/api/me', { headers: { accept: 'application/json' } })
    if (!response.ok) {
      ui.identityError.textContent = `Could not load the identity: HTTP ${response.status}.`
      return
    }
    const me = await response.json() as { sub?: unknown, preferred_username?: unknown, scope?: unknown, client_id?: unknown, sid?: unknown }
    ui.name.textContent = typeof me.preferred_username === 'string' ? me.preferred_username : '(not in the token)'
    ui.sub.textContent = String(me.sub ?? '')
    ui.scope.textContent = typeof me.scope === 'string' && me.scope !== '' ? me.scope : '(none)'
    ui.clientId.textContent = String(me.client_id ?? '')
    ui.sid.textContent = String(me.sid ?? '')
  } catch (err) {
    ui.identityError.textContent = `Could not load the identity: ${describe(err)}`
  }
}

/** "Chrome 156 on Linux" from a user agent string; the full string goes in the tooltip. */
function deviceName (userAgent: string): string {
  if (userAgent === '') return 'Unknown browser'
  const browser = /(Edg|Firefox|HeadlessChrome|Chrome|Version)\/(\d+)/.exec(userAgent)
  const os = /(Windows|Android|iPhone|iPad|Mac OS X|CrOS|Linux)/.exec(userAgent)
  const name = browser === null ? 'Browser' : `${browser[1] === 'Version' ? 'Safari' : browser[1] === 'Edg' ? 'Edge' : browser[1]} ${browser[2]}`
  return os === null ? name : `${name} on ${os[1] === 'Mac OS X' ? 'macOS' : os[1]}`
}

function sessionItem (s: SessionInfo): HTMLLIElement {
  const li = document.createElement('li')
  li.dataset.sessionId = s.id
  const meta = document.createElement('div')
  meta.className = 'meta'
  const who = document.createElement('div')
  const agent = deviceName(s.userAgent)
  who.textContent = s.current ? `This device — ${agent}` : agent
  who.title = s.userAgent
  if (s.current) who.className = 'this-device'
  const when = document.createElement('div')
  when.textContent = `${s.ip} · signed in ${new Date(s.createdAt).toLocaleString()} · last refreshed ${new Date(s.lastUsedAt).toLocaleString()}`
  meta.append(who, when)
  li.append(meta)
  const button = document.createElement('button')
  button.type = 'button'
  button.className = 'secondary'
  button.textContent = s.current ? 'Sign out' : 'Sign out this device'
  button.setAttribute('aria-label', s.current ? 'Sign out (this device)' : `Sign out this device: ${agent}, signed in ${new Date(s.createdAt).toLocaleString()}`)
  button.addEventListener('click', () => { void revoke(s, button) })
  li.append(button)
  return li
}

async function loadSessions (): Promise<void> {
  ui.sessionsError.textContent = ''
  try {
    const list = await client.sessions()
    ui.sessions.replaceChildren(...list.map(sessionItem))
  } catch (err) {
    ui.sessionsError.textContent = `Could not list the sessions: ${describe(err)}`
  }
}

async function revoke (s: SessionInfo, button: HTMLButtonElement): Promise<void> {
  button.disabled = true
  try {
    await client.revokeSession(s.id)
    ui.status.textContent = s.current ? 'Signed out.' : 'That device was signed out.'
    if (client.signedIn) await loadSessions()
  } catch (err) {
    ui.sessionsError.textContent = `Could not sign that device out: ${describe(err)}`
    button.disabled = false
  }
}

async function enterSession (): Promise<void> {
  show('signed-in')
  ui.status.textContent = 'Signed in.'
  await Promise.all([loadIdentity(), loadSessions()])
}

async function callTwenty (): Promise<void> {
  ui.callTwenty.disabled = true
  const refreshesBefore = client.refreshCount
  const started = performance.now()
  const results = await Promise.allSettled(Array.from({ length: BURST_SIZE }, async () => {
    const response = await client.fetch('/api/me')
    await response.body?.cancel()
    return response.status
  }))
  const ms = Math.round(performance.now() - started)
  const counts = new Map<string, number>()
  for (const r of results) {
    const key = r.status === 'fulfilled' ? `HTTP ${r.value}` : isLatchkeyError(r.reason) ? r.reason.code : 'network error'
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  const ok = results.filter(r => r.status === 'fulfilled' && r.value === 200).length
  const summary = [...counts].map(([k, n]) => `${n} × ${k}`).join(', ')
  ui.burstResult.textContent = `${BURST_SIZE} calls in ${ms} ms: ${summary}; refreshes during the burst: ${client.refreshCount - refreshesBefore}.`
  ui.burstResult.dataset.ok = String(ok)
  ui.burstResult.dataset.refreshes = String(client.refreshCount - refreshesBefore)
  ui.callTwenty.disabled = false
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault()
  void (async () => {
    ui.signInError.textContent = ''
    if (ui.username.value === '' || ui.password.value === '') {
      ui.signInError.textContent = 'Enter a username and a password.'
      return
    }
    ui.signInButton.disabled = true
    try {
      await client.login(ui.username.value, ui.password.value)
      ui.password.value = ''
    } catch (err) {
      ui.signInError.textContent = describe(err)
    } finally {
      ui.signInButton.disabled = false
    }
  })()
})

ui.callTwenty.addEventListener('click', () => { void callTwenty() })
ui.reloadSessions.addEventListener('click', () => { void loadSessions() })
ui.signOut.addEventListener('click', () => {
  void client.logout().catch((err: unknown) => { ui.status.textContent = `Sign-out failed: ${describe(err)}` })
})

client.on('signed-in', () => { void enterSession() })
client.on('token', renderCountdown)
client.on('signed-out', ({ reason }) => {
  show('signed-out')
  ui.notice.hidden = false
  ui.notice.dataset.reason = reason
  ui.notice.dataset.tone = SIGNED_OUT_TONE[reason]
  // An alert interrupts a screen reader; a status waits its turn.
  ui.notice.setAttribute('role', SIGNED_OUT_TONE[reason] === 'alert' ? 'alert' : 'status')
  ui.noticeMessage.textContent = SIGNED_OUT_MESSAGES[reason]
  ui.status.textContent = 'Signed out.'
  ui.sessions.replaceChildren()
  renderCountdown()
})

setInterval(renderCountdown, COUNTDOWN_INTERVAL_MS)

/** One "Sign in with …" link per upstream identity provider (GET /auth/oidc/providers). */
async function loadProviders (): Promise<void> {
  const res = await fetch('/auth/oidc/providers', { credentials: 'same-origin' })
  if (!res.ok) return
  const { providers } = await res.json() as { providers: Array<{ id: string, name: string, start: string }> }
  ui.providers.replaceChildren(...providers.map((p) => {
    const a = document.createElement('a')
    a.className = 'button provider'
    a.dataset.provider = p.id
    a.href = `${p.start}?return_to=${encodeURIComponent(location.pathname)}`
    a.textContent = `Sign in with ${p.name}`
    return a
  }))
  ui.providers.hidden = providers.length === 0
}
void loadProviders().catch(() => { /* no buttons: password sign-in still works */ })

// Tests and the curious drive the client from the console; it holds no storage to leak.
Object.assign(globalThis, { latchkeyDemo: { client, SessionClient, loadIdentity, callTwenty } })

void (async () => {
  try {
    // A reload or a new tab picks up the cookie's session; the `signed-in` event shows it.
    if (!(await client.resume())) {
      show('signed-out')
      ui.status.textContent = 'Not signed in.'
      ui.username.focus()
    }
  } catch (err) {
    show('signed-out')
    ui.status.textContent = `The gateway is not answering: ${describe(err)}`
  }
})()
