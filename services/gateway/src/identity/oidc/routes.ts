/**
 * Sign-in through an upstream OpenID provider (docs/contract.md "Upstream sign-in"):
 *
 *   GET  /auth/oidc/:provider/start?return_to=     → 302 to the IdP's authorization endpoint
 *   GET  /auth/oidc/:provider/callback             → an ordinary family + `lk_refresh`, 303 to return_to
 *   POST /auth/oidc/:provider/backchannel-logout   → the IdP's logout token revokes the families it names
 *   GET  /auth/oidc/providers                      → ids, labels and start paths (the demo page's buttons)
 *   GET  /oauth/authorize                          → a native app's sign-in (native-sign-in.ts): the same
 *                                                    start, and a callback that answers the app with a code
 *
 * The pending request (PKCE verifier, nonce, return_to) is kept server-side under its
 * `state`, taken once; the browser holds the `state` in the `lk_oidc` cookie, so a callback
 * is accepted only in the browser that started it (login CSRF, RFC 9700 §4.7.1) and only
 * once. The cookie is SameSite=Lax: the callback is a top-level navigation from the IdP's
 * site, which a Strict cookie would not accompany.
 *
 * `return_to` must resolve to the gateway's own origin or one in CORS_ORIGINS: never an open
 * redirect (RFC 9700 §4.11).
 */
import fp from 'fastify-plugin'
import cookie from '@fastify/cookie'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Clock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { sameString } from '#shared/same-string.js'
import type { GatewayConfig } from '../../config.js'
import { gatewayError } from '../../errors.js'
import type { SessionService } from '../../sessions/service.js'
import { USER_AGENT_MAX_CHARS } from '../../auth/routes.js'
import { setRefreshCookie } from '../../auth/cookie.js'
import { familyRemainingS, noStore } from '../../auth/token-response.js'
import { parseForm } from '../../oauth/form-body.js'
import { mapClaims, type MappedUser } from './claim-mapping.js'
import type { FederatedLinks } from './federated-links.js'
import type { ProviderRegistry } from './provider-registry.js'
import type { PendingSignIn, RelyingParty, SignedInClaims } from './relying-party.js'
import type { SignInStateStore } from './sign-in-state.js'
import { AuthorizeRefusal, redirectWith, type AuthorizeRequest, type NativeSignIn } from './native-sign-in.js'
import { errorsAsPages } from './error-page.js'
import { PASSWORD_PAGE_COOKIE, PASSWORD_PAGE_PATH, sendPasswordPage, type PasswordPage } from './password-page.js'
import { checkPassword, type PasswordCheckDeps } from '../../auth/password-check.js'
import { createOriginPolicy, crossSiteGuard } from '../../auth/origin-guard.js'
import { randomBytes } from 'node:crypto'

export const SIGN_IN_COOKIE = 'lk_oidc'
export const SIGN_IN_COOKIE_PATH = '/auth/oidc/'
/** How long a started sign-in may take at the IdP (login, MFA, consent). */
export const SIGN_IN_TTL_S = 600
export const RETURN_TO_MAX_CHARS = 2048
/** A logout token's `jti` is remembered this long; older tokens are refused by `iat` anyway. */
export const LOGOUT_JTI_TTL_MS = 2 * 300_000
export const LOGOUT_BODY_LIMIT_BYTES = 16 * 1024
/** `provider=password` at /oauth/authorize: the password page, even when providers exist. */
export const PASSWORD_PROVIDER = 'password'
/** The password page's pending request id: 256 random bits. */
const PENDING_ID_BYTES = 32

export interface OidcRoutesOptions {
  readonly config: GatewayConfig
  readonly parties: ProviderRegistry
  readonly sessions: SessionService
  readonly state: SignInStateStore
  readonly links: FederatedLinks
  readonly native: NativeSignIn
  /** The password page's check (auth/password-check.ts). */
  readonly password: PasswordCheckDeps
  readonly clock: Clock
}

const providerParams = {
  type: 'object',
  required: ['provider'],
  properties: { provider: { type: 'string', maxLength: 32 } }
} as const

/** An absolute URL on an allowed origin, or undefined (RFC 9700 §4.11: no open redirect). */
export function resolveReturnTo (raw: string | undefined, own: string, allowed: readonly string[]): string | undefined {
  if (raw === undefined || raw === '') return `${own}/`
  if (raw.length > RETURN_TO_MAX_CHARS || raw.includes('\\')) return undefined
  let url: URL
  try { url = new URL(raw, `${own}/`) } catch { return undefined }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined
  if (url.username !== '' || url.password !== '') return undefined
  return url.origin === own || allowed.includes(url.origin) ? url.href : undefined
}

