/**
 * The browser side of the gateway's cookie flow (docs/contract.md "Browser flow", "Browser client and
 * demo page"), plain TypeScript for browsers and Node 20:
 *
 *   const session = new SessionClient()                 // same origin as the gateway
 *   await session.login(username, password)
 *   const me = await (await session.fetch('/api/me')).json()
 *
 * - The access token lives in this object only: never in localStorage, sessionStorage,
 *   IndexedDB or a readable cookie, so an XSS payload cannot lift it from storage after the
 *   fact. The refresh token is the gateway's HttpOnly `lk_refresh` cookie, which script never
 *   sees; the client only asks the browser to send it (`credentials: 'include'`).
 * - `fetch` attaches `Authorization: Bearer` (RFC 6750 §2.1), and only for the gateway's
 *   origin. It refreshes first when the token is within `refreshMarginMs` of expiry, and once
 *   more when the gateway answers 401 with `error="invalid_token"` (RFC 6750 §3.1), then
 *   retries the request once.
 * - One refresh at a time: concurrent callers in a page share one POST /auth/refresh; tabs of
 *   one origin take the `latchkey-refresh` Web Lock and hand the result to each other over a
 *   BroadcastChannel (see `#refreshAcrossTabs`).
 * - The session ending (`invalid_grant` from a refresh, a logout here or in another tab) is a
 *   `signed-out` event.
 *
 * In Node there is no cookie jar: pass `baseUrl` and a `fetch` that keeps cookies.
 */
import { type Clock, systemClock } from './clock.js'
import { type LatchkeyError } from './errors.js'
import { sessionClientError } from './session-client-errors.js'
import {
  type TabChannel, type TabLocks, type TabMessage, defaultTabChannel, defaultTabLocks, inBrowserPage, parseTabMessage
} from './session-tabs.js'

/** Refresh this long before the access token expires, so it never expires in flight... */
export const REFRESH_MARGIN_MS = 30_000
/** ...or this fraction of its lifetime before, when that is shorter (short-lived tokens). */
export const REFRESH_MARGIN_FRACTION = 0.2
/** The Web Lock every tab of the origin takes around POST /auth/refresh. */
export const REFRESH_LOCK = 'latchkey-refresh'
/**
 * How long a tab that waited for the lock waits for the holder's outcome message. The holder
 * posts it before releasing, so it is normally already there; the bound only matters if the
 * holder tab died mid-refresh.
 */
export const HANDOFF_WAIT_MS = 1_000
/** After a failed background refresh (network, 5xx), try again this much later. */
export const REFRESH_RETRY_MS = 5_000
/** Auth calls (login, refresh, logout) give up after this long. */
export const AUTH_TIMEOUT_MS = 10_000
/** setTimeout's ceiling (a signed 32-bit number of ms); longer delays fire at once. */
const MAX_TIMER_MS = 2_147_483_647

export type FetchLike = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>

export interface Timers {
  setTimeout (callback: () => void, ms: number): unknown
  clearTimeout (handle: unknown): void
}

export interface SessionClientOptions {
  /** The gateway's origin; default: the page's own. Required outside a browser page. */
  readonly baseUrl?: string
  readonly fetch?: FetchLike
  readonly clock?: Clock
  readonly timers?: Timers
  /** Refresh on a timer shortly before expiry, not only when a call needs a token. Default true. */
  readonly autoRefresh?: boolean
  /** Cross-tab lock; default `navigator.locks` in a browser page, none elsewhere; `null` for none. */
  readonly locks?: TabLocks | null
  /** Cross-tab channel; default a BroadcastChannel in a browser page, none elsewhere; `null` for none. */
  readonly channel?: TabChannel | null
}

/** Why the session ended: the gateway refused the refresh cookie, this tab logged out, or another tab reported the end. */
export type SignedOutReason = 'invalid_grant' | 'logout' | 'other_tab'
/** Where a new access token came from. */
export type TokenSource = 'login' | 'refresh' | 'other_tab'

