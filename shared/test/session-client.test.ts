import { readFileSync } from 'node:fs'
import t from 'tap'
import { ManualClock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import {
  HANDOFF_WAIT_MS, REFRESH_MARGIN_MS, type SessionClientOptions, type SessionEventMap, SessionClient, type SignedOutReason, refreshMarginMs
} from '#shared/session-client.js'
import { FakeGateway, FakeHub, FakeLocks, FakeTimers, ORIGIN, settle } from './helpers/session-fakes.js'

function setup (options: Partial<SessionClientOptions> = {}): { clock: ManualClock, gw: FakeGateway, timers: FakeTimers, client: SessionClient } {
  const clock = new ManualClock()
  const gw = new FakeGateway(clock)
  const timers = new FakeTimers(clock)
  const client = new SessionClient({ baseUrl: ORIGIN, fetch: (input, init) => gw.fetch(input, init), clock, timers, autoRefresh: false, locks: null, channel: null, ...options })
  return { clock, gw, timers, client }
}

function record<K extends keyof SessionEventMap> (client: SessionClient, type: K): Array<SessionEventMap[K]> {
  const seen: Array<SessionEventMap[K]> = []
  client.on(type, (d) => { seen.push(d) })
  return seen
}

async function rejection (p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    return isLatchkeyError(err) ? err.code : `not a LatchkeyError: ${String(err)}`
  }
  return 'resolved'
}

t.test('the margin is 30 s, or a fifth of a short lifetime', async (t) => {
  t.equal(refreshMarginMs(300_000), REFRESH_MARGIN_MS)
  t.equal(refreshMarginMs(2_000), 400)
})

t.test('login keeps the token in memory and fetch attaches it', async (t) => {
  const { clock, gw, client } = setup()
  const signedIn = record(client, 'signed-in')
  await client.login('demo', 'pw')
  const login = gw.seen[0]
  t.equal(login?.path, '/auth/login')
  t.equal(login?.credentials, 'include', 'the cookie routes send and store the cookie')
  t.same(JSON.parse(login?.body ?? ''), { username: 'demo', password: 'pw' })
  t.equal(client.expiresAt, clock.now() + 300_000)
  t.equal(client.sessionId, 'sid-1')
  t.same(signedIn, [{ source: 'login' }])

  const res = await client.fetch('/api/me')
  t.equal(res.status, 200)
  const call = gw.apiCalls()[0]
  t.match(call?.authorization, /^Bearer [\w-]+\.[\w-]+\.sig$/)
  t.not(call?.credentials, 'include', 'API calls do not ask for cookies')
  t.equal(gw.refreshes, 0)
})

t.test('login failures are SC_ codes that never carry the password', async (t) => {
  const { client } = setup()
  try {
    await client.login('demo', 'wrong-secret')
    t.fail('resolved')
  } catch (err) {
    t.ok(isLatchkeyError(err) && err.code === 'SC_INVALID_CREDENTIALS')
    t.notMatch(String((err as Error).message), /wrong-secret/)
  }
  t.notOk(client.signedIn)
  const limited = new SessionClient({
    baseUrl: ORIGIN,
    fetch: async () => new Response('{"error":"too_many_requests"}', { status: 429, headers: { 'retry-after': '17' } }),
    locks: null,
    channel: null
  })
  try {
    await limited.login('demo', 'x')
    t.fail('resolved')
  } catch (err) {
    t.ok(isLatchkeyError(err) && err.code === 'SC_RATE_LIMITED')
    t.equal(isLatchkeyError(err) ? err.headers['retry-after'] : undefined, '17')
  }
  const down = new SessionClient({ baseUrl: ORIGIN, fetch: async () => { throw new TypeError('fetch failed') }, locks: null, channel: null })
  t.equal(await rejection(down.login('demo', 'x')), 'SC_UNAVAILABLE')
  t.throws(() => new SessionClient({ locks: null, channel: null }), { code: 'SC_NO_BASE_URL' }, 'Node has no page origin to default to')
})

