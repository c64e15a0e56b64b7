/**
 * Peer: where the traced gateway row (bench/run.ts, "tracing on") exports its spans. Accepts
 * OTLP/HTTP `POST /v1/traces`, reads and drops the body, answers 200 — a collector that
 * costs nothing, so the row measures only what the gateway itself spends on tracing.
 * It counts what it received, for the bench's log (`GET /stats`), so a row that exported
 * nothing cannot pass for a traced one.
 */
import http from 'node:http'
import { listenAndAnnounce } from './env.js'

let exports = 0
let bytes = 0
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && (req.url === '/healthz' || req.url === '/stats')) {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ exports, bytes }))
    return
  }
  req.on('data', (chunk: Buffer) => { bytes += chunk.length })
  req.on('end', () => {
    if (req.method === 'POST' && req.url === '/v1/traces') exports++
    res.writeHead(req.method === 'POST' ? 200 : 404, { 'content-type': 'application/json' })
    res.end('{}')
  })
})
server.keepAliveTimeout = 72_000
listenAndAnnounce(server)
