/**
 * Peer: a plain http-proxy reverse proxy with no auth, in front of the same resource: the
 * most used Node reverse proxy library, over Node's own `http.request` and a keep-alive agent
 * (256 sockets, 64 idle, LIFO). The gateway forwarded with it until 2026-12-04; it now
 * forwards with undici (services/gateway/src/proxy/forwarder.ts), as the
 * @fastify/http-proxy peer does. Everything is proxied, /healthz included (readiness of the peer).
 */
import http from 'node:http'
import httpProxy from 'http-proxy'
import { listenAndAnnounce, requiredEnv } from './env.js'

const upstream = requiredEnv('UPSTREAM')
const agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo' })
const proxy = httpProxy.createProxyServer({ target: upstream, agent, xfwd: true })
proxy.on('error', (_err, _req, res) => {
  if (res instanceof http.ServerResponse && !res.headersSent) {
    res.writeHead(502, { 'content-type': 'application/json' })
    res.end('{"error":"bad_gateway"}')
  } else {
    res.destroy()
  }
})

const server = http.createServer((req, res) => { proxy.web(req, res) })
server.keepAliveTimeout = 72_000
listenAndAnnounce(server)