export interface SessionEventMap {
  'signed-in': { readonly source: TokenSource }
  token: { readonly source: TokenSource, readonly expiresAt: number }
  'signed-out': { readonly reason: SignedOutReason }
}
export type SessionEventType = keyof SessionEventMap

export class SessionEvent<K extends SessionEventType = SessionEventType> extends Event {
  readonly detail: SessionEventMap[K]
  constructor (type: K, detail: SessionEventMap[K]) {
    super(type)
    this.detail = detail
  }
}

/** One of the user's live sessions (GET /auth/sessions). */
export interface SessionInfo {
  readonly id: string
  readonly createdAt: string
  readonly lastUsedAt: string
  readonly userAgent: string
  readonly ip: string
  /** The session this client is signed in with. */
  readonly current: boolean
}

interface HeldToken {
  readonly value: string
  /** The session (refresh family) id from the token's `sid` claim, read but not verified. */
  readonly sid: string | undefined
  /** Local-clock ms; counted from when the token was asked for, so never later than the real expiry. */
  readonly expiresAt: number
  readonly refreshAt: number
}

const defaultTimers: Timers = {
  setTimeout (callback, ms) {
    const handle = setTimeout(callback, ms) as unknown as { unref?: () => void }
    // In Node a pending refresh must not keep the process alive.
    handle.unref?.()
    return handle
  },
  clearTimeout (handle) { clearTimeout(handle as Parameters<typeof clearTimeout>[0]) }
}

export function refreshMarginMs (lifetimeMs: number): number {
  return Math.min(REFRESH_MARGIN_MS, lifetimeMs * REFRESH_MARGIN_FRACTION)
}

/**
 * RFC 6750 §3.1: `invalid_token` means "get a new token and try again". A cross-origin
 * response hides WWW-Authenticate unless the server exposes it, so a 401 whose challenge
 * cannot be read counts too (the retry is bounded to one).
 */
export function isInvalidTokenChallenge (response: Response): boolean {
  if (response.status !== 401) return false
  const challenge = response.headers.get('www-authenticate')
  return challenge === null || /(?:^|[\s,])error\s*=\s*"?invalid_token"?/i.test(challenge)
}

/** The `sid` claim, for matching "session X ended" messages; the gateway verifies tokens, not us. */
function sidOf (jwt: string): string | undefined {
  const payload = jwt.split('.')[1]
  if (payload === undefined) return undefined
  try {
    const b64 = payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '=')
    const claims = JSON.parse(atob(b64)) as { sid?: unknown }
    return typeof claims.sid === 'string' ? claims.sid : undefined
  } catch {
    return undefined
  }
}

async function readJson (response: Response): Promise<unknown> {
  try {
    return JSON.parse(await response.text()) as unknown
  } catch {
    return undefined
  }
}

function errorCodeOf (body: unknown): string | undefined {
  const e = body !== null && typeof body === 'object' ? (body as { error?: unknown }).error : undefined
  return typeof e === 'string' && /^[\x20-\x7e]{1,64}$/.test(e) ? e : undefined
}

/** A gateway answer that is not success, as an `SC_*` error. */
function failure (status: number, body: unknown, headers: Headers, on401: 'SC_INVALID_CREDENTIALS' | 'SC_SIGNED_OUT'): LatchkeyError {
  if (status === 401) return sessionClientError(on401)
  if (status === 404) return sessionClientError('SC_SESSION_NOT_FOUND')
  if (status === 429) {
    const retryAfter = headers.get('retry-after')
    return sessionClientError('SC_RATE_LIMITED', retryAfter === null ? {} : { headers: { 'retry-after': retryAfter } })
  }
  const code = errorCodeOf(body)
  const described = `HTTP ${status}${code === undefined ? '' : ` ${code}`}`
  if (status >= 400 && status < 500) return sessionClientError('SC_REFUSED', { description: `The gateway refused the request (${described}).` })
  if (status >= 500) return sessionClientError('SC_UNAVAILABLE', { description: `The gateway is unavailable (${described}); retry shortly.` })
  return sessionClientError('SC_BAD_RESPONSE', { description: `The gateway answered ${described}.` })
}

