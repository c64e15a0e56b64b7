/**
 * The proxy's fast lane: the HTTP server's request listener, in front of Fastify's router.
 * app.ts installs it with Fastify's `serverFactory`; the proxy plugin attaches what the lane
 * runs (`take`), which asks the same admission function as the Fastify gate
 * (admission.ts, `cachedOnly`) and forwards through the same code.
 *
 * Trade-offs (why it exists, what it costs):
 * - Gain: a request whose token is already in the verified-token cache, on a path that is
 *   admitted at once, skips Fastify's request, reply and child-logger objects and its hook
 *   chain; that lifecycle cost more CPU than the proxy hop itself (README "Performance").
 * - Cost: app-level hooks (onRequest, onResponse, onSend ...) do not run for lane requests.
 *   Anything that must hold for every proxied request belongs in admission or in the
 *   forwarder, never in a hook. The lane writes Fastify's "incoming request" and "request
 *   completed" (status, duration) lines itself, so the access log is the same either way.
 * - The lane never answers anything itself: a request it does not take (no token, a token
 *   not seen before, any refusal, an Upgrade header, the app closing) goes to Fastify's
 *   routing unchanged, and the gate decides and explains.
 * - Without `serverFactory` (tests that build a bare Fastify) there is no lane, and every
 *   request takes the gate; behaviour is the same, only slower.
 */
import http, { type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

export type LaneTake = (req: IncomingMessage, res: ServerResponse) => boolean

/** The Fastify options the server honours when Fastify builds it itself (fastify/lib/server.js). */
export interface LaneServerOptions {
  readonly keepAliveTimeout?: number
  readonly requestTimeout?: number
  readonly connectionTimeout?: number
}

/** The response a connection owes, or last owed: see `closeIfIdle`. */
const RESPONSE = Symbol('latchkey.response')
type TrackedSocket = Socket & { [RESPONSE]?: ServerResponse }

/**
 * The server's inactivity timeout (Fastify's `connectionTimeout`) ends connections that
 * stay silent: one opened and never used, or a client gone quiet. Node's default would also
 * end a connection whose request the gateway is still working on (a slow upstream, a login
 * queued for its password hash), hanging up without a status: a proxied request slower
 * than the timeout never reached its own 504 (PROXY_TIMEOUT_MS), and a login could succeed
 * without its client ever receiving the cookie. A connection that owes a response is left
 * alone here: its request has arrived, and what the gateway does with it is bounded by the
 * deadlines made for that (the proxy's upstream timeout, the password-hash queue).
 */
function closeIfIdle (socket: Socket): void {
  const owed = (socket as TrackedSocket)[RESPONSE]
  // Owed: the whole request arrived and its answer is not finished. A client silent in the
  // middle of its own body is a slow client, and is cut as before.
  if (owed !== undefined && owed.req.complete && !owed.writableFinished && !owed.destroyed) return
  socket.destroy()
}

export class FastLane {
  #take: LaneTake | undefined

  /** For Fastify's `serverFactory`: an HTTP/1.1 server whose listener tries the lane first. */
  readonly serverFactory = (fastify: RequestListener, options: LaneServerOptions): Server => {
    const server = http.createServer((req, res) => {
      (req.socket as TrackedSocket)[RESPONSE] = res
      const take = this.#take
      if (take === undefined || !take(req, res)) fastify(req, res)
    })
    // What Fastify would set on a server of its own.
    if (options.keepAliveTimeout !== undefined) server.keepAliveTimeout = options.keepAliveTimeout
    if (options.requestTimeout !== undefined) server.requestTimeout = options.requestTimeout
    if (options.connectionTimeout !== undefined && options.connectionTimeout > 0) {
      server.setTimeout(options.connectionTimeout)
      // With a listener, Node leaves the decision to it (node:_http_server socketOnTimeout).
      server.on('timeout', closeIfIdle)
    }
    return server
  }

  /** The proxy plugin's lane; one at a time. */
  attach (take: LaneTake): void {
    if (this.#take !== undefined) throw new Error('the fast lane is already attached')
    this.#take = take
  }

  detach (): void {
    this.#take = undefined
  }
}