/**
 * These routes' request log lines: Fastify's own `req` serializer (fastify/lib/logger-pino.js)
 * less the query (the callback's `code` and `state`): an authorization code is a credential
 * until spent.
 */
const logSerializers = {
  req: (req: FastifyRequest) => {
    const q = req.url.indexOf('?')
    return {
      method: req.method,
      url: q === -1 ? req.url : `${req.url.slice(0, q)}?[redacted]`,
      version: [req.headers['accept-version']].flat()[0],
      host: req.host,
      remoteAddress: req.ip,
      remotePort: req.socket?.remotePort
    }
  }
}

async function oidcRoutes (app: FastifyInstance, opts: OidcRoutesOptions): Promise<void> {
  const { config, parties, sessions, state: stateStore, links, native, password, clock } = opts
  // The password page's POST: a form from this origin only (login CSRF, RFC 9700 §4.7.1).
  const refuseCrossSite = crossSiteGuard(createOriginPolicy(config.origin, []))
  const secure = config.cookieSecure
  await app.register(cookie)
  // A person's browser sees a refusal here as a page, not JSON (error-page.ts).
  app.addHook('onSend', errorsAsPages)
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: LOGOUT_BODY_LIMIT_BYTES }, (_req, body, done) => {
    try { done(null, parseForm(body as string)) } catch (err) { done(err as Error, undefined) }
  })

  function partyOf (req: FastifyRequest): RelyingParty {
    const party = parties.get((req.params as { provider: string }).provider)
    if (party === undefined) throw gatewayError('GW_OIDC_UNKNOWN_PROVIDER')
    return party
  }

  function clearSignInCookie (reply: FastifyReply): void {
    reply.setCookie(SIGN_IN_COOKIE, '', { httpOnly: true, secure, sameSite: 'lax', path: SIGN_IN_COOKIE_PATH, maxAge: 0, expires: new Date(0) })
  }

  // Public: what a sign-in page needs to draw its buttons; nothing secret.
  app.get('/auth/oidc/providers', async (_req, reply) => {
    reply.header('Cache-Control', 'no-cache')
    return { providers: parties.list().map(p => ({ id: p.entry.id, name: p.entry.name, start: `/auth/oidc/${p.entry.id}/start` })) }
  })

  app.get('/auth/oidc/:provider/start', {
    logSerializers,
    schema: { params: providerParams, querystring: { type: 'object', properties: { return_to: { type: 'string' } } } }
  }, async (req, reply) => {
    const party = partyOf(req)
    const returnTo = resolveReturnTo((req.query as { return_to?: string }).return_to, config.origin, config.corsOrigins)
    if (returnTo === undefined) throw gatewayError('GW_OIDC_BAD_RETURN_TO')
    return await startAt(party, reply, returnTo)
  })

  /** Send the browser to the IdP, the pending request kept under its `state` (browser and native flows). */
  async function startAt (party: RelyingParty, reply: FastifyReply, returnTo: string, authorize?: AuthorizeRequest): Promise<FastifyReply> {
    const { url, state, pending } = await party.start(returnTo)
    await stateStore.put(`flow:${state}`, JSON.stringify(authorize === undefined ? pending : { ...pending, authorize }), SIGN_IN_TTL_S * 1000)
    reply.setCookie(SIGN_IN_COOKIE, state, { httpOnly: true, secure, sameSite: 'lax', path: SIGN_IN_COOKIE_PATH, maxAge: SIGN_IN_TTL_S })
    reply.header('Cache-Control', 'no-store')
    return reply.redirect(url.href, 302)
  }

  // RFC 8252 §4.1: the app opens this in the system browser; `provider` picks the IdP (optional with one).
  app.get('/oauth/authorize', { logSerializers }, async (req, reply) => {
    noStore(reply)
    const query = new URLSearchParams(req.url.slice(req.url.indexOf('?') + 1 || req.url.length))
    let request: AuthorizeRequest
    try {
      request = native.check(query)
    } catch (err) {
      if (!(err instanceof AuthorizeRefusal)) throw err
      return reply.redirect(redirectWith(err.request.redirectUri, config.issuer, { error: err.error, error_description: err.description, state: err.request.state }), 303)
    }
    const named = query.get('provider') ?? undefined
    const all = parties.list()
    // No choice made: the one provider, else the password page (which links every provider).
    const party = named === undefined ? (all.length === 1 ? all[0] : undefined) : parties.get(named)
    if (party !== undefined) return await startAt(party, reply, `${config.origin}/`, request)
    if (named !== undefined && named !== PASSWORD_PROVIDER) {
      return reply.redirect(redirectWith(request.redirectUri, config.issuer, { error: 'invalid_request', error_description: 'No such identity provider.', state: request.state }), 303)
    }
    const id = randomBytes(PENDING_ID_BYTES).toString('base64url')
    await stateStore.put(`authz:${id}`, JSON.stringify({ request, query: query.toString() }), SIGN_IN_TTL_S * 1000)
    reply.setCookie(PASSWORD_PAGE_COOKIE, id, { httpOnly: true, secure, sameSite: 'strict', path: PASSWORD_PAGE_PATH, maxAge: SIGN_IN_TTL_S })
    return sendPasswordPage(reply, pageFor(request, query))
  })

  /** The page for `request`, with a "Sign in with …" link per provider (the same query, `provider` set). */
  function pageFor (request: AuthorizeRequest, query: URLSearchParams, error?: string): PasswordPage {
    const providers = parties.list().map((p) => {
      const q = new URLSearchParams(query)
      q.set('provider', p.entry.id)
      return { name: p.entry.name, href: `${PASSWORD_PAGE_PATH}?${q.toString()}` }
    })
    return { clientId: request.clientId, providers, ...(error === undefined ? {} : { error }) }
  }

  // The password page's form: a USERS_FILE user signs in, the app gets a code.
  app.post('/oauth/authorize', { logSerializers, preHandler: refuseCrossSite }, async (req, reply) => {
    noStore(reply)
    const id = req.cookies[PASSWORD_PAGE_COOKIE] ?? ''
    const stored = id === '' ? null : await stateStore.take(`authz:${id}`)
    if (stored === null) throw gatewayError('GW_OIDC_STATE')
    const { request, query } = JSON.parse(stored) as { request: AuthorizeRequest, query: string }
    const form = (req.body ?? {}) as Readonly<Record<string, string>>
    const username = typeof form.username === 'string' ? form.username : ''
    const secret = typeof form.password === 'string' ? form.password : ''
    const again = async (): Promise<void> => { await stateStore.put(`authz:${id}`, stored, SIGN_IN_TTL_S * 1000) }
    let user
    try {
      user = username === '' || secret === '' ? null : await checkPassword(password, req, username, secret)
    } catch (err) {
      await again() // over a limit (429): the page may be tried again later
      throw err
    }
    if (user === null) {
      await again()
      return sendPasswordPage(reply, pageFor(request, new URLSearchParams(query), 'Wrong username or password.'), 401)
    }
    reply.setCookie(PASSWORD_PAGE_COOKIE, '', { httpOnly: true, secure, sameSite: 'strict', path: PASSWORD_PAGE_PATH, maxAge: 0, expires: new Date(0) })
    return reply.redirect(await native.issue(request, { userId: user.id, userScope: user.scope }), 303)
  })

  app.get('/auth/oidc/:provider/callback', { logSerializers, schema: { params: providerParams } }, async (req, reply) => {
    const party = partyOf(req)
    noStore(reply)
    clearSignInCookie(reply)
    const query = new URLSearchParams(req.url.slice(req.url.indexOf('?') + 1 || req.url.length))
    const state = query.get('state') ?? ''
    const held = req.cookies[SIGN_IN_COOKIE] ?? ''
    // Wrong browser, or a state not from this browser's last start: refused before anything is spent.
    if (state === '' || held === '' || !sameString(state, held)) throw gatewayError('GW_OIDC_STATE')
    const stored = await stateStore.take(`flow:${state}`)
    if (stored === null) throw gatewayError('GW_OIDC_STATE')
    const pending = JSON.parse(stored) as PendingSignIn
    if (pending.provider !== party.entry.id) throw gatewayError('GW_OIDC_STATE')
    if (pending.authorize !== undefined) {
      const request = pending.authorize
      try {
        return reply.redirect(await answerApp(req, party, query, state, pending, request), 303)
      } catch (err) {
        // The person (or the IdP, or the mapping) said no: the app hears access_denied (RFC 6749 §4.1.2.1).
        if (!isLatchkeyError(err) || (err.code !== 'GW_OIDC_DENIED' && err.code !== 'GW_OIDC_IDP_ERROR')) throw err
        return reply.redirect(redirectWith(request.redirectUri, config.issuer, { error: 'access_denied', state: request.state }), 303)
      }
    }
    const { user, signedIn } = await signInAt(req, party, query, state, pending)
    const idp = parties.bindingFor(party, user.userId, signedIn.idpRefreshToken)
    const { refreshToken, family } = await sessions.createFederated(req, {
      userId: user.userId,
      scope: user.scope,
      provider: party.entry.id,
      seen: { ip: req.ip, userAgent: (req.headers['user-agent'] ?? '').slice(0, USER_AGENT_MAX_CHARS) },
      ...(idp === undefined ? {} : { idp })
    })
    await links.add(party.entry.id, { sub: signedIn.sub, ...(signedIn.idpSid === undefined ? {} : { idpSid: signedIn.idpSid }) },
      { userId: user.userId, sid: family.sid }, config.sessionMaxTtlS * 1000)
    setRefreshCookie(reply, refreshToken, familyRemainingS(family, clock), secure)
    return reply.redirect(pending.returnTo, 303)
  })

  /** The IdP's answer checked and mapped to a latchkey user (both flows); throws on any refusal. */
  async function signInAt (req: FastifyRequest, party: RelyingParty, query: URLSearchParams, state: string, pending: PendingSignIn): Promise<{ user: MappedUser, signedIn: SignedInClaims }> {
    // RFC 6749 §4.1.2.1: the IdP's own refusal. Its code is a short ASCII token; shown, not trusted.
    const idpError = query.get('error')
    if (idpError !== null) {
      const code = /^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$/.test(idpError) ? idpError : 'error'
      throw gatewayError('GW_OIDC_IDP_ERROR', { description: `The identity provider did not sign you in (${code}).` })
    }
    const signedIn = await party.finish(query, state, pending)
    const mapped = mapClaims(party.entry, signedIn.claims)
    if (!mapped.ok) {
      req.log.info({ event: 'oidc_sign_in_refused', provider: party.entry.id, reason: mapped.reason }, 'upstream sign-in refused by the provider mapping')
      throw gatewayError('GW_OIDC_DENIED')
    }
    return { user: mapped.user, signedIn }
  }

  /** A native app's sign-in came back: a one-time code for the app (native-sign-in.ts), no cookie. */
  async function answerApp (req: FastifyRequest, party: RelyingParty, query: URLSearchParams, state: string, pending: PendingSignIn, request: AuthorizeRequest): Promise<string> {
    const { user, signedIn } = await signInAt(req, party, query, state, pending)
    const idp = parties.bindingFor(party, user.userId, signedIn.idpRefreshToken)
    return await native.issue(request, {
      userId: user.userId,
      userScope: user.scope,
      provider: party.entry.id,
      subject: { sub: signedIn.sub, ...(signedIn.idpSid === undefined ? {} : { idpSid: signedIn.idpSid }) },
      ...(idp === undefined ? {} : { idp })
    })
  }

  app.post('/auth/oidc/:provider/backchannel-logout', { schema: { params: providerParams } }, async (req, reply) => {
    const party = partyOf(req)
    noStore(reply)
    const form = (req.body ?? {}) as Readonly<Record<string, string>>
    const logoutToken = typeof form.logout_token === 'string' ? form.logout_token : ''
    if (logoutToken === '') throw gatewayError('GW_OIDC_LOGOUT_TOKEN')
    const request = await party.verifyLogoutToken(logoutToken)
    if (!(await stateStore.once(`jti:${party.entry.id}:${request.jti}`, LOGOUT_JTI_TTL_MS))) throw gatewayError('GW_OIDC_LOGOUT_TOKEN')
    const found = await links.find(party.entry.id, {
      ...(request.sub === undefined ? {} : { sub: request.sub }),
      ...(request.idpSid === undefined ? {} : { idpSid: request.idpSid })
    })
    // Each revocation awaits the edge broadcast: answered 200 only once every replica will refuse.
    for (const link of found) await sessions.revokeSession(link.userId, link.sid, 'backchannel_logout', req)
    return reply.code(200).send()
  })
}

export default fp(oidcRoutes, { name: 'latchkey-oidc-routes', fastify: '5.x', encapsulate: true })
