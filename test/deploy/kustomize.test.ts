/**
 * `kubectl kustomize` (offline: no cluster) over the base, the production overlay with
 * real secret files, and each Redis component: the output validates against the
 * Kubernetes schemas and says what the overlay promises. Skipped without kubectl; the
 * offline checks of k8s.test.ts cover the files themselves.
 */
import { execFile, spawnSync } from 'node:child_process'
import { cpSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parseAllDocuments } from 'yaml'
import { FORWARD_AUTH_HEADER_PREFIX, loadGatewayConfig } from '#gateway/config.js'
import { generatePrivateJwk, loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { FORWARD_AUTH_PATH } from '#gateway/proxy/forward-auth.js'
import { ROOT, asArray, asObj, filesUnder, packageVersion, tempDir, yamlDocs, type Obj } from './helpers.js'
import { validateManifest } from './k8s-models.js'

const hasKubectl = spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore', timeout: 20_000 }).status === 0

function kustomize (dir: string): Promise<Obj[]> {
  return new Promise((resolve, reject) => {
    execFile('kubectl', ['kustomize', dir], { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null) { reject(new Error(`kubectl kustomize ${dir}: ${stderr}`)); return }
      resolve(parseAllDocuments(stdout).map(d => unwrapSecretData(d.toJS() as Obj)))
    })
  })
}

/**
 * kustomize wraps long Secret data at 70 columns. The API server's base64 decoder (Go's)
 * skips newlines; the schema's "byte" format does not, so they go before validating.
 */
function unwrapSecretData (doc: Obj): Obj {
  if (doc.kind !== 'Secret' || doc.data === undefined) return doc
  const data = Object.fromEntries(Object.entries(asObj(doc.data, 'data')).map(([k, v]) => [k, String(v).replace(/\s+/g, '')]))
  return { ...doc, data }
}

const nameOf = (d: Obj): string => String(asObj(d.metadata, 'metadata').name)
const ids = (docs: Obj[]): string[] => docs.map(d => `${String(d.kind)}/${nameOf(d)}`).sort()

/** A copy of k8s/ whose production overlay has real files in secrets/, made with the gateway's own formats. */
async function workspace (t: Parameters<typeof tempDir>[0]): Promise<{ dir: string, keys: string }> {
  const dir = tempDir(t)
  cpSync(join(ROOT, 'k8s'), dir, { recursive: true })
  const secrets = join(dir, 'overlays/production/secrets')
  const keys = JSON.stringify({ keys: [await generatePrivateJwk('EdDSA')] })
  writeFileSync(join(secrets, 'keys.json'), keys)
  writeFileSync(join(secrets, 'users.json'), JSON.stringify({ users: [] }))
  writeFileSync(join(secrets, 'clients.json'), JSON.stringify({ clients: [] }))
  return { dir, keys }
}

