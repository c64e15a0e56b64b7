/**
 * Fakes for the session client's unit tests: a gateway answering the cookie routes and
 * /api/me from memory (one shared "browser" cookie jar, a ManualClock for expiry), timers
 * driven by that clock, a FIFO Web Lock, and a BroadcastChannel hub whose delivery the test
 * can hold back to reproduce the worst ordering between a message and a lock grant.
 */
import type { ManualClock } from '#shared/clock.js'
import type { FetchLike, Timers } from '#shared/session-client.js'
import type { TabChannel, TabLocks } from '#shared/session-tabs.js'

export const ORIGIN = 'https://gw.example'

export interface SeenRequest {
  readonly method: string
  readonly path: string
  readonly authorization: string | null
  readonly credentials: RequestCredentials | undefined
  readonly body: string
}

interface Family { sid: string, cookie: string, revoked: boolean }

function b64url (s: string): string {
  return Buffer.from(s).toString('base64url')
}

function json (status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } })
}

/** Let every pending promise chain run (no wall-clock waiting). */
export async function settle (rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => { setImmediate(resolve) })
}

export class FakeGateway {
  readonly seen: SeenRequest[] = []
  /** The browser's cookie jar: one `lk_refresh` for every tab. */
  cookie: string | undefined
  ttlS = 300
  /** Tokens the edge refuses (revoked at the gateway) though not expired. */
  readonly refused = new Set<string>()
  /** When set, /auth/refresh answers this status with an error body instead of rotating (`times` left, or for ever). */
  refreshFailure: { status: number, error: string, times?: number } | undefined
  /** When set, /auth/refresh waits for it before answering (overlapping callers). */
  refreshGate: Promise<void> | undefined
  /** /api/me answers this challenge on its 401s. */
  challenge = 'Bearer error="invalid_token"'
  readonly #families = new Map<string, Family>()
  readonly #tokens = new Map<string, { sid: string, exp: number }>()
  #n = 0

  constructor (readonly clock: ManualClock) {}

  get refreshes (): number { return this.seen.filter(r => r.path === '/auth/refresh').length }
  apiCalls (): SeenRequest[] { return this.seen.filter(r => r.path.startsWith('/api/')) }

  /** Revoke the family (logout elsewhere, reuse detected, DELETE /auth/sessions/:id). */
  revokeAll (): void {
    for (const f of this.#families.values()) f.revoked = true
    for (const token of this.#tokens.keys()) this.refused.add(token)
  }

  #issue (family: Family, store: boolean): Response {
    this.#n++
    const accessToken = `${b64url('{"alg":"none"}')}.${b64url(JSON.stringify({ sid: family.sid, n: this.#n }))}.sig`
    this.#tokens.set(accessToken, { sid: family.sid, exp: this.clock.now() + this.ttlS * 1000 })
    family.cookie = `rt-${this.#n}`
    // Only a response to a request made with credentials may set the cookie.
    if (store) this.cookie = family.cookie
    return json(200, { access_token: accessToken, token_type: 'Bearer', expires_in: this.ttlS, scope: '' }, { 'cache-control': 'no-store' })
  }

  #familyOfCookie (cookie: string | undefined): Family | undefined {
    if (cookie === undefined) return undefined
    for (const f of this.#families.values()) if (f.cookie === cookie && !f.revoked) return f
    return undefined
  }

  fetch: FetchLike = async (input, init = {}) => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    const method = (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase()
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined))
    const body = init.body !== undefined && init.body !== null ? String(init.body) : input instanceof Request ? await input.text() : ''
    this.seen.push({ method, path: url.pathname, authorization: headers.get('authorization'), credentials: init.credentials, body })
    if (url.origin !== ORIGIN) throw new TypeError('fetch failed: wrong host')
    // Only a request made with credentials carries (and stores) the cookie.
    const cookie = init.credentials === 'include' ? this.cookie : undefined
    switch (`${method} ${url.pathname}`) {
      case 'POST /auth/login': {
        const { username, password } = JSON.parse(body) as { username: string, password: string }
        if (username !== 'demo' || password !== 'pw') return json(401, { error: 'invalid_grant', error_description: 'Invalid username or password.' })
        const family: Family = { sid: `sid-${this.#families.size + 1}`, cookie: '', revoked: false }
        this.#families.set(family.sid, family)
        return this.#issue(family, init.credentials === 'include')
      }
      case 'POST /auth/refresh': {
        if (this.refreshGate !== undefined) await this.refreshGate
        const failure = this.refreshFailure
        if (failure !== undefined) {
          if (failure.times !== undefined && --failure.times <= 0) this.refreshFailure = undefined
          return json(failure.status, { error: failure.error, error_description: 'x' })
        }
        const family = this.#familyOfCookie(cookie)
        if (family === undefined) {
          if (init.credentials === 'include') this.cookie = undefined
          return json(401, { error: 'invalid_grant', error_description: 'The refresh token is invalid, expired or revoked.' })
        }
        return this.#issue(family, init.credentials === 'include')
      }
      case 'POST /auth/logout': {
        const family = this.#familyOfCookie(cookie)
        if (family !== undefined) family.revoked = true
        if (init.credentials === 'include') this.cookie = undefined
        return new Response(null, { status: 204 })
      }
      case 'GET /auth/sessions': {
        const claims = this.#check(headers)
        if (claims === undefined) return this.#unauthorized()
        return json(200, [...this.#families.values()].filter(f => !f.revoked).map(f => ({
          id: f.sid, created_at: '2026-01-01T00:00:00.000Z', last_used_at: '2026-01-01T00:00:01.000Z', user_agent: 'ua', ip: '127.0.0.1', current: f.sid === claims.sid
        })))
      }
      case 'GET /api/me':
      case 'POST /api/notes': {
        const claims = this.#check(headers)
        if (claims === undefined) return this.#unauthorized()
        return json(200, { sub: 'demo', sid: claims.sid, body })
      }
      default:
        if (method === 'DELETE' && url.pathname.startsWith('/auth/sessions/')) {
          if (this.#check(headers) === undefined) return this.#unauthorized()
          const family = this.#families.get(decodeURIComponent(url.pathname.slice('/auth/sessions/'.length)))
          if (family === undefined || family.revoked) return json(404, { error: 'not_found', error_description: 'No such session.' })
          family.revoked = true
          for (const [token, c] of this.#tokens) if (c.sid === family.sid) this.refused.add(token)
          return new Response(null, { status: 204 })
        }
        return json(404, { error: 'not_found' })
    }
  }

  #check (headers: Headers): { sid: string } | undefined {
    const token = /^Bearer (.+)$/.exec(headers.get('authorization') ?? '')?.[1]
    const claims = token === undefined ? undefined : this.#tokens.get(token)
    if (token === undefined || claims === undefined || this.refused.has(token) || this.clock.now() >= claims.exp) return undefined
    return claims
  }

  #unauthorized (): Response {
    return json(401, { error: 'invalid_token', error_description: 'The access token is missing, invalid or expired.' }, { 'www-authenticate': this.challenge })
  }
}