t.test('refreshes only within the margin before expiry', async (t) => {
  const { clock, gw, client } = setup()
  gw.ttlS = 2
  await client.login('demo', 'pw')
  clock.advance(1_599)
  await client.fetch('/api/me')
  t.equal(gw.refreshes, 0, 'outside the 400 ms margin: no refresh')
  clock.advance(1)
  await client.fetch('/api/me')
  t.equal(gw.refreshes, 1, 'inside the margin: one refresh, before the call')
  t.equal(gw.apiCalls().length, 2)
  t.equal(client.expiresAt, clock.now() + 2_000)
})

t.test('single flight: 20 concurrent calls with an expired token cause one refresh', async (t) => {
  const { clock, gw, client } = setup()
  await client.login('demo', 'pw')
  const loginToken = gw.seen[0]
  clock.advance(301_000)
  let open!: () => void
  gw.refreshGate = new Promise((resolve) => { open = resolve })
  const calls = Array.from({ length: 20 }, () => client.fetch('/api/me'))
  await settle()
  t.equal(gw.refreshes, 1, 'one refresh in flight while all 20 wait')
  t.equal(gw.apiCalls().length, 0, 'no call went out with the expired token')
  open()
  const responses = await Promise.all(calls)
  t.same(responses.map(r => r.status), Array(20).fill(200))
  t.equal(gw.refreshes, 1)
  const tokens = new Set(gw.apiCalls().map(c => c.authorization))
  t.equal(tokens.size, 1, 'all 20 used the one new token')
  t.not([...tokens][0], loginToken?.authorization)
})

t.test('a 401 invalid_token refreshes and retries once', async (t) => {
  const { gw, client } = setup()
  await client.login('demo', 'pw')
  const [token] = await tokenOf(client, gw)
  gw.refused.add(token ?? '')
  let before = gw.seen.length
  const res = await client.fetch('/api/me')
  t.equal(res.status, 200)
  t.same(gw.seen.slice(before).map(r => r.path), ['/api/me', '/auth/refresh', '/api/me'])
  const [first, , retry] = gw.seen.slice(before)
  t.not(first?.authorization, retry?.authorization, 'the retry carries the new token')

  // The retry's answer is final, even if it is another invalid_token.
  gw.fetch = wrapRefusingAll(gw)
  before = gw.seen.length
  const again = await client.fetch('/api/me')
  t.equal(again.status, 401)
  t.same(gw.seen.slice(before).map(r => r.path), ['/api/me', '/auth/refresh', '/api/me'], 'one refresh, one retry, no loop')
})

/** The token the client currently holds, as the gateway saw it on a probe call. */
async function tokenOf (client: SessionClient, gw: FakeGateway): Promise<Set<string>> {
  await client.fetch('/api/me')
  return new Set(gw.apiCalls().map(c => (c.authorization ?? '').replace('Bearer ', '')))
}