t.test('kustomize builds and the output validates', { skip: hasKubectl ? false : 'kubectl not on PATH' }, async t => {
  const { dir, keys } = await workspace(t)

  t.test('the base: every resource in the latchkey namespace', async t => {
    const docs = await kustomize(join(dir, 'base'))
    const files = filesUnder('k8s/base').filter(f => f.endsWith('.yaml') && !f.endsWith('/kustomization.yaml'))
    t.same(ids(docs), ids(files.flatMap(f => yamlDocs(f))), 'exactly the manifests in k8s/base')
    for (const d of docs) {
      t.doesNotThrow(() => { validateManifest(d) }, `${String(d.kind)} ${nameOf(d)}`)
      if (d.kind !== 'Namespace') t.equal(asObj(d.metadata, '').namespace, 'latchkey', `${String(d.kind)} ${nameOf(d)} namespaced`)
    }
  })

  t.test('the production overlay: real secrets, the registry image, the public issuer', async t => {
    const docs = await kustomize(join(dir, 'overlays/production'))
    for (const d of docs) t.doesNotThrow(() => { validateManifest(d) }, `${String(d.kind)} ${nameOf(d)}`)
    t.ok(ids(docs).includes('Ingress/latchkey-gateway'))
    const secret = docs.find(d => d.kind === 'Secret' && nameOf(d) === 'latchkey-signing-keys') as Obj
    t.notOk(secret.stringData, 'the placeholder is gone')
    const data = Buffer.from(String(asObj(secret.data, 'data')['keys.json']), 'base64').toString('utf8')
    t.equal(data, keys, 'the Secret holds the file')
    const file = join(dir, 'check.json')
    writeFileSync(file, data)
    t.ok((await loadSigningKeys(file, { warn: () => {} })).signing.kid, 'which the gateway loads')
    for (const name of ['latchkey-gateway', 'latchkey-resource']) {
      const d = docs.find(x => x.kind === 'Deployment' && nameOf(x) === name) as Obj
      const c = asObj(asArray(asObj(asObj(asObj(d.spec, '').template, '').spec, '').containers, '')[0], '')
      t.equal(c.image, `registry.example.com/latchkey:${packageVersion()}`, `${name}: image from the overlay`)
    }
    const common = docs.find(d => d.kind === 'ConfigMap' && nameOf(d) === 'latchkey-common') as Obj
    t.equal(asObj(common.data, '').ISSUER, 'https://auth.example.com')
    t.equal(asObj(common.data, '').AUDIENCE, 'latchkey-api', 'the rest of the ConfigMap kept')
    const gateway = asObj((docs.find(d => d.kind === 'ConfigMap' && nameOf(d) === 'latchkey-gateway') as Obj).data, '')
    const env = Object.fromEntries(Object.entries({ ...asObj(common.data, ''), ...gateway }).map(([k, v]) => [k, String(v)]))
    t.same(loadGatewayConfig(env).trustedProxies, ['10.0.0.0/8'], 'behind the Ingress: its controller is a trusted proxy')
    t.equal(gateway.REDIS_URL, 'redis://latchkey-redis:6379', 'the rest of the gateway ConfigMap kept')
  })

  t.test('the ingress-forward-auth component: ingress-nginx, Traefik and Envoy all ask /auth/verify', async t => {
    const overlay = join(dir, 'overlays/production/kustomization.yaml')
    const original = readFileSync(overlay, 'utf8')
    t.teardown(() => { writeFileSync(overlay, original) })
    writeFileSync(overlay, `${original}\ncomponents:\n  - ../../components/ingress-forward-auth\n`)
    const docs = await kustomize(join(dir, 'overlays/production'))
    const service = docs.find(d => d.kind === 'Service' && nameOf(d) === 'latchkey-gateway') as Obj
    const port = asObj(asArray(asObj(service.spec, '').ports, '')[0], '').port
    const verifyUrl = `http://latchkey-gateway.latchkey.svc.cluster.local:${String(port)}${FORWARD_AUTH_PATH}`
    const identity = ['User', 'Scope', 'Client-Id', 'Sid'].map(n => `${FORWARD_AUTH_HEADER_PREFIX}${n}`)

    const ingress = docs.find(d => d.kind === 'Ingress' && nameOf(d) === 'my-app') as Obj
    t.doesNotThrow(() => { validateManifest(ingress) }, 'the app Ingress is a valid Ingress')
    const annotations = asObj(asObj(ingress.metadata, '').annotations, '')
    t.equal(annotations['nginx.ingress.kubernetes.io/auth-url'], verifyUrl, 'ingress-nginx asks the gateway Service')
    t.same(String(annotations['nginx.ingress.kubernetes.io/auth-response-headers']).split(','), identity)
    t.match(annotations['nginx.ingress.kubernetes.io/auth-cache-key'], /\$request_method.*\$request_uri.*\$http_authorization/, 'cache key: method + URI + token')
    t.match(annotations['nginx.ingress.kubernetes.io/auth-cache-duration'], /^200 1s$/, 'no longer than the revocation promise')

    const middleware = docs.find(d => d.kind === 'Middleware') as Obj
    t.equal(middleware.apiVersion, 'traefik.io/v1alpha1')
    const forwardAuth = asObj(asObj(middleware.spec, '').forwardAuth, '')
    t.equal(forwardAuth.address, verifyUrl)
    t.equal(forwardAuth.trustForwardHeader, false, 'Traefik sets X-Forwarded-Uri itself')
    t.same(forwardAuth.authResponseHeaders, identity)

    const envoy = yamlDocs('k8s/components/ingress-forward-auth/envoy-ext-authz.yaml')[0] as Obj
    t.equal(envoy.name, 'envoy.filters.http.ext_authz')
    const http = asObj(asObj(envoy.typed_config, '').http_service, '')
    t.equal(http.path_prefix, FORWARD_AUTH_PATH)
    t.equal(`${String(asObj(http.server_uri, '').uri)}${FORWARD_AUTH_PATH}`, verifyUrl)
    t.match(JSON.stringify(http.authorization_response), `"prefix":"${FORWARD_AUTH_HEADER_PREFIX.toLowerCase()}"`)
  })

  for (const [component, kind] of [['redis-sentinel', 'sentinel'], ['redis-cluster', 'cluster']] as const) {
    t.test(`the ${component} component: no Redis StatefulSet, the gateway on ${kind}`, async t => {
      const overlay = join(dir, 'overlays/production/kustomization.yaml')
      const original = readFileSync(overlay, 'utf8')
      t.teardown(() => { writeFileSync(overlay, original) })
      writeFileSync(overlay, `${original}\ncomponents:\n  - ../../components/${component}\n`)
      const docs = await kustomize(join(dir, 'overlays/production'))
      for (const d of docs) t.doesNotThrow(() => { validateManifest(d) }, `${String(d.kind)} ${nameOf(d)}`)
      const gone = ['StatefulSet/latchkey-redis', 'Service/latchkey-redis', 'NetworkPolicy/latchkey-redis']
      for (const id of gone) t.notOk(ids(docs).includes(id), `${id} removed`)
      const env = (name: string): Record<string, string> =>
        Object.fromEntries(Object.entries(asObj((docs.find(d => d.kind === 'ConfigMap' && nameOf(d) === name) as Obj).data, '')).map(([k, v]) => [k, String(v)]))
      const config = loadGatewayConfig({ ...env('latchkey-common'), ...env('latchkey-gateway') })
      t.equal(config.redis.kind, kind)
    })
  }
})
