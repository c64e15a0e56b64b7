import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { createRemoteJWKSet, errors, jwtVerify } from 'jose'
import { classifyJoseError } from '#shared/jose-errors.js'

t.test('jose error classes map by code', async t => {
  t.equal(classifyJoseError(new errors.JWTExpired('x', {})), 'expired')
  t.equal(classifyJoseError(new errors.JWKSNoMatchingKey()), 'unknown_key')
  t.equal(classifyJoseError(new errors.JWKSTimeout()), 'unavailable')
  t.equal(classifyJoseError(new errors.JWKSInvalid()), 'unavailable')
  t.equal(classifyJoseError(new errors.JOSEError('Expected 200 OK from the JSON Web Key Set HTTP response')), 'unavailable')
  for (const err of [
    new errors.JWSSignatureVerificationFailed(), new errors.JWTClaimValidationFailed('x', {}), new errors.JWSInvalid(),
    new errors.JWTInvalid(), new errors.JOSEAlgNotAllowed(), new errors.JOSENotSupported(), new errors.JWKInvalid()
  ]) t.equal(classifyJoseError(err), 'invalid', err.code)
})

t.test('non-jose errors: invalid unless the network failed', async t => {
  t.equal(classifyJoseError(new TypeError('Cannot read properties of undefined')), 'invalid')
  t.equal(classifyJoseError('a string'), 'invalid')
  t.equal(classifyJoseError(null), 'invalid')
  t.equal(classifyJoseError(Object.assign(new Error('connect'), { code: 'ECONNREFUSED' })), 'unavailable')
  t.equal(classifyJoseError(new TypeError('fetch failed', { cause: Object.assign(new Error('x'), { code: 'ENOTFOUND' }) })), 'unavailable')
  t.equal(classifyJoseError(Object.assign(new Error('aborted'), { name: 'AbortError' })), 'unavailable')
  t.equal(classifyJoseError(new Error('wrapped', { cause: new Error('inner', { cause: Object.assign(new Error('s'), { code: 'ECONNRESET' }) }) })), 'unavailable')
})

t.test('what createRemoteJWKSet really throws when the JWKS is down or broken', async t => {
  // A port that was just free: nothing listens there.
  const probe = createServer()
  await new Promise<void>(resolve => probe.listen(0, '127.0.0.1', resolve))
  const port = (probe.address() as AddressInfo).port
  await new Promise<void>(resolve => probe.close(() => resolve()))
  const token = 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJ1In0.c2ln'
  const refused = await jwtVerify(token, createRemoteJWKSet(new URL(`http://127.0.0.1:${port}/jwks`))).catch((e: unknown) => e)
  t.equal(classifyJoseError(refused), 'unavailable', 'connection refused')

  const server = createServer((req, res) => {
    if (req.url === '/500') { res.statusCode = 500; res.end('oops'); return }
    if (req.url === '/garbage') { res.setHeader('content-type', 'application/json'); res.end('{not json'); return }
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ keys: [] }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.equal(classifyJoseError(await jwtVerify(token, createRemoteJWKSet(new URL(`${base}/500`))).catch((e: unknown) => e)), 'unavailable', '500')
  t.equal(classifyJoseError(await jwtVerify(token, createRemoteJWKSet(new URL(`${base}/garbage`))).catch((e: unknown) => e)), 'unavailable', 'not JSON')
  t.equal(classifyJoseError(await jwtVerify(token, createRemoteJWKSet(new URL(`${base}/empty`))).catch((e: unknown) => e)), 'unknown_key', 'kid not in the set')
})
