import { type IncomingMessage, type ServerResponse, createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { ManualClock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { SERVICE_TOKEN_REFRESH_MARGIN_S, ServiceTokenSource } from '#shared/service-token-source.js'

const SECRET = 's3cr3t:with/odd&chars'

interface Seen { authorization: string | undefined, contentType: string | undefined, body: string }

/** A fake token endpoint: records what it receives, answers what `respond` says. */
async function tokenEndpoint (t: Test): Promise<{ url: string, seen: Seen[], respond: (res: ServerResponse, n: number) => void }> {
  const seen: Seen[] = []
  const state = {
    respond: (res: ServerResponse, n: number): void => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(JSON.stringify({ access_token: `token-${n}`, token_type: 'Bearer', expires_in: 300 }))
    }
  }
  const server = createServer((req: IncomingMessage, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => {
      seen.push({ authorization: req.headers.authorization, contentType: req.headers['content-type'], body })
      // Answer a little later so that concurrent callers really overlap.
      setImmediate(() => state.respond(res, seen.length))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/oauth/token`,
    seen,
    set respond (fn) { state.respond = fn },
    get respond () { return state.respond }
  }
}

function source (url: string, clock: ManualClock, extra: { scope?: string } = {}): ServiceTokenSource {
  return new ServiceTokenSource({ tokenUrl: url, clientId: 'reporting svc', clientSecret: SECRET, audience: 'latchkey-api', clock, ...extra })
}

t.test('client_credentials request per RFC 6749 §4.4 with HTTP Basic (§2.3.1)', async (t) => {
  const endpoint = await tokenEndpoint(t)
  const tokens = source(endpoint.url, new ManualClock(), { scope: 'internal:read notes:read' })
  t.equal(await tokens.getToken(), 'token-1')
  const [req] = endpoint.seen
  t.equal(req?.contentType, 'application/x-www-form-urlencoded')
  // id and secret are form-urlencoded, then joined and base64'd.
  t.equal(req?.authorization, `Basic ${Buffer.from('reporting+svc:s3cr3t%3Awith%2Fodd%26chars').toString('base64')}`)
  const form = new URLSearchParams(req?.body)
  t.same(Object.fromEntries(form), { grant_type: 'client_credentials', audience: 'latchkey-api', scope: 'internal:read notes:read' })
  t.notOk(req?.body.includes('s3cr3t'), 'the secret is not in the body')
})

t.test('100 concurrent callers → one token request', async (t) => {
  const endpoint = await tokenEndpoint(t)
  const tokens = source(endpoint.url, new ManualClock())
  const got = await Promise.all(Array.from({ length: 100 }, () => tokens.getToken()))
  t.equal(endpoint.seen.length, 1)
  t.same(new Set(got), new Set(['token-1']))
})

t.test('cached until the refresh margin before expiry', async (t) => {
  const endpoint = await tokenEndpoint(t)
  const clock = new ManualClock()
  const tokens = source(endpoint.url, clock)
  t.equal(await tokens.getToken(), 'token-1')
  clock.advance((300 - SERVICE_TOKEN_REFRESH_MARGIN_S) * 1000 - 1)
  t.equal(await tokens.getToken(), 'token-1', 'just before the margin: cached')
  t.equal(endpoint.seen.length, 1)
  clock.advance(1)
  t.equal(await tokens.getToken(), 'token-2', 'at the margin: a new one')
  t.equal(endpoint.seen.length, 2)
  tokens.invalidate()
  t.equal(await tokens.getToken(), 'token-3', 'invalidate() forces a new one')
})

t.test('a short-lived token is refreshed at half its lifetime', async (t) => {
  const endpoint = await tokenEndpoint(t)
  endpoint.respond = (res, n) => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: `t${n}`, token_type: 'bearer', expires_in: 20 })) }
  const clock = new ManualClock()
  const tokens = source(endpoint.url, clock)
  t.equal(await tokens.getToken(), 't1')
  clock.advance(9_999)
  t.equal(await tokens.getToken(), 't1')
  clock.advance(1)
  t.equal(await tokens.getToken(), 't2')
})

async function codeOf (p: Promise<unknown>): Promise<{ code: string, message: string }> {
  try {
    await p
  } catch (err) {
    if (isLatchkeyError(err)) return { code: err.code, message: `${err.message} ${err.description}` }
    throw err
  }
  throw new Error('expected a failure')
}

t.test('failures have stable codes and never carry the secret; a failure is not cached', async (t) => {
  const endpoint = await tokenEndpoint(t)
  const clock = new ManualClock()
  const tokens = source(endpoint.url, clock)

  endpoint.respond = (res) => { res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid_client","error_description":"bad secret"}') }
  const rejected = await Promise.all(Array.from({ length: 10 }, () => codeOf(tokens.getToken())))
  t.equal(endpoint.seen.length, 1, 'concurrent callers share the failure too')
  t.equal(rejected[0]?.code, 'ST_REJECTED')
  t.match(rejected[0]?.message, /invalid_client/)
  t.notMatch(rejected[0]?.message, /s3cr3t/)

  endpoint.respond = (res) => { res.writeHead(503).end() }
  t.equal((await codeOf(tokens.getToken())).code, 'ST_UNAVAILABLE')
  endpoint.respond = (res) => { res.writeHead(200, { 'content-type': 'application/json' }).end('{"access_token":"x","token_type":"mac","expires_in":300}') }
  t.equal((await codeOf(tokens.getToken())).code, 'ST_BAD_RESPONSE', 'not a bearer token')
  endpoint.respond = (res) => { res.writeHead(200, { 'content-type': 'application/json' }).end('{') }
  t.equal((await codeOf(tokens.getToken())).code, 'ST_BAD_RESPONSE', 'not JSON')
  endpoint.respond = (res) => { res.writeHead(200, { 'content-type': 'application/json' }).end('{"access_token":"x","token_type":"Bearer"}') }
  t.equal((await codeOf(tokens.getToken())).code, 'ST_BAD_RESPONSE', 'no expires_in')

  endpoint.respond = (res, n) => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: `ok-${n}`, token_type: 'Bearer', expires_in: 300 })) }
  t.match(await tokens.getToken(), /^ok-/, 'the next call after a failure tries again')
})

t.test('an unreachable endpoint → ST_UNAVAILABLE', async (t) => {
  const endpoint = await tokenEndpoint(t)
  const url = endpoint.url
  const tokens = new ServiceTokenSource({ tokenUrl: url.replace(/:\d+\//, ':1/'), clientId: 'svc', clientSecret: SECRET, audience: 'a' })
  const failure = await codeOf(tokens.getToken())
  t.equal(failure.code, 'ST_UNAVAILABLE')
  t.notMatch(failure.message, /s3cr3t/)
})

t.test('a slow endpoint times out → ST_UNAVAILABLE', async (t) => {
  const endpoint = await tokenEndpoint(t)
  endpoint.respond = () => { /* never answers */ }
  const tokens = new ServiceTokenSource({ tokenUrl: endpoint.url, clientId: 'svc', clientSecret: SECRET, audience: 'a', timeoutMs: 200 })
  t.equal((await codeOf(tokens.getToken())).code, 'ST_UNAVAILABLE')
})
