/**
 * A real OpenID Provider for tests: panva's `oidc-provider` in this process on a free port,
 * with its development login and consent pages, fronted by a pass-through relay that owns
 * the issuer URL. The relay forwards every byte unchanged, except when a test asks it to
 * tamper with the next token response's ID token (re-signed with the IdP's own key, so
 * only the claim under test is wrong). It also records the ID token claims it relays, so a
 * test can learn the IdP's `sid` for back-channel logout.
 *
 * `BrowserJar` is a minimal user agent over fetch: cookies per origin and path, redirects
 * followed by hand, and the IdP's forms filled and posted.
 */
import Provider from 'oidc-provider'
import { createServer, request, type IncomingMessage, type Server } from 'node:http'
import { generateKeyPair, exportJWK, SignJWT, decodeJwt, decodeProtectedHeader, type JWK } from 'jose'
import { freePort } from '../../../../../test/helpers/redis.js'

interface Teardown { teardown (fn: () => unknown): void }

export interface TestAccount {
  readonly email: string
  readonly name: string
  readonly groups: readonly string[]
}

export interface TestIdp {
  readonly issuer: string
  readonly provider: Provider
  /** Rewrite the claims of the next ID token the token endpoint returns. */
  tamperNextIdToken (fn: (claims: Record<string, unknown>) => Record<string, unknown>): void
  /** Claims of every ID token relayed so far, oldest first. */
  readonly idTokens: Array<Record<string, unknown>>
  /** A JWT signed with the IdP's own key (for logout tokens the IdP would not send by itself). */
  sign (claims: Record<string, unknown>, typ?: string): Promise<string>
  /** Have the IdP send its back-channel logout for (sub, sid) to every client that registered one. */
  backchannelLogout (sub: string, sid: string): Promise<void>
  /** Disable an account at the IdP: `findAccount` no longer finds it, so its refresh tokens stop working. */
  disable (accountId: string): void
  /** While true, the token endpoint drops every connection (the IdP is unreachable). */
  unreachable: boolean
  /** Token-endpoint requests relayed so far, by grant type. */
  readonly tokenRequests: string[]
  /** Every refresh token the IdP issued (to search the logs for). */
  readonly refreshTokens: string[]
}

export interface TestClient {
  readonly clientId: string
  readonly clientSecret: string
  readonly redirectUris: readonly string[]
  readonly backchannelLogoutUri?: string
  /** Allow the refresh_token grant (refresh tokens issued for offline_access, rotated on use). */
  readonly refreshTokens?: boolean
}

async function listen (server: Server, port = 0): Promise<number> {
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  const addr = server.address()
  return typeof addr === 'object' && addr !== null ? addr.port : 0
}

function readBody (res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    res.on('data', (c: Buffer) => chunks.push(c))
    res.on('end', () => resolve(Buffer.concat(chunks)))
    res.on('error', reject)
  })
}

export async function startTestIdp (t: Teardown, clients: readonly TestClient[], accounts: Readonly<Record<string, TestAccount>>): Promise<TestIdp> {
  const disabled = new Set<string>()
  const tokenRequests: string[] = []
  const refreshTokens: string[] = []
  const { privateKey } = await generateKeyPair('RS256', { extractable: true })
  const jwk: JWK = { ...(await exportJWK(privateKey)), kid: 'idp-1', alg: 'RS256', use: 'sig' }
  const relayPort = await freePort()
  const issuer = `http://127.0.0.1:${relayPort}`
  const provider = new Provider(issuer, {
    clients: clients.map(c => ({
      client_id: c.clientId,
      client_secret: c.clientSecret,
      redirect_uris: [...c.redirectUris],
      grant_types: c.refreshTokens === true ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...(c.backchannelLogoutUri === undefined ? {} : { backchannel_logout_uri: c.backchannelLogoutUri, backchannel_logout_session_required: true })
    })),
    jwks: { keys: [jwk] },
    // RFC 9700 §4.14.2: rotate on every use, so a test sees latchkey keep the newest one.
    rotateRefreshToken: true,
    cookies: { keys: ['test-idp-cookie-key'] },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    // Scope claims in the ID token itself (OIDC Core §5.4 allows it for code flow when asked).
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true }
    },
    // The IdP refuses to call special-use addresses (SSRF guard); here the RP *is* on loopback.
    fetch: async (url: string | URL | Request, options?: RequestInit) => {
      const { dispatcher: _guard, ...rest } = (options ?? {}) as RequestInit & { dispatcher?: unknown }
      return await globalThis.fetch(url, rest)
    },
    findAccount: async (_ctx, id) => {
      if (disabled.has(id)) return undefined
      const a = accounts[id]
      return {
        accountId: id,
        claims: async () => a === undefined
          ? { sub: id }
          : { sub: id, email: a.email, email_verified: true, name: a.name, groups: [...a.groups] }
      }
    }
  })
  provider.on('server_error', () => { /* surfaced to the relying party as a 500 */ })
  const idpServer = createServer(provider.callback())
  const idpPort = await listen(idpServer)

  let tamper: ((claims: Record<string, unknown>) => Record<string, unknown>) | undefined
  const idTokens: Array<Record<string, unknown>> = []
  const state = { unreachable: false }
  const relay = createServer((req, res) => {
    if (req.url?.startsWith('/token') === true && state.unreachable) {
      req.socket.destroy()
      return
    }
    if (req.url?.startsWith('/token') === true) {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => { tokenRequests.push(new URLSearchParams(Buffer.concat(chunks).toString('utf8')).get('grant_type') ?? '') })
    }
    const upstream = request({ host: '127.0.0.1', port: idpPort, method: req.method, path: req.url, headers: req.headers }, (up) => {
      if (req.url?.startsWith('/token') !== true || up.statusCode !== 200) {
        res.writeHead(up.statusCode ?? 502, up.headers)
        up.pipe(res)
        return
      }
      void (async () => {
        const body = JSON.parse((await readBody(up)).toString('utf8')) as Record<string, unknown>
        if (typeof body.refresh_token === 'string') refreshTokens.push(body.refresh_token)
        if (typeof body.id_token === 'string') {
          let claims = decodeJwt(body.id_token) as Record<string, unknown>
          idTokens.push(claims)
          const fn = tamper
          tamper = undefined
          if (fn !== undefined) {
            claims = fn(claims)
            const header = decodeProtectedHeader(body.id_token)
            body.id_token = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: header.kid ?? 'idp-1' }).sign(privateKey)
          }
        }
        const text = JSON.stringify(body)
        const headers = { ...up.headers, 'content-length': String(Buffer.byteLength(text)) }
        res.writeHead(200, headers)
        res.end(text)
      })()
    })
    upstream.on('error', () => { res.writeHead(502).end() })
    req.pipe(upstream)
  })
  await listen(relay, relayPort)
  t.teardown(async () => {
    relay.closeAllConnections()
    idpServer.closeAllConnections()
    await new Promise(resolve => relay.close(resolve))
    await new Promise(resolve => idpServer.close(resolve))
  })
  return {
    issuer,
    provider,
    idTokens,
    tokenRequests,
    refreshTokens,
    get unreachable () { return state.unreachable },
    set unreachable (v: boolean) { state.unreachable = v },
    disable (accountId) { disabled.add(accountId) },
    tamperNextIdToken (fn) { tamper = fn },
    async sign (claims, typ) {
      return await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'idp-1', ...(typ === undefined ? {} : { typ }) }).sign(privateKey)
    },
    async backchannelLogout (sub, sid) {
      for (const c of clients) {
        if (c.backchannelLogoutUri === undefined) continue
        const client = await provider.Client.find(c.clientId)
        if (client === undefined) throw new Error(`no client ${c.clientId}`)
        // The IdP's own logout-token issuance and delivery (lib/models/client.js); untyped upstream.
        await (client as unknown as { backchannelLogout (sub: string, sid: string): Promise<void> }).backchannelLogout(sub, sid)
      }
    }
  }
}