export class SessionClient extends EventTarget {
  readonly #origin: string
  readonly #fetch: FetchLike
  readonly #clock: Clock
  readonly #timers: Timers
  readonly #autoRefresh: boolean
  readonly #locks: TabLocks | null
  readonly #channel: TabChannel | null
  readonly #ownsChannel: boolean
  #token: HeldToken | undefined
  /** Bumped whenever the token changes or goes away, here or from another tab. */
  #generation = 0
  #refreshing: Promise<void> | undefined
  #timer: unknown
  #refreshes = 0
  readonly #tabWaiters = new Set<() => void>()

  constructor (options: SessionClientOptions = {}) {
    super()
    const base = options.baseUrl ?? (globalThis as { location?: { origin?: string } }).location?.origin
    if (base === undefined || base === 'null') throw sessionClientError('SC_NO_BASE_URL')
    this.#origin = new URL(base).origin
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init))
    this.#clock = options.clock ?? systemClock
    this.#timers = options.timers ?? defaultTimers
    this.#autoRefresh = options.autoRefresh ?? true
    const page = inBrowserPage()
    this.#locks = options.locks !== undefined ? options.locks : (page ? defaultTabLocks() : null)
    this.#ownsChannel = options.channel === undefined && page
    this.#channel = options.channel !== undefined ? options.channel : (page ? defaultTabChannel() : null)
    this.#channel?.addEventListener('message', this.#onTabMessage)
  }

  /** When the current access token expires (ms since the epoch, this machine's clock); undefined when signed out. */
  get expiresAt (): number | undefined { return this.#token?.expiresAt }
  get signedIn (): boolean { return this.#token !== undefined }
  /** The current session's id (the token's `sid`), as listed by `sessions()`. */
  get sessionId (): string | undefined { return this.#token?.sid }
  /** Access tokens this client obtained by refreshing (not those adopted from other tabs). */
  get refreshCount (): number { return this.#refreshes }

  /** Typed `addEventListener`; returns the function that removes the listener. */
  on<K extends SessionEventType> (type: K, listener: (detail: SessionEventMap[K]) => void): () => void {
    const wrapped = (event: Event): void => { listener((event as SessionEvent<K>).detail) }
    this.addEventListener(type, wrapped)
    return () => { this.removeEventListener(type, wrapped) }
  }

  /** POST /auth/login. Throws SC_INVALID_CREDENTIALS, SC_RATE_LIMITED (with `retry-after`), SC_UNAVAILABLE. */
  async login (username: string, password: string): Promise<void> {
    const startedAt = this.#clock.now()
    const response = await this.#authCall('/auth/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ username, password })
    })
    if (response.status !== 200) throw failure(response.status, await readJson(response), response.headers, 'SC_INVALID_CREDENTIALS')
    this.#adopt(await this.#tokenFrom(response, startedAt), 'login')
  }

  /**
   * Pick up the session the refresh cookie holds (a page load, a new tab). Resolves false
   * when there is none; that is not a "signed-out" event, as nobody was signed in here.
   */
  async resume (): Promise<boolean> {
    if (this.#token === undefined) await this.#refreshShared()
    return this.#token !== undefined
  }

  /** Rotate now (shared with any refresh already under way here or in another tab). */
  async refresh (): Promise<void> {
    await this.#refreshShared()
    if (this.#token === undefined) throw sessionClientError('SC_SIGNED_OUT')
  }

  /** A token good for at least the refresh margin, for callers that cannot use `fetch` (a WebSocket URL, say). */
  async getAccessToken (): Promise<string> {
    return await this.#currentToken()
  }

  /**
   * `fetch` to the gateway with the access token attached. Resolves with the response
   * whatever its status, except when the session is over: then it rejects with
   * SC_SIGNED_OUT (and `signed-out` has been emitted). A URL on another origin rejects
   * with SC_FOREIGN_ORIGIN without sending anything.
   */
  async fetch (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> {
    const request = input instanceof Request ? input : undefined
    const url = this.#ownUrl(request === undefined ? String(input) : request.url)
    // A Request's body can be read once: keep a copy for the retry.
    const spare = request?.clone()
    const token = await this.#currentToken()
    const first = await this.#send(request ?? url, init, token, request)
    // A streamed body cannot be sent twice.
    const replayable = !(typeof ReadableStream === 'function' && init.body instanceof ReadableStream)
    if (!isInvalidTokenChallenge(first) || !replayable) return first
    await first.body?.cancel().catch(() => undefined)
    await this.#replaceRejected(token)
    const next = this.#token
    if (next === undefined) throw sessionClientError('SC_SIGNED_OUT')
    return await this.#send(spare ?? url, init, next.value, spare)
  }

  /** POST /auth/logout: the session is revoked at the gateway and the cookie cleared; other tabs are told. */
  async logout (): Promise<void> {
    let response: Response | undefined
    try {
      response = await this.#authCall('/auth/logout', { method: 'POST' })
    } finally {
      this.#end('logout', true)
    }
    if (response.status !== 204 && response.status !== 200) throw failure(response.status, await readJson(response), response.headers, 'SC_SIGNED_OUT')
  }

  /** GET /auth/sessions: the user's live sessions. */
  async sessions (): Promise<SessionInfo[]> {
    const response = await this.fetch(`${this.#origin}/auth/sessions`, { headers: { accept: 'application/json' } })
    const body = await readJson(response)
    if (response.status !== 200) throw failure(response.status, body, response.headers, 'SC_SIGNED_OUT')
    if (!Array.isArray(body)) throw sessionClientError('SC_BAD_RESPONSE')
    return body.map((s: unknown): SessionInfo => {
      const o = s !== null && typeof s === 'object' ? s as Record<string, unknown> : {}
      if (typeof o.id !== 'string') throw sessionClientError('SC_BAD_RESPONSE')
      const text = (v: unknown): string => typeof v === 'string' ? v : ''
      return {
        id: o.id,
        createdAt: text(o.created_at),
        lastUsedAt: text(o.last_used_at),
        userAgent: text(o.user_agent),
        ip: text(o.ip),
        current: o.current === true
      }
    })
  }

  /** DELETE /auth/sessions/:id ("sign out that device"). Revoking the current session signs this client out. */
  async revokeSession (id: string): Promise<void> {
    const response = await this.fetch(`${this.#origin}/auth/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' })
    if (response.status !== 204 && response.status !== 200) throw failure(response.status, await readJson(response), response.headers, 'SC_SIGNED_OUT')
    if (id === this.#token?.sid) this.#end('logout', true)
  }

  /** Stop the refresh timer and stop listening to other tabs. */
  close (): void {
    this.#cancelTimer()
    this.#channel?.removeEventListener('message', this.#onTabMessage)
    if (this.#ownsChannel) this.#channel?.close()
    for (const wake of this.#tabWaiters) wake()
  }

  // ---- tokens -----------------------------------------------------------------------

  async #currentToken (): Promise<string> {
    const held = this.#token
    if (held !== undefined && this.#clock.now() < held.refreshAt) return held.value
    try {
      await this.#refreshShared()
    } catch (err) {
      // The gateway is unreachable but the token has not expired: use it; the next call tries again.
      if (held !== undefined && this.#token === held && this.#clock.now() < held.expiresAt) return held.value
      throw err
    }
    const fresh = this.#token
    if (fresh === undefined) throw sessionClientError('SC_SIGNED_OUT')
    return fresh.value
  }

  /** After a 401 `invalid_token` with `rejected`: refresh, unless someone already replaced it. */
  async #replaceRejected (rejected: string): Promise<void> {
    if (this.#token?.value !== rejected) return
    await this.#refreshShared()
  }

  /** Single flight within the page: every caller during a refresh awaits the same one. */
  #refreshShared (): Promise<void> {
    this.#refreshing ??= this.#refreshAcrossTabs().finally(() => { this.#refreshing = undefined })
    return this.#refreshing
  }

  /**
   * Single flight across tabs. The refresh cookie is shared by every tab of the origin, so
   * two tabs rotating it at once would each present the same token: the gateway's grace
   * rule makes that safe (the second gets the same successor), but it is still a wasted
   * rotation, and without grace it would look like reuse. So a tab refreshes only while
   * holding the `latchkey-refresh` lock, and posts the outcome before releasing it.
   *
   * A tab that finds the lock taken waits for it, and then must not rotate again if the
   * holder already did. The holder's message and the lock grant travel separately, so the
   * message may arrive after the grant: having seen the lock contended, the waiter gives
   * the message up to HANDOFF_WAIT_MS to arrive before rotating itself (which is what it
   * does if the holder's refresh failed or the holder died).
   */
  async #refreshAcrossTabs (): Promise<void> {
    const seen = this.#generation
    const locks = this.#locks
    if (locks === null) {
      await this.#rotate()
      return
    }
    const contended = await locks.request(REFRESH_LOCK, { ifAvailable: true }, async (lock) => {
      if (lock === null) return true
      if (this.#generation === seen) await this.#rotate()
      return false
    })
    if (!contended) return
    await locks.request(REFRESH_LOCK, {}, async () => {
      if (this.#generation === seen && this.#channel !== null) await this.#nextTabMessage(HANDOFF_WAIT_MS)
      if (this.#generation === seen) await this.#rotate()
    })
  }

  /** POST /auth/refresh with the cookie. Other tabs always hear the outcome. */
  async #rotate (): Promise<void> {
    const startedAt = this.#clock.now()
    let token: HeldToken
    try {
      const response = await this.#authCall('/auth/refresh', { method: 'POST', headers: { accept: 'application/json' } })
      if (response.status === 401) {
        // The only 401 refresh answers is invalid_grant: missing, expired, revoked or reused.
        this.#end('invalid_grant', true)
        return
      }
      if (response.status !== 200) throw failure(response.status, await readJson(response), response.headers, 'SC_SIGNED_OUT')
      token = await this.#tokenFrom(response, startedAt)
      this.#refreshes++
    } catch (err) {
      this.#tell({ type: 'refresh-failed' })
      throw err
    }
    this.#adopt(token, 'refresh')
  }

  async #tokenFrom (response: Response, startedAt: number): Promise<HeldToken> {
    const body = await readJson(response)
    const o = body !== null && typeof body === 'object' ? body as Record<string, unknown> : {}
    const { access_token: value, token_type: type, expires_in: expiresIn } = o
    // RFC 6749 §7.1: the token type is case-insensitive.
    if (typeof value !== 'string' || value === '' || typeof type !== 'string' || type.toLowerCase() !== 'bearer' ||
      typeof expiresIn !== 'number' || !Number.isFinite(expiresIn) || expiresIn <= 0) {
      throw sessionClientError('SC_BAD_RESPONSE')
    }
    const lifetimeMs = expiresIn * 1000
    const expiresAt = startedAt + lifetimeMs
    return { value, sid: sidOf(value), expiresAt, refreshAt: expiresAt - refreshMarginMs(lifetimeMs) }
  }

  #adopt (token: HeldToken, source: TokenSource): void {
    const wasSignedIn = this.#token !== undefined
    this.#token = token
    this.#generation++
    this.#schedule()
    if (source !== 'other_tab') this.#tell({ type: 'token', accessToken: token.value, expiresAt: token.expiresAt, refreshAt: token.refreshAt })
    this.#emit('token', { source, expiresAt: token.expiresAt })
    if (!wasSignedIn) this.#emit('signed-in', { source })
  }

  /** Forget the token; `tell` other tabs when the session itself ended (not when they told us). */
  #end (reason: SignedOutReason, tell: boolean): void {
    const held = this.#token
    this.#token = undefined
    this.#generation++
    this.#cancelTimer()
    if (held === undefined) return
    if (tell) this.#tell({ type: 'signed-out', sid: held.sid })
    this.#emit('signed-out', { reason })
  }

  // ---- timer ------------------------------------------------------------------------

  #schedule (delayMs?: number): void {
    this.#cancelTimer()
    const held = this.#token
    if (!this.#autoRefresh || held === undefined) return
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, delayMs ?? held.refreshAt - this.#clock.now()))
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = undefined
      void this.#onTimer()
    }, delay)
  }

  async #onTimer (): Promise<void> {
    const held = this.#token
    if (held === undefined) return
    if (this.#clock.now() < held.refreshAt) {
      this.#schedule()
      return
    }
    try {
      await this.#refreshShared()
    } catch {
      // Network or 5xx: the session is not over. Try again later; a call in between also will.
      if (this.#token !== undefined && this.#timer === undefined) this.#schedule(REFRESH_RETRY_MS)
    }
  }

  #cancelTimer (): void {
    if (this.#timer === undefined) return
    this.#timers.clearTimeout(this.#timer)
    this.#timer = undefined
  }

  // ---- other tabs -------------------------------------------------------------------

  #tell (message: TabMessage): void {
    try {
      this.#channel?.postMessage(message)
    } catch {
      // A closed channel: the other tabs fall back to their own refresh (made safe by the lock and grace).
    }
  }

  readonly #onTabMessage = (event: { data: unknown }): void => {
    const message = parseTabMessage(event.data)
    if (message === undefined) return
    if (message.type === 'token') {
      const held = this.#token
      // Tabs share one cookie, hence one session: a newer token from any of them is ours too.
      if (held === undefined || message.expiresAt > held.expiresAt) {
        this.#adopt({ value: message.accessToken, sid: sidOf(message.accessToken), expiresAt: message.expiresAt, refreshAt: message.refreshAt }, 'other_tab')
      }
    } else if (message.type === 'signed-out') {
      const held = this.#token
      if (held !== undefined && (message.sid === undefined || held.sid === undefined || message.sid === held.sid)) this.#end('other_tab', false)
    }
    for (const wake of this.#tabWaiters) wake()
  }

  #nextTabMessage (timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        this.#tabWaiters.delete(wake)
        this.#timers.clearTimeout(timer)
        resolve()
      }
      const timer = this.#timers.setTimeout(wake, timeoutMs)
      this.#tabWaiters.add(wake)
    })
  }

  // ---- HTTP -------------------------------------------------------------------------

  #ownUrl (input: string): string {
    const url = new URL(input, `${this.#origin}/`)
    if (url.origin !== this.#origin) throw sessionClientError('SC_FOREIGN_ORIGIN')
    return url.href
  }

  async #send (target: Request | string, init: RequestInit, token: string, request: Request | undefined): Promise<Response> {
    const headers = new Headers(init.headers ?? request?.headers)
    headers.set('authorization', `Bearer ${token}`)
    return await this.#fetch(target, { ...init, headers })
  }

  /** The cookie routes: the browser sends and stores `lk_refresh` itself (also cross-origin, for CORS_ORIGINS apps). */
  async #authCall (path: string, init: RequestInit): Promise<Response> {
    try {
      return await this.#fetch(`${this.#origin}${path}`, { ...init, credentials: 'include', signal: AbortSignal.timeout(AUTH_TIMEOUT_MS) })
    } catch (err) {
      throw sessionClientError('SC_UNAVAILABLE', { cause: err })
    }
  }

  #emit<K extends SessionEventType> (type: K, detail: SessionEventMap[K]): void {
    this.dispatchEvent(new SessionEvent(type, detail))
  }
}
