/**
 * Per-connection request scripts: each autocannon connection owns one session and sends,
 * on every request, the refresh token its previous answer returned — the way a browser
 * (cookie) or an OAuth client (refresh_token grant) uses a rotating token. A connection
 * whose chain breaks (any non-200) takes a spare session, and the break is counted.
 */
import type { ConnectionScript } from './load.js'
import { BROWSER_USER_AGENT } from './sessions.js'

export interface ChainSet {
  readonly perConnection: () => ConnectionScript
  /** Every token a connection holds now, plus the spares never used. */
  readonly currentTokens: () => string[]
  readonly broken: () => number
}

type Headers = Record<string, string | string[]>

function header (headers: Headers, name: string): string[] {
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() === name) return Array.isArray(v) ? v : [v]
  }
  return []
}

const COOKIE = /^lk_refresh=([^;]*)/

function chains (tokens: readonly string[], request: (token: string) => { headers?: Record<string, string>, body?: string },
  successor: (body: string, headers: Headers) => string | undefined): ChainSet {
  const spare = [...tokens]
  const held: Array<{ token: string }> = []
  let broken = 0
  const take = (): string => {
    const t = spare.pop()
    if (t === undefined) throw new Error('out of sessions for the refresh chains')
    return t
  }
  return {
    perConnection: () => {
      const state = { token: take() }
      held.push(state)
      return {
        next: () => request(state.token),
        answered: (status, body, headers) => {
          const next = status === 200 ? successor(body, headers) : undefined
          if (next !== undefined && next !== '') {
            state.token = next
          } else {
            broken++
            state.token = take()
          }
        }
      }
    },
    currentTokens: () => [...held.map(h => h.token), ...spare],
    broken: () => broken
  }
}

/** POST /auth/refresh with `Cookie: lk_refresh=<token>`; the successor is in Set-Cookie. */
export function cookieChains (tokens: readonly string[]): ChainSet {
  return chains(tokens,
    token => ({ headers: { cookie: `lk_refresh=${token}`, 'user-agent': BROWSER_USER_AGENT } }),
    (_body, headers) => {
      for (const c of header(headers, 'set-cookie')) {
        const m = COOKIE.exec(c)
        if (m !== null) return m[1]
      }
      return undefined
    })
}

/** POST /oauth/token grant_type=refresh_token (RFC 6749 §6); the successor is in the JSON body. */
export function grantChains (tokens: readonly string[]): ChainSet {
  return chains(tokens,
    token => ({
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': BROWSER_USER_AGENT },
      body: `grant_type=refresh_token&refresh_token=${encodeURIComponent(token)}`
    }),
    (body) => {
      try {
        const parsed = JSON.parse(body) as { refresh_token?: unknown }
        return typeof parsed.refresh_token === 'string' ? parsed.refresh_token : undefined
      } catch {
        return undefined
      }
    })
}

/** The same constant request on every connection, one header value per connection (its own access token). */
export function perConnectionHeader (name: string, values: readonly string[]): () => ConnectionScript {
  let i = 0
  return () => {
    const value = values[i++ % values.length] as string
    return { next: () => ({ headers: { [name]: value } }), answered: () => {} }
  }
}