interface StoredCookie { value: string, path: string }

/** A user agent: cookies by origin and path, manual redirects, the IdP's forms posted. */
export class BrowserJar {
  readonly #cookies = new Map<string, Map<string, StoredCookie>>()

  cookie (origin: string, name: string): string | undefined {
    return this.#cookies.get(origin)?.get(name)?.value
  }

  #store (url: URL, res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';')
      const eq = (pair as string).indexOf('=')
      const name = (pair as string).slice(0, eq).trim()
      const value = (pair as string).slice(eq + 1).trim()
      const path = attrs.map(a => a.trim()).find(a => a.toLowerCase().startsWith('path='))?.slice(5) ?? '/'
      const expired = attrs.some(a => /^max-age=0$/i.test(a.trim())) || value === ''
      let jar = this.#cookies.get(url.origin)
      if (jar === undefined) this.#cookies.set(url.origin, jar = new Map())
      if (expired) jar.delete(name)
      else jar.set(name, { value, path })
    }
  }

  async fetch (href: string, init: { method?: string, form?: Record<string, string>, headers?: Record<string, string> } = {}): Promise<Response> {
    const url = new URL(href)
    const jar = this.#cookies.get(url.origin)
    const cookie = jar === undefined
      ? ''
      : [...jar].filter(([, c]) => url.pathname.startsWith(c.path)).map(([n, c]) => `${n}=${c.value}`).join('; ')
    const headers: Record<string, string> = { ...(cookie === '' ? {} : { cookie }), ...init.headers }
    if (init.form !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
    const res = await fetch(url, {
      method: init.method ?? (init.form === undefined ? 'GET' : 'POST'),
      headers,
      redirect: 'manual',
      ...(init.form === undefined ? {} : { body: new URLSearchParams(init.form).toString() })
    })
    this.#store(url, res)
    return res
  }

  /**
   * From a sign-in start URL through the IdP's login and consent pages, up to (not into)
   * the redirect back to `stopAt`: returns that callback URL.
   */
  async signInAtIdp (startUrl: string, stopAt: string, login: string): Promise<string> {
    let next = startUrl
    for (let hop = 0; hop < 20; hop++) {
      if (next.startsWith(stopAt) && hop > 0) return next
      const res = await this.fetch(next)
      if (res.status >= 300 && res.status < 400) {
        next = new URL(res.headers.get('location') as string, next).href
        continue
      }
      const html = await res.text()
      if (res.status !== 200) throw new Error(`IdP answered ${res.status} at ${next}: ${html.slice(0, 200)}`)
      const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1]
      const prompt = /name="prompt" value="([^"]+)"/.exec(html)?.[1]
      if (action === undefined || prompt === undefined) throw new Error(`no interaction form at ${next}`)
      const form: Record<string, string> = prompt === 'login' ? { prompt, login, password: 'any' } : { prompt }
      const posted = await this.fetch(new URL(action, next).href, { form })
      if (posted.status < 300 || posted.status >= 400) throw new Error(`IdP form answered ${posted.status}`)
      next = new URL(posted.headers.get('location') as string, next).href
    }
    throw new Error('too many hops before the callback')
  }
}

