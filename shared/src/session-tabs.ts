/**
 * What tabs of one origin share: the refresh cookie (the browser's, HttpOnly), a Web Lock
 * around refreshing it, and a BroadcastChannel that carries each refresh's outcome so the
 * other tabs adopt the new access token instead of rotating the cookie again. Messages live
 * in memory only; nothing here touches storage.
 *
 * Both facilities are described structurally so tests can hand in fakes, and so the module
 * loads in Node (where the session client runs without them).
 */

/** The subset of the Web Locks API (`navigator.locks`) the client uses. */
export interface TabLocks {
  request<T> (name: string, options: { ifAvailable?: boolean }, callback: (lock: unknown) => Promise<T>): Promise<T>
}

/** The subset of `BroadcastChannel` the client uses. */
export interface TabChannel {
  postMessage (message: unknown): void
  addEventListener (type: 'message', listener: (event: { data: unknown }) => void): void
  removeEventListener (type: 'message', listener: (event: { data: unknown }) => void): void
  close (): void
}

export const TAB_CHANNEL_NAME = 'latchkey-session'

/**
 * `token`: a tab obtained an access token (login or refresh); `refresh-failed`: a tab's
 * refresh failed without ending the session (network, 5xx); `signed-out`: the session `sid`
 * ended (logout, or the gateway answered `invalid_grant`).
 */
export type TabMessage =
  | { readonly type: 'token', readonly accessToken: string, readonly expiresAt: number, readonly refreshAt: number }
  | { readonly type: 'refresh-failed' }
  | { readonly type: 'signed-out', readonly sid: string | undefined }

const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v)

/** Validate what arrives on the channel: any same-origin script can post to it. */
export function parseTabMessage (data: unknown): TabMessage | undefined {
  if (data === null || typeof data !== 'object') return undefined
  const m = data as Record<string, unknown>
  switch (m.type) {
    case 'token':
      if (typeof m.accessToken !== 'string' || m.accessToken === '' || !isFiniteNumber(m.expiresAt) || !isFiniteNumber(m.refreshAt)) return undefined
      return { type: 'token', accessToken: m.accessToken, expiresAt: m.expiresAt, refreshAt: m.refreshAt }
    case 'refresh-failed':
      return { type: 'refresh-failed' }
    case 'signed-out':
      return { type: 'signed-out', sid: typeof m.sid === 'string' ? m.sid : undefined }
    default:
      return undefined
  }
}

/**
 * Tabs share a cookie jar only in a browser page, so only there are the lock and the channel
 * used by default: in Node two clients usually hold two different sessions, and sharing
 * tokens between them would be wrong.
 */
export function inBrowserPage (): boolean {
  return typeof (globalThis as { document?: unknown }).document === 'object'
}

export function defaultTabLocks (): TabLocks | null {
  const locks = (globalThis as { navigator?: { locks?: TabLocks } }).navigator?.locks
  return locks ?? null
}

export function defaultTabChannel (): TabChannel | null {
  const Channel = (globalThis as { BroadcastChannel?: new (name: string) => TabChannel }).BroadcastChannel
  return Channel === undefined ? null : new Channel(TAB_CHANNEL_NAME)
}
