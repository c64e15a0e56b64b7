/**
 * Peer: a plain @fastify/http-proxy (on undici, via @fastify/reply-from) with no auth,
 * mounted on /api/ like the gateway's default route, in front of the same resource.
 * Logging as the gateway's (pino at warn), so the framework's per-request cost is alike.
 */
import Fastify from 'fastify'
import proxy from '@fastify/http-proxy'
import { host, port, requiredEnv } from './env.js'

const app = Fastify({ logger: { level: 'warn' }, keepAliveTimeout: 72_000 })
app.get('/healthz', async () => ({ status: 'ok' }))
await app.register(proxy, { upstream: requiredEnv('UPSTREAM'), prefix: '/api', rewritePrefix: '/api' })
await app.listen({ port: port(), host: host() })
process.stdout.write(`listening on ${host()}:${port()}\n`)
process.once('SIGTERM', () => { void app.close().then(() => process.exit(0)) })
