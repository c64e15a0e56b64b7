/**
 * Admission: the one function that decides whether a request may enter a route of the
 * `ROUTES_FILE` table. The proxy's Fastify gate, its fast lane and forward-auth
 * (`/auth/verify`) all call `Admission.decide`; none of them checks anything itself.
 *
 * The steps, in order, each refusing with its own answer:
 * 1. path: the request path is normalised (path.ts) and routed by longest prefix; the raw
 *    path must fall under the same route as the normalised one (`/api/../auth`,
 *    `/api/x/../admin/y` are refused 400, never re-routed); a path under no route is
 *    `no_route` (the caller's 404, or forward-auth's 403);
 * 2. token: the shared verifier (signature, iss, typ, exp, claims; cache first);
 * 3. edge revocation: inside the verifier, on cache hits too (401 `invalid_token`);
 * 4. audience: the route's (401 `invalid_token`, RFC 9068 §4);
 * 5. scopes: the route's (403 `insufficient_scope`, RFC 6750 §3.1).
 *
 * `decide` answers synchronously whenever it can (the token already in the verified-token
 * cache), and returns a promise only when it must verify a signature: the fast lane asks
 * with `cachedOnly` and takes only what is decided at once, so the lane and the gate can
 * never disagree — they run the same code.
 */
import { type AccessRequirement, type AccessToken, type AccessTokenVerifier, meets } from '#shared/access-token-verifier.js'
import { isLatchkeyError, type LatchkeyError } from '#shared/errors.js'
import { gatewayError } from '../errors.js'
import { normalisePath, routeFor, splitTarget } from './path.js'

/** What admission needs to know of a route. */
export interface AdmissionRoute {
  readonly prefix: string
  readonly requirement: Required<Pick<AccessRequirement, 'audience' | 'scopes'>>
  /** Metric and log label: the configured prefix (bounded), never the request path. */
  readonly label: string
}

export type Decision<R extends AdmissionRoute> =
  /** `target` is the normalised path plus the untouched query: what goes upstream. */
  | { readonly outcome: 'admitted', readonly route: R, readonly token: AccessToken, readonly target: string }
  | { readonly outcome: 'refused', readonly route: R | undefined, readonly error: LatchkeyError, readonly reason: string }
  | { readonly outcome: 'no_route' }
  /** Only with `cachedOnly`: deciding needs a signature check (or must explain a refusal). */
  | { readonly outcome: 'undecided' }

const NO_ROUTE = Object.freeze({ outcome: 'no_route' as const })
const UNDECIDED = Object.freeze({ outcome: 'undecided' as const })

export interface AdmissionOptions<R extends AdmissionRoute> {
  readonly verifier: AccessTokenVerifier
  /** The current route table, asked per decision (it may be replaced at run time). */
  readonly routes: () => readonly R[]
}

export class Admission<R extends AdmissionRoute> {
  readonly verifier: AccessTokenVerifier
  readonly #routes: () => readonly R[]

  constructor (options: AdmissionOptions<R>) {
    this.verifier = options.verifier
    this.#routes = options.routes
  }

  /**
   * Decide `target` (origin-form path and query) with `authorization` (the header value).
   * With `cachedOnly`, anything that cannot be admitted at once is `undecided`.
   */
  decide (target: string, authorization: string | undefined, cachedOnly = false): Decision<R> | Promise<Decision<R>> {
    const routes = this.#routes()
    const { path, query } = splitTarget(target)
    const normalised = normalisePath(path)
    const rawRoute = routeFor(routes, path)
    if (!normalised.ok) {
      if (cachedOnly) return UNDECIDED
      return rawRoute === undefined ? NO_ROUTE : this.#pathRefused(rawRoute, normalised.reason)
    }
    const route = normalised.path === path ? rawRoute : routeFor(routes, normalised.path)
    if (route === undefined && rawRoute === undefined) return NO_ROUTE
    if (route !== rawRoute || route === undefined) return cachedOnly ? UNDECIDED : this.#pathRefused(rawRoute, 'leaves_prefix')
    const upstreamTarget = normalised.path + query

    const cached = this.verifier.cachedAuthorization(authorization)
    if (cached !== undefined) {
      if (meets(cached, route.requirement)) return { outcome: 'admitted', route, token: cached, target: upstreamTarget }
      return cachedOnly ? UNDECIDED : this.#authorize(route, cached, upstreamTarget)
    }
    if (cachedOnly) return UNDECIDED
    return this.verifier.verifyAuthorization(authorization).then(
      token => this.#authorize(route, token, upstreamTarget),
      (err: unknown) => refusal(route, err, 'token')
    )
  }

  #authorize (route: R, token: AccessToken, target: string): Decision<R> {
    try {
      this.verifier.authorize(token, route.requirement)
    } catch (err) {
      return refusal(route, err, 'requirement')
    }
    return { outcome: 'admitted', route, token, target }
  }

  #pathRefused (route: R | undefined, reason: string): Decision<R> {
    return { outcome: 'refused', route, error: gatewayError('GW_PROXY_PATH_NOT_ALLOWED'), reason }
  }
}

function refusal<R extends AdmissionRoute> (route: R, err: unknown, reason: string): Decision<R> {
  if (!isLatchkeyError(err)) throw err
  return { outcome: 'refused', route, error: err, reason: `${reason}:${err.code}` }
}
