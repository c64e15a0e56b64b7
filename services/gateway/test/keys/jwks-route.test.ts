import { join } from 'node:path'
import Fastify from 'fastify'
import t from 'tap'
import jwksRoute, { JWKS_MAX_AGE_S, JWKS_PATH } from '#gateway/keys/jwks-route.js'
import { loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { PRIVATE_MEMBERS, generateKeyFile, readKeys, tempDir } from './helpers.js'

t.test('GET /.well-known/jwks.json serves the public keys, cacheable', async t => {
  const file = join(tempDir(t), 'keys.json')
  await generateKeyFile(file, 'EdDSA')
  await generateKeyFile(file, 'RS256', '--append')
  await generateKeyFile(file, 'ES256', '--append')
  const keys = await loadSigningKeys(file, { warn: () => {} })

  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(jwksRoute, { keys })
  // fastify-plugin: the route is not encapsulated away from the root, and the name is registered.
  await app.ready()
  t.ok(app.hasPlugin('latchkey-jwks'))
  t.equal(JWKS_PATH, '/.well-known/jwks.json')

  const res = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], `public, max-age=${JWKS_MAX_AGE_S}`)
  t.equal(res.headers['cache-control'], 'public, max-age=300')
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  const body = res.json() as { keys: Array<Record<string, unknown>> }
  t.same(Object.keys(body), ['keys'])
  t.same(body, JSON.parse(JSON.stringify(keys.publicJwks)), 'exactly publicJwks')
  t.same(body.keys.map(k => k.kid), readKeys(file).map(k => k.kid), 'every key, in file order')
  for (const k of body.keys) {
    t.equal(k.use, 'sig')
    t.ok(['EdDSA', 'RS256', 'ES256'].includes(k.alg as string))
    for (const m of PRIVATE_MEMBERS) t.notOk(m in k, `${String(k.alg)}: no ${m}`)
  }
  for (const k of readKeys(file)) t.notOk(res.body.includes(k.d as string), 'no private exponent anywhere in the body')

  const head = await app.inject({ method: 'HEAD', url: '/.well-known/jwks.json' })
  t.equal(head.statusCode, 200)
  const post = await app.inject({ method: 'POST', url: '/.well-known/jwks.json' })
  t.equal(post.statusCode, 404)
})