/** A gateway whose API refuses every token (as if revoked at the edge) while refresh still works. */
function wrapRefusingAll (gw: FakeGateway): FakeGateway['fetch'] {
  const inner = gw.fetch
  return async (input, init) => {
    const res = await inner(input, init)
    if (String(input).includes('/api/')) {
      return new Response('{"error":"invalid_token"}', { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token", error_description="revoked"' } })
    }
    return res
  }
}

t.test('20 concurrent calls rejected with invalid_token share one refresh', async (t) => {
  const { gw, client } = setup()
  await client.login('demo', 'pw')
  const [token] = await tokenOf(client, gw)
  gw.refused.add(token ?? '')
  const before = gw.refreshes
  const responses = await Promise.all(Array.from({ length: 20 }, () => client.fetch('/api/me')))
  t.same(responses.map(r => r.status), Array(20).fill(200))
  t.equal(gw.refreshes - before, 1)
})

t.test('other 401s and 403s are not retried', async (t) => {
  const { gw, client } = setup()
  await client.login('demo', 'pw')
  const [token] = await tokenOf(client, gw)
  gw.refused.add(token ?? '')
  gw.challenge = 'Bearer realm="api", error="invalid_request"'
  t.equal((await client.fetch('/api/me')).status, 401)
  t.equal(gw.refreshes, 0)
  const inner = gw.fetch
  gw.fetch = async (input, init) => String(input).includes('/api/')
    ? new Response('{"error":"insufficient_scope"}', { status: 403, headers: { 'www-authenticate': 'Bearer error="insufficient_scope"' } })
    : await inner(input, init)
  const c = new SessionClient({ baseUrl: ORIGIN, fetch: gw.fetch, locks: null, channel: null, autoRefresh: false })
  await c.login('demo', 'pw')
  t.equal((await c.fetch('/api/me')).status, 403)
  t.equal(gw.refreshes, 0)
})

t.test('invalid_grant from refresh signs out, once, with an event', async (t) => {
  const { clock, gw, client } = setup()
  const out = record(client, 'signed-out')
  await client.login('demo', 'pw')
  gw.revokeAll()
  clock.advance(301_000)
  const results = await Promise.all(Array.from({ length: 20 }, () => rejection(client.fetch('/api/me'))))
  t.same(results, Array(20).fill('SC_SIGNED_OUT'))
  t.equal(gw.refreshes, 1)
  t.same(out, [{ reason: 'invalid_grant' }])
  t.notOk(client.signedIn)
  t.equal(client.expiresAt, undefined)
  t.equal(await rejection(client.fetch('/api/me')), 'SC_SIGNED_OUT')
  t.equal(out.length, 1, 'no second event while already signed out')
})

t.test('a revoked session: 401 invalid_token, refresh refused, signed out', async (t) => {
  const { gw, client } = setup()
  const out = record(client, 'signed-out')
  await client.login('demo', 'pw')
  gw.revokeAll()
  t.equal(await rejection(client.fetch('/api/me')), 'SC_SIGNED_OUT')
  t.same(gw.seen.slice(1).map(r => r.path), ['/api/me', '/auth/refresh'])
  t.same(out, [{ reason: 'invalid_grant' }])
})

t.test('resume picks up the cookie session, or reports none without an event', async (t) => {
  const { gw, client, clock } = setup()
  const out = record(client, 'signed-out')
  t.equal(await client.resume(), false)
  t.same(out, [])
  await client.login('demo', 'pw')
  const other = new SessionClient({ baseUrl: ORIGIN, fetch: gw.fetch, clock, locks: null, channel: null, autoRefresh: false })
  t.equal(await other.resume(), true, 'a second page picks up the session from the shared cookie')
  t.equal(other.sessionId, 'sid-1')
})

t.test('a refresh that fails without ending the session', async (t) => {
  const { clock, gw, client } = setup()
  const out = record(client, 'signed-out')
  await client.login('demo', 'pw')
  gw.refreshFailure = { status: 503, error: 'temporarily_unavailable' }
  clock.advance(280_000)
  t.equal((await client.fetch('/api/me')).status, 200, 'inside the margin, the unexpired token is still used')
  t.ok(client.signedIn)
  clock.advance(21_000)
  t.equal(await rejection(client.fetch('/api/me')), 'SC_UNAVAILABLE', 'expired and unrefreshable: the call fails, the session does not end')
  t.ok(client.signedIn)
  t.same(out, [])
  gw.refreshFailure = undefined
  t.equal((await client.fetch('/api/me')).status, 200)
  gw.fetch = async () => { throw new TypeError('fetch failed') }
  t.equal(await rejection(client.refresh()), 'SC_UNAVAILABLE')
})

t.test('autoRefresh: a timer refreshes shortly before expiry', async (t) => {
  const { gw, timers, client } = setup({ autoRefresh: true })
  gw.ttlS = 2
  const tokens = record(client, 'token')
  await client.login('demo', 'pw')
  t.equal(timers.pending, 1)
  await timers.advance(1_599)
  t.equal(gw.refreshes, 0)
  await timers.advance(1)
  t.equal(gw.refreshes, 1, 'at 1.6 s of a 2 s token')
  await timers.advance(1_600 * 4)
  t.equal(gw.refreshes, 5, 'one refresh per token lifetime, unattended')
  t.same(tokens.map(e => e.source), ['login', 'refresh', 'refresh', 'refresh', 'refresh', 'refresh'])
  client.close()
  t.equal(timers.pending, 0)
  await timers.advance(10_000)
  t.equal(gw.refreshes, 5)
})

t.test('autoRefresh retries after a failed background refresh', async (t) => {
  const { gw, timers, client } = setup({ autoRefresh: true })
  gw.ttlS = 60
  await client.login('demo', 'pw')
  gw.refreshFailure = { status: 503, error: 'temporarily_unavailable' }
  await timers.advance(48_000)
  t.equal(gw.refreshes, 1)
  gw.refreshFailure = undefined
  await timers.advance(5_000)
  t.equal(gw.refreshes, 2)
  t.ok(client.signedIn)
})

t.test('the token only goes to the gateway origin', async (t) => {
  const { gw, client } = setup()
  await client.login('demo', 'pw')
  const before = gw.seen.length
  t.equal(await rejection(client.fetch('https://evil.example/api/me')), 'SC_FOREIGN_ORIGIN')
  t.equal(await rejection(client.fetch('//evil.example/api/me')), 'SC_FOREIGN_ORIGIN')
  t.equal(await rejection(client.fetch(new Request('https://evil.example/x'))), 'SC_FOREIGN_ORIGIN')
  t.equal(gw.seen.length, before, 'nothing was sent')
  t.equal((await client.fetch(`${ORIGIN}/api/me`)).status, 200)
  t.equal((await client.fetch(new URL('/api/me', ORIGIN))).status, 200)
})

t.test('a request body is sent again on the retry', async (t) => {
  const { gw, client } = setup()
  await client.login('demo', 'pw')
  const [token] = await tokenOf(client, gw)
  gw.refused.add(token ?? '')
  const res = await client.fetch(new Request(`${ORIGIN}/api/notes`, { method: 'POST', body: 'hello', headers: { 'x-a': '1' } }))
  t.equal(res.status, 200)
  t.equal(((await res.json()) as { body: string }).body, 'hello')
  const posts = gw.seen.filter(r => r.path === '/api/notes')
  t.same(posts.map(p => p.body), ['hello', 'hello'])
  const res2 = await client.fetch('/api/notes', { method: 'POST', body: 'again' })
  t.equal(((await res2.json()) as { body: string }).body, 'again')
})

t.test('logout revokes, clears, and later calls are signed out', async (t) => {
  const { gw, client } = setup()
  const out = record(client, 'signed-out')
  await client.login('demo', 'pw')
  await client.logout()
  const logout = gw.seen.find(r => r.path === '/auth/logout')
  t.equal(logout?.method, 'POST')
  t.equal(logout?.credentials, 'include')
  t.equal(gw.cookie, undefined)
  t.same(out, [{ reason: 'logout' }])
  t.equal(await rejection(client.fetch('/api/me')), 'SC_SIGNED_OUT')
  t.equal(out.length, 1)
})

t.test('sessions() and revokeSession()', async (t) => {
  const { gw, client, clock } = setup()
  await client.login('demo', 'pw')
  const laptop = new SessionClient({ baseUrl: ORIGIN, fetch: gw.fetch, clock, locks: null, channel: null, autoRefresh: false })
  await laptop.login('demo', 'pw')
  const list = await client.sessions()
  t.same(list.map(s => [s.id, s.current]), [['sid-1', true], ['sid-2', false]])
  t.same(Object.keys(list[0] ?? {}).sort(), ['createdAt', 'current', 'id', 'ip', 'lastUsedAt', 'userAgent'])
  await client.revokeSession('sid-2')
  t.same(gw.seen.filter(r => r.method === 'DELETE').map(r => r.path), ['/auth/sessions/sid-2'])
  t.equal(await rejection(client.revokeSession('sid-2')), 'SC_SESSION_NOT_FOUND')
  const out = record(client, 'signed-out')
  await client.revokeSession('sid-1')
  t.same(out, [{ reason: 'logout' }], 'revoking the current session signs this client out')
})

/** Two tabs of one origin: one cookie jar (the gateway fake), one lock manager, one channel hub. */
function twoTabs (): { clock: ManualClock, gw: FakeGateway, timers: FakeTimers, locks: FakeLocks, hub: FakeHub, a: SessionClient, b: SessionClient } {
  const clock = new ManualClock()
  const gw = new FakeGateway(clock)
  const timers = new FakeTimers(clock)
  const locks = new FakeLocks()
  const hub = new FakeHub()
  const tab = (): SessionClient => new SessionClient({ baseUrl: ORIGIN, fetch: gw.fetch, clock, timers, locks, channel: hub.channel(), autoRefresh: false })
  return { clock, gw, timers, locks, hub, a: tab(), b: tab() }
}

/** Two tabs, signed in in A, past the access token's expiry; the gateway holds refreshes until `open()`. */
async function tabsAtExpiryWithRefreshHeld (): Promise<ReturnType<typeof twoTabs> & { open: () => void }> {
  const tabs = twoTabs()
  await tabs.a.login('demo', 'pw')
  await settle()
  tabs.clock.advance(301_000)
  let open!: () => void
  tabs.gw.refreshGate = new Promise((resolve) => { open = resolve })
  return { ...tabs, open }
}

t.test('tabs: a login in one tab signs the other in', async (t) => {
  const { a, b } = twoTabs()
  const bIn = record(b, 'signed-in')
  await a.login('demo', 'pw')
  await settle()
  t.ok(b.signedIn)
  t.equal(b.expiresAt, a.expiresAt)
  t.same(bIn, [{ source: 'other_tab' }])
})

t.test('tabs: refreshing at the same moment rotates the cookie once', async (t) => {
  const { gw, locks, a, b, open } = await tabsAtExpiryWithRefreshHeld()
  const calls = [...Array.from({ length: 10 }, () => a.fetch('/api/me')), ...Array.from({ length: 10 }, () => b.fetch('/api/me'))]
  await settle()
  t.equal(locks.refusals, 1, 'the second tab found the lock taken')
  open()
  const statuses = (await Promise.all(calls)).map(r => r.status)
  t.same(statuses, Array(20).fill(200))
  t.equal(gw.refreshes, 1, 'one rotation for both tabs')
  t.equal(a.expiresAt, b.expiresAt, 'both hold the new token')
  t.equal(b.refreshCount, 0)
})

t.test('tabs: the holder\'s message arriving after the lock grant still prevents a second rotation', async (t) => {
  const { gw, timers, hub, a, b, open } = await tabsAtExpiryWithRefreshHeld()
  const pa = a.fetch('/api/me')
  await settle()
  const pb = b.fetch('/api/me')
  await settle()
  hub.hold()
  open()
  await settle()
  // A has rotated and released the lock; B holds it now, with A's message still undelivered.
  t.equal(gw.refreshes, 1)
  t.notOk(b.expiresAt === a.expiresAt, 'B has not heard yet')
  await timers.advance(HANDOFF_WAIT_MS / 2)
  hub.release()
  t.same([(await pa).status, (await pb).status], [200, 200])
  t.equal(gw.refreshes, 1, 'B adopted A\'s token instead of rotating again')
})

t.test('tabs: if the holder\'s refresh fails, the waiter refreshes itself at once', async (t) => {
  const { gw, a, b, open } = await tabsAtExpiryWithRefreshHeld()
  gw.refreshFailure = { status: 503, error: 'temporarily_unavailable', times: 1 }
  const pa = rejection(a.fetch('/api/me'))
  await settle()
  const pb = b.fetch('/api/me')
  await settle()
  open()
  // No timer is advanced: B must not sit out HANDOFF_WAIT_MS, A's "refresh-failed" wakes it.
  t.equal((await pb).status, 200)
  t.equal(await pa, 'SC_UNAVAILABLE')
  await settle()
  t.equal(gw.refreshes, 2)
  t.ok(a.signedIn, 'A adopted B\'s token')
  t.equal(a.expiresAt, b.expiresAt)
})

t.test('tabs: a holder that dies without a word delays the waiter by HANDOFF_WAIT_MS at most', async (t) => {
  const { gw, timers, hub, a, b, open } = await tabsAtExpiryWithRefreshHeld()
  void a.fetch('/api/me').catch(() => undefined)
  await settle()
  const pb = b.fetch('/api/me')
  await settle()
  hub.hold() // A's message never arrives: as if the tab had been closed mid-refresh
  open()
  await settle()
  await timers.advance(HANDOFF_WAIT_MS)
  t.equal((await pb).status, 200)
  t.equal(gw.refreshes, 2)
})

t.test('tabs: sign out in one tab signs the other out', async (t) => {
  const { a, b } = twoTabs()
  await a.login('demo', 'pw')
  await settle()
  const bOut = record(b, 'signed-out')
  await a.logout()
  await settle()
  t.same(bOut, [{ reason: 'other_tab' }])
  t.notOk(b.signedIn)
  t.equal(await rejection(b.fetch('/api/me')), 'SC_SIGNED_OUT', 'the next call fails: the cookie is gone too')
})

t.test('tabs: invalid_grant in one tab ends the session in all of them', async (t) => {
  const { clock, gw, a, b } = twoTabs()
  await a.login('demo', 'pw')
  await settle()
  const reasons: SignedOutReason[] = []
  a.on('signed-out', d => reasons.push(d.reason))
  b.on('signed-out', d => reasons.push(d.reason))
  gw.revokeAll()
  clock.advance(301_000)
  t.equal(await rejection(a.fetch('/api/me')), 'SC_SIGNED_OUT')
  await settle()
  t.same(reasons, ['invalid_grant', 'other_tab'])
})

t.test('tabs: messages are validated', async (t) => {
  const { hub, a } = twoTabs()
  const rogue = hub.channel()
  for (const bad of [null, 'x', { type: 'token' }, { type: 'token', accessToken: 'a', expiresAt: 'soon', refreshAt: 1 }, { type: 'nope' }]) rogue.postMessage(bad)
  await settle()
  t.notOk(a.signedIn)
})

t.test('never touches storage or document.cookie', async (t) => {
  const touched: string[] = []
  const g = globalThis as Record<string, unknown>
  const names = ['localStorage', 'sessionStorage', 'indexedDB', 'caches']
  const saved = new Map(names.map(n => [n, Object.getOwnPropertyDescriptor(g, n)]))
  for (const name of names) {
    Object.defineProperty(g, name, { configurable: true, get () { touched.push(name); return undefined } })
  }
  const savedDoc = Object.getOwnPropertyDescriptor(g, 'document')
  Object.defineProperty(g, 'document', {
    configurable: true,
    value: Object.defineProperty({}, 'cookie', { get () { touched.push('document.cookie'); return '' }, set () { touched.push('document.cookie=') } })
  })
  t.teardown(() => {
    for (const [name, d] of saved) { if (d === undefined) delete g[name]; else Object.defineProperty(g, name, d) }
    if (savedDoc === undefined) delete g.document
    else Object.defineProperty(g, 'document', savedDoc)
  })
  // A "browser page" (document defined): default lock and channel lookups run too.
  const { clock, gw, timers, a, b } = twoTabs()
  const page = new SessionClient({ baseUrl: ORIGIN, fetch: gw.fetch, clock, timers })
  await a.login('demo', 'pw')
  await settle()
  clock.advance(301_000)
  await Promise.all([a.fetch('/api/me'), b.fetch('/api/me'), page.resume()])
  await a.sessions()
  await a.logout()
  page.close()
  t.same(touched, [])
  for (const file of ['session-client.ts', 'session-tabs.ts', 'session-client-errors.ts']) {
    const src = readFileSync(new URL(`../src/${file}`, import.meta.url), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')
    t.notMatch(src, /localStorage|sessionStorage|indexedDB|document\.cookie|caches\./, `${file} names no storage API`)
  }
})
