/**
 * The request's logger is pino's child for the request, made when a line is first written
 * at an enabled level: the lines are those of an eager child (bindings, redaction, level).
 */
import { Writable } from 'node:stream'
import t from 'tap'
import Fastify from 'fastify'
import { pino, type Logger } from 'pino'
import { lazyRequestLogger } from '#gateway/ops/request-logger.js'

interface Captured { parent: Logger, lines: Array<Record<string, unknown>>, children: () => number }

/** A pino logger writing into `lines`, redacting as the gateway does, counting the children made of it. */
function capture (level: string): Captured {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk: Buffer, _enc, done) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); done() } })
  const parent = pino({ level, redact: { paths: ['*.password'], censor: '[redacted]' } }, stream)
  let made = 0
  const child = parent.child
  // pino's children inherit this method: it counts theirs too, and keeps each call's `this`.
  parent.child = function (this: Logger, ...args: Parameters<Logger['child']>) {
    made++
    return child.apply(this, args)
  } as Logger['child']
  return { parent, lines, children: () => made }
}

const flush = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }
const fastify = Fastify()
t.teardown(async () => { await fastify.close() })

t.test('nothing at an enabled level: no child is made; the first line makes it, bound to the request', async t => {
  const { parent, lines, children } = capture('warn')
  const log = lazyRequestLogger.call(fastify, parent, { reqId: 'r-1' }, {}, undefined as never)
  t.equal(log.level, 'warn', 'the parent\'s level')
  log.info({ req: { url: '/oauth/token' } }, 'incoming request')
  log.debug('detail')
  log.trace('detail')
  t.equal(children(), 0, 'no child for lines below the level')
  log.warn({ event: 'x', body: { password: 'hunter2' } }, 'something')
  log.error('and more')
  await flush()
  t.equal(children(), 1, 'one child, made by the first line written')
  t.equal(lines.length, 2)
  t.match(lines[0], { level: 40, reqId: 'r-1', event: 'x', msg: 'something' })
  t.same((lines[0] as { body: unknown }).body, { password: '[redacted]' }, 'redaction applies as to any child')
  t.match(lines[1], { level: 50, reqId: 'r-1', msg: 'and more' })
})

t.test('a level set on the request logger, a route level, and children of it behave as pino\'s', async t => {
  const { parent, lines, children } = capture('warn')
  const log = lazyRequestLogger.call(fastify, parent, { reqId: 'r-2' }, {}, undefined as never)
  log.level = 'info'
  t.equal(children(), 1, 'setting a level makes the child')
  t.equal(parent.level, 'warn', 'the parent keeps its own')
  log.info('now written')
  log.child({ step: 'inner' }).info('from a child')
  t.equal(children(), 2, 'a child of the request logger is a child of its child')
  const routeLevel = lazyRequestLogger.call(fastify, parent, { reqId: 'r-3' }, { level: 'debug' }, undefined as never)
  t.equal(children(), 3, 'a route with a level of its own gets its child at once')
  t.equal(routeLevel.level, 'debug')
  routeLevel.debug('route debug')
  await flush()
  t.match(lines, [
    { level: 30, reqId: 'r-2', msg: 'now written' },
    { level: 30, reqId: 'r-2', step: 'inner', msg: 'from a child' },
    { level: 20, reqId: 'r-3', msg: 'route debug' }
  ])
})

t.test('Fastify takes it as the request logger', async t => {
  const { parent, lines, children } = capture('warn')
  const app = Fastify({ loggerInstance: parent, childLoggerFactory: lazyRequestLogger, genReqId: () => 'fixed-id' })
  t.teardown(async () => { await app.close() })
  app.get('/quiet', async () => ({ ok: true }))
  app.get('/loud', async (req) => { req.log.warn('look'); return { ok: true } })
  await app.ready()
  const atStart = children()
  t.equal((await app.inject('/quiet')).statusCode, 200)
  t.equal(children(), atStart, 'a request that writes nothing at warn makes no child')
  t.equal((await app.inject('/loud')).statusCode, 200)
  await flush()
  t.equal(children(), atStart + 1)
  t.match(lines, [{ level: 40, reqId: 'fixed-id', msg: 'look' }])
})