/** setTimeout on the ManualClock: `advance` moves the clock and fires what falls due, in order. */
export class FakeTimers implements Timers {
  readonly #pending = new Map<number, { at: number, fn: () => void }>()
  #id = 0
  constructor (readonly clock: ManualClock) {}

  get pending (): number { return this.#pending.size }

  setTimeout (fn: () => void, ms: number): unknown {
    this.#id++
    this.#pending.set(this.#id, { at: this.clock.now() + ms, fn })
    return this.#id
  }

  clearTimeout (handle: unknown): void {
    this.#pending.delete(handle as number)
  }

  async advance (ms: number): Promise<void> {
    const end = this.clock.now() + ms
    for (;;) {
      await settle()
      let next: [number, { at: number, fn: () => void }] | undefined
      for (const entry of this.#pending) if (entry[1].at <= end && (next === undefined || entry[1].at < next[1].at)) next = entry
      if (next === undefined) break
      this.#pending.delete(next[0])
      if (next[1].at > this.clock.now()) this.clock.set(next[1].at)
      next[1].fn()
    }
    this.clock.set(end)
    await settle()
  }
}

/** An exclusive Web Lock with a FIFO queue, `ifAvailable` included. */
export class FakeLocks implements TabLocks {
  held = false
  readonly #queue: Array<() => void> = []
  grants = 0
  refusals = 0

  async request<T> (_name: string, options: { ifAvailable?: boolean }, callback: (lock: unknown) => Promise<T>): Promise<T> {
    if (this.held && options.ifAvailable === true) {
      this.refusals++
      return await callback(null)
    }
    if (this.held) await new Promise<void>((resolve) => { this.#queue.push(resolve) })
    else this.held = true
    this.grants++
    try {
      return await callback({ name: _name })
    } finally {
      // Ownership passes straight to the next waiter, as the Web Locks API does.
      const next = this.#queue.shift()
      if (next === undefined) this.held = false
      else next()
    }
  }
}

type Listener = (event: { data: unknown }) => void

/** BroadcastChannel between fake tabs. `hold()` keeps messages back until `release()`. */
export class FakeHub {
  readonly #channels = new Set<FakeChannel>()
  #held: Array<() => void> | undefined
  readonly posted: unknown[] = []

  channel (): FakeChannel {
    const c = new FakeChannel(this)
    this.#channels.add(c)
    return c
  }

  hold (): void { this.#held = [] }
  release (): void {
    const held = this.#held ?? []
    this.#held = undefined
    for (const deliver of held) deliver()
  }

  post (from: FakeChannel, data: unknown): void {
    this.posted.push(data)
    const copy = structuredClone(data)
    for (const c of this.#channels) {
      if (c === from || c.closed) continue
      const deliver = (): void => { c.deliver(copy) }
      // A real channel delivers as a task of the receiving page: never synchronously.
      if (this.#held !== undefined) this.#held.push(deliver)
      else setImmediate(deliver)
    }
  }
}

export class FakeChannel implements TabChannel {
  readonly #listeners = new Set<Listener>()
  closed = false
  constructor (readonly hub: FakeHub) {}
  postMessage (message: unknown): void { if (!this.closed) this.hub.post(this, message) }
  addEventListener (_type: 'message', listener: Listener): void { this.#listeners.add(listener) }
  removeEventListener (_type: 'message', listener: Listener): void { this.#listeners.delete(listener) }
  close (): void { this.closed = true }
  deliver (data: unknown): void { for (const l of this.#listeners) l({ data }) }
}
