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

export type LaneTake = (req: IncomingMessage, res: ServerResponse) => boolean

/** The Fastify options the server honours when Fastify builds it itself (fastify/lib/server.js). */
export interface LaneServerOptions {
  readonly keepAliveTimeout?: number
  readonly requestTimeout?: number
  readonly connectionTimeout?: number
}

export class FastLane {
  #take: LaneTake | undefined

  /** For Fastify's `serverFactory`: an HTTP/1.1 server whose listener tries the lane first. */
  readonly serverFactory = (fastify: RequestListener, options: LaneServerOptions): Server => {
    const server = http.createServer((req, res) => {
      const take = this.#take
      if (take === undefined || !take(req, res)) fastify(req, res)
    })
    // What Fastify would set on a server of its own.
    if (options.keepAliveTimeout !== undefined) server.keepAliveTimeout = options.keepAliveTimeout
    if (options.requestTimeout !== undefined) server.requestTimeout = options.requestTimeout
    if (options.connectionTimeout !== undefined) server.setTimeout(options.connectionTimeout)
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
