/**
 * k8s/: every manifest against its Kubernetes OpenAPI schema (kubernetes-models), the
 * kustomizations against the files they name, and the manifests against the code: image,
 * subcommands, ports, probe paths, environment names and values, drain time, secrets.
 * Offline: no cluster, no kubectl (kustomize.test.ts builds them when kubectl is there).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, normalize } from 'node:path'
import t from 'tap'
import { parse as parseYaml } from 'yaml'
import { ConfigError } from '#shared/errors.js'
import { loadGatewayConfig, PORT as GATEWAY_PORT } from '#gateway/config.js'
import { JWKS_PATH } from '#gateway/keys/jwks-route.js'
import { loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { loadResourceConfig, PORT as RESOURCE_PORT } from '#resource/config.js'
import {
  GATEWAY_ENV, GATEWAY_SHUTDOWN_GRACE_S, RESOURCE_ENV, RESOURCE_SHUTDOWN_GRACE_S, ROOT, asArray, asObj,
  cliSubcommands, filesUnder, packageVersion, read, yamlDocs, type Obj
} from './helpers.js'
import { KUSTOMIZE_KINDS, kindKey, validateManifest } from './k8s-models.js'

/** Not Kubernetes resources: an Envoy HTTP filter to paste into Envoy's config (checked in kustomize.test.ts). */
const SNIPPETS: ReadonlySet<string> = new Set(['k8s/components/ingress-forward-auth/envoy-ext-authz.yaml'])
const YAML_FILES = filesUnder('k8s').filter(f => f.endsWith('.yaml') && !SNIPPETS.has(f))
const nameOf = (d: Obj): string => String(asObj(d.metadata, 'metadata').name)

const BASE = 'k8s/base'
const base: Obj[] = YAML_FILES.filter(f => f.startsWith(`${BASE}/`) && !f.endsWith('/kustomization.yaml')).flatMap(f => yamlDocs(f))
function find (kind: string, name: string, docs: Obj[] = base): Obj {
  const doc = docs.find(d => d.kind === kind && nameOf(d) === name)
  if (doc === undefined) throw new Error(`no ${kind} ${name}`)
  return doc
}
const podSpec = (workload: Obj): Obj => asObj(asObj(asObj(workload.spec, 'spec').template, 'template').spec, 'pod spec')
const podLabels = (workload: Obj): Obj => asObj(asObj(asObj(asObj(workload.spec, 'spec').template, 'template').metadata, 'template.metadata').labels, 'labels')
const containerOf = (workload: Obj): Obj => asObj(asArray(podSpec(workload).containers, 'containers')[0], 'container')
const configData = (name: string, docs: Obj[] = base): Record<string, string> => {
  const data = asObj(find('ConfigMap', name, docs).data, `${name}.data`)
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, String(v)]))
}
const matches = (selector: unknown, labels: Obj): boolean =>
  Object.entries(asObj(selector, 'selector')).every(([k, v]) => labels[k] === v)

/** The environment a workload's container sees: its envFrom ConfigMaps, in order, then env. */
function containerEnv (workload: Obj, docs: Obj[] = base): Record<string, string> {
  const c = containerOf(workload)
  const env: Record<string, string> = {}
  for (const source of asArray(c.envFrom ?? [], 'envFrom').map(s => asObj(s, 'envFrom'))) {
    if (source.configMapRef !== undefined) Object.assign(env, configData(String(asObj(source.configMapRef, '').name), docs))
  }
  for (const e of asArray(c.env ?? [], 'env').map(s => asObj(s, 'env'))) env[String(e.name)] = String(e.value)
  return env
}

const gateway = find('Deployment', 'latchkey-gateway')
const resource = find('Deployment', 'latchkey-resource')
const redis = find('StatefulSet', 'latchkey-redis')

t.test('every manifest under k8s/ validates against its Kubernetes schema', async t => {
  t.ok(YAML_FILES.length >= 15, `${YAML_FILES.length} files`)
  for (const file of YAML_FILES) {
    for (const doc of yamlDocs(file)) {
      if (KUSTOMIZE_KINDS.has(kindKey(doc))) continue
      t.doesNotThrow(() => { validateManifest(doc) }, `${file}: ${String(doc.kind)} ${nameOf(doc)}`)
    }
  }
  // The schemas catch real mistakes (they do not reject unknown fields: the explicit
  // checks below cover the fields that matter).
  const mistakes: Array<[string, (d: Obj) => void]> = [
    ['a named containerPort', d => { asArray(containerOf(d).ports, '')[0] = { containerPort: 'http' } }],
    ['replicas as text', d => { asObj(d.spec, '').replicas = 'two' }],
    ['a container without image name', d => { delete containerOf(d).name }],
    ['a probe port of the wrong type', d => { asObj(asObj(containerOf(d).readinessProbe, '').httpGet, '').port = true }]
  ]
  for (const [what, mutate] of mistakes) {
    const copy = structuredClone(gateway)
    mutate(copy)
    t.throws(() => { validateManifest(copy) }, `rejects ${what}`)
  }
})

t.test('kustomizations name files that exist, and the base lists every manifest', async t => {
  for (const file of YAML_FILES.filter(f => f.endsWith('/kustomization.yaml'))) {
    const [k] = yamlDocs(file)
    const dir = dirname(file)
    t.ok(k !== undefined && KUSTOMIZE_KINDS.has(kindKey(k)), `${file}: ${String(k?.kind)}`)
    for (const r of asArray(k?.resources ?? [], 'resources').map(String)) t.ok(existsSync(join(ROOT, dir, r)), `${file}: resource ${r} exists`)
    for (const c of asArray(k?.components ?? [], 'components').map(String)) t.ok(existsSync(join(ROOT, dir, c, 'kustomization.yaml')), `${file}: component ${c} exists`)
    for (const p of asArray(k?.patches ?? [], 'patches').map(p => asObj(p, 'patch'))) {
      if (p.path !== undefined) t.ok(existsSync(join(ROOT, dir, String(p.path))), `${file}: patch ${String(p.path)} exists`)
      if (p.patch !== undefined) {
        // Inline patches: each must target a resource of the base, or kustomize refuses.
        const target = parseYaml(String(p.patch)) as Obj
        t.doesNotThrow(() => find(String(target.kind), nameOf(target)), `${file}: patch targets ${String(target.kind)} ${nameOf(target)} of the base`)
      }
    }
  }
  const [kustomization] = yamlDocs(`${BASE}/kustomization.yaml`)
  const listed = asArray(kustomization?.resources, 'resources').map(r => normalize(join(BASE, String(r))))
  const present = YAML_FILES.filter(f => dirname(f) === BASE && !f.endsWith('/kustomization.yaml'))
  t.same([...listed].sort(), present, 'every manifest in k8s/base is a resource, and nothing else')
  t.equal(kustomization?.namespace, 'latchkey')
  t.equal(nameOf(find('Namespace', 'latchkey')), kustomization?.namespace)
  t.equal(asObj(asObj(find('Namespace', 'latchkey').metadata, '').labels, '')['pod-security.kubernetes.io/enforce'], 'restricted')

  // Patches of ConfigMaps in components and overlays patch a ConfigMap of the base and
  // only set variables the gateway or both services read.
  for (const file of YAML_FILES.filter(f => !f.startsWith(`${BASE}/`) && !f.endsWith('/kustomization.yaml'))) {
    for (const doc of yamlDocs(file).filter(d => d.kind === 'ConfigMap')) {
      const target = find('ConfigMap', nameOf(doc))
      t.ok(target, `${file}: patches ConfigMap ${nameOf(doc)} of the base`)
      const reads = nameOf(doc) === 'latchkey-gateway' ? GATEWAY_ENV : nameOf(doc) === 'latchkey-resource' ? RESOURCE_ENV : new Set([...GATEWAY_ENV].filter(n => RESOURCE_ENV.has(n)))
      for (const name of Object.keys(asObj(doc.data, 'data'))) t.ok(reads.has(name), `${file}: ${name} is read by the service(s) using ${nameOf(doc)}`)
    }
  }
})

t.test('one image, tagged with the package version, runs both services by subcommand', async t => {
  const subcommands = cliSubcommands()
  const image = `latchkey:${packageVersion()}`
  for (const [workload, sub] of [[gateway, 'gateway'], [resource, 'resource']] as const) {
    const c = containerOf(workload)
    t.equal(c.image, image)
    t.notOk(c.command, 'the image entrypoint (node bin/latchkey.js) is kept')
    t.same(c.args, [sub])
    t.ok(subcommands.has(sub), `\`latchkey ${sub}\` exists in cli/main.ts`)
  }
  const [production] = yamlDocs('k8s/overlays/production/kustomization.yaml')
  const images = asArray(production?.images, 'images').map(i => asObj(i, 'image'))
  t.same(images.map(i => i.name), ['latchkey'], 'the production overlay retargets that image')
  t.equal(images[0]?.newTag, packageVersion())
})

t.test('ports: containers listen where the config says, Services and probes point there', async t => {
  for (const [workload, port, service] of [[gateway, GATEWAY_PORT, 'latchkey-gateway'], [resource, RESOURCE_PORT, 'latchkey-resource']] as const) {
    const c = containerOf(workload)
    const ports = asArray(c.ports, 'ports').map(p => asObj(p, 'port'))
    t.same(ports, [{ name: 'http', containerPort: port, protocol: 'TCP' }], `${nameOf(workload)}: listens on ${port}`)
    t.notOk(containerEnv(workload).PORT, 'PORT left at its default')
    const svc = find('Service', service)
    const spec = asObj(svc.spec, 'spec')
    t.ok(matches(spec.selector, podLabels(workload)), `Service ${service} selects the pods`)
    t.same(spec.ports, [{ name: 'http', port, targetPort: 'http', protocol: 'TCP' }])
    const annotations = asObj(asObj(asObj(asObj(workload.spec, '').template, '').metadata, '').annotations, 'annotations')
    t.equal(annotations['prometheus.io/port'], String(port))
    t.equal(annotations['prometheus.io/path'], '/metrics')
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      t.equal(asObj(asObj(c[probe], probe).httpGet, 'httpGet').port, 'http', `${probe} on the http port`)
    }
  }
})

t.test('probes: readiness /readyz, liveness /healthz (paths answered in probes.test.ts)', async t => {
  for (const workload of [gateway, resource]) {
    const c = containerOf(workload)
    t.equal(asObj(asObj(c.readinessProbe, '').httpGet, '').path, '/readyz')
    t.equal(asObj(asObj(c.livenessProbe, '').httpGet, '').path, '/healthz')
    t.equal(asObj(asObj(c.startupProbe, '').httpGet, '').path, '/healthz')
  }
})

t.test('the gateway: replicas, rollout, resources, hardening, drain', async t => {
  const spec = asObj(gateway.spec, 'spec')
  t.ok(Number(spec.replicas) >= 2, 'at least two replicas')
  t.same(asObj(spec.strategy, '').rollingUpdate, { maxSurge: 1, maxUnavailable: 0 }, 'a restart never lowers capacity')
  t.ok(matches(asObj(spec.selector, '').matchLabels, podLabels(gateway)))
  const pod = podSpec(gateway)
  const c = containerOf(gateway)
  const preStop = asArray(asObj(asObj(asObj(c.lifecycle, 'lifecycle').preStop, 'preStop').exec, 'exec').command, 'command').map(String)
  t.equal(preStop[0], 'sleep')
  const sleepS = Number(preStop[1])
  t.ok(Number(pod.terminationGracePeriodSeconds) > sleepS + GATEWAY_SHUTDOWN_GRACE_S,
    `terminationGracePeriodSeconds ${String(pod.terminationGracePeriodSeconds)} > preStop ${sleepS} s + SHUTDOWN_GRACE_MS ${GATEWAY_SHUTDOWN_GRACE_S} s`)
  const r = asObj(c.resources, 'resources')
  for (const kind of ['requests', 'limits']) for (const what of ['cpu', 'memory']) t.ok(asObj(r[kind], kind)[what], `${kind}.${what}`)
})

t.test('every pod runs non-root with a read-only root filesystem', async t => {
  for (const workload of [gateway, resource, redis]) {
    const name = nameOf(workload)
    const pod = podSpec(workload)
    const psc = asObj(pod.securityContext, `${name} pod securityContext`)
    t.equal(psc.runAsNonRoot, true, `${name}: runAsNonRoot`)
    t.ok(Number(psc.runAsUser) > 0, `${name}: a numeric non-root uid the kubelet can check`)
    t.same(psc.seccompProfile, { type: 'RuntimeDefault' }, `${name}: seccomp`)
    t.equal(pod.automountServiceAccountToken, false, `${name}: no API token`)
    for (const c of asArray(pod.containers, 'containers').map(x => asObj(x, 'container'))) {
      const sc = asObj(c.securityContext, `${name} container securityContext`)
      t.equal(sc.readOnlyRootFilesystem, true, `${name}: read-only root filesystem`)
      t.equal(sc.allowPrivilegeEscalation, false, `${name}: no privilege escalation`)
      t.same(sc.capabilities, { drop: ['ALL'] }, `${name}: no capabilities`)
      const r = asObj(c.resources, 'resources')
      t.ok(asObj(r.requests, 'requests').memory, `${name}: memory request`)
      t.ok(asObj(r.limits, 'limits').memory, `${name}: memory limit`)
    }
  }
  t.equal(asObj(podSpec(gateway).securityContext, '').runAsUser, 1000, 'node in the image')
  for (const workload of [gateway, resource]) {
    const mounts = asArray(containerOf(workload).volumeMounts, 'volumeMounts').map(m => asObj(m, 'mount'))
    const tmp = mounts.find(m => m.mountPath === '/tmp')
    const volume = asArray(podSpec(workload).volumes, 'volumes').map(v => asObj(v, 'volume')).find(v => v.name === tmp?.name)
    t.ok(volume?.emptyDir, `${nameOf(workload)}: /tmp is an emptyDir on the read-only root`)
  }
})

t.test('the resource service drains within its grace period', async t => {
  const c = containerOf(resource)
  const preStop = asArray(asObj(asObj(asObj(c.lifecycle, '').preStop, '').exec, '').command, '').map(String)
  t.ok(Number(podSpec(resource).terminationGracePeriodSeconds) > Number(preStop[1]) + RESOURCE_SHUTDOWN_GRACE_S)
})

t.test('HPA and PodDisruptionBudget cover the gateway Deployment', async t => {
  const hpa = find('HorizontalPodAutoscaler', 'latchkey-gateway')
  t.equal(hpa.apiVersion, 'autoscaling/v2')
  const spec = asObj(hpa.spec, 'spec')
  t.same(spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'latchkey-gateway' })
  t.equal(spec.minReplicas, asObj(gateway.spec, '').replicas, 'the HPA floor is the Deployment\'s count')
  t.ok(Number(spec.maxReplicas) > Number(spec.minReplicas))
  t.ok(asObj(asObj(containerOf(gateway).resources, '').requests, '').cpu, 'CPU utilisation needs a CPU request')

  const pdb = find('PodDisruptionBudget', 'latchkey-gateway')
  t.equal(pdb.apiVersion, 'policy/v1')
  const pdbSpec = asObj(pdb.spec, 'spec')
  t.ok(matches(asObj(pdbSpec.selector, '').matchLabels, podLabels(gateway)), 'selects the gateway pods')
  t.notOk(matches(asObj(pdbSpec.selector, '').matchLabels, podLabels(resource)), 'and only them')
  t.equal(pdbSpec.maxUnavailable, 1)
})

t.test('NetworkPolicies: the resource admits the gateway and labelled clients; Redis only the gateway', async t => {
  const np = asObj(find('NetworkPolicy', 'latchkey-resource').spec, 'spec')
  t.ok(matches(asObj(np.podSelector, '').matchLabels, podLabels(resource)), 'applies to the resource pods')
  t.same(np.policyTypes, ['Ingress'])
  const rules = asArray(np.ingress, 'ingress').map(r => asObj(r, 'rule'))
  t.equal(rules.length, 1)
  const from = asArray(rules[0]?.from, 'from').map(f => asObj(asObj(asObj(f, 'peer').podSelector, 'podSelector').matchLabels, 'matchLabels'))
  t.ok(from.some(sel => matches(sel, podLabels(gateway))), 'from the gateway pods')
  t.ok(from.some(sel => JSON.stringify(sel) === JSON.stringify({ 'latchkey.dev/client': 'true' })), 'from pods labelled latchkey.dev/client=true')
  t.notOk(from.some(sel => matches(sel, podLabels(redis))), 'not from Redis')
  t.same(rules[0]?.ports, [{ protocol: 'TCP', port: RESOURCE_PORT }])

  const rp = asObj(find('NetworkPolicy', 'latchkey-redis').spec, 'spec')
  t.ok(matches(asObj(rp.podSelector, '').matchLabels, podLabels(redis)))
  const redisFrom = asArray(asObj(asArray(rp.ingress, '')[0], '').from, '').map(f => asObj(asObj(asObj(f, '').podSelector, '').matchLabels, ''))
  t.same(redisFrom.length, 1)
  t.ok(matches(redisFrom[0], podLabels(gateway)))
  t.notOk(matches(redisFrom[0], podLabels(resource)), 'the resource service never talks to Redis')
})

t.test('environment: names the services read, values that parse, addresses that resolve here', async t => {
  const gEnv = containerEnv(gateway)
  const rEnv = containerEnv(resource)
  for (const name of Object.keys(gEnv)) t.ok(GATEWAY_ENV.has(name), `gateway: ${name} is read by services/gateway/src/config.ts`)
  for (const name of Object.keys(rEnv)) t.ok(RESOURCE_ENV.has(name), `resource: ${name} is read by services/resource/src/config.ts`)
  const g = loadGatewayConfig(gEnv)
  const r = loadResourceConfig(rEnv)
  t.equal(r.issuer, g.issuer, 'one ISSUER for both (latchkey-common)')
  t.equal(r.audience, g.audience)
  t.equal(g.cookieSecure, true)

  t.equal(g.redis.kind, 'url')
  const redisUrl = new URL(g.redis.kind === 'url' ? g.redis.url : '')
  const redisSvc = find('Service', redisUrl.hostname)
  t.equal(asObj(redisSvc.spec, '').clusterIP, 'None', 'the StatefulSet\'s headless Service')
  t.equal(asObj(redis.spec, '').serviceName, redisUrl.hostname)
  t.equal(Number(redisUrl.port), asObj(asArray(asObj(redisSvc.spec, '').ports, '')[0], '').port)
  t.ok(matches(asObj(redisSvc.spec, '').selector, podLabels(redis)))

  const jwks = new URL(r.jwksUrl)
  t.doesNotThrow(() => find('Service', jwks.hostname), 'JWKS_URL names the gateway Service')
  t.equal(jwks.hostname, 'latchkey-gateway')
  t.equal(Number(jwks.port), GATEWAY_PORT)
  t.equal(jwks.pathname, JWKS_PATH)
  const upstream = new URL(g.routes[0]?.upstream ?? '')
  t.equal(upstream.hostname, 'latchkey-resource')
  t.equal(Number(upstream.port), RESOURCE_PORT)

  // The optional Secret for a REDIS_URL with credentials comes last, so it wins.
  const envFrom = asArray(containerOf(gateway).envFrom, 'envFrom').map(e => asObj(e, 'envFrom'))
  t.same(envFrom.at(-1), { secretRef: { name: 'latchkey-redis', optional: true } })
})

t.test('the Sentinel and Cluster components turn into valid gateway configurations', async t => {
  const baseEnv = containerEnv(gateway)
  const variants: Array<[string, string]> = [['redis-sentinel', 'sentinel'], ['redis-cluster', 'cluster']]
  for (const [component, kind] of variants) {
    const [patch] = yamlDocs(`k8s/components/${component}/redis.yaml`)
    const data = Object.fromEntries(Object.entries(asObj(patch?.data, 'data')).map(([k, v]) => [k, String(v)]))
    const config = loadGatewayConfig({ ...baseEnv, ...data })
    t.equal(config.redis.kind, kind, `${component}: REDIS_URL is cleared and the ${kind} nodes are used`)
    t.ok(config.redisWaitReplicas >= 1, `${component}: rotations wait for a replica`)
    // It removes exactly the single-node Redis of the base.
    const [k] = yamlDocs(`k8s/components/${component}/kustomization.yaml`)
    const deleted = asArray(k?.patches, 'patches').map(p => asObj(p, '')).filter(p => p.patch !== undefined)
      .map(p => parseYaml(String(p.patch)) as Obj).filter(p => p.$patch === 'delete').map(p => `${String(p.kind)}/${nameOf(p)}`).sort()
    t.same(deleted, ['NetworkPolicy/latchkey-redis', 'Service/latchkey-redis', 'StatefulSet/latchkey-redis'])
  }
})

t.test('secrets are mounted where the config points, and are placeholders only', async t => {
  const env = containerEnv(gateway)
  const mounts = asArray(containerOf(gateway).volumeMounts, 'volumeMounts').map(m => asObj(m, 'mount'))
  const volumes = asArray(podSpec(gateway).volumes, 'volumes').map(v => asObj(v, 'volume'))
  const secrets: Array<[string, string]> = [['SIGNING_KEYS_FILE', 'latchkey-signing-keys'], ['USERS_FILE', 'latchkey-users'], ['CLIENTS_FILE', 'latchkey-clients']]
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-k8s-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const [variable, secretName] of secrets) {
    const file = env[variable] as string
    const mount = mounts.find(m => file.startsWith(`${String(m.mountPath)}/`))
    t.equal(mount?.readOnly, true, `${variable}: mounted read-only`)
    const volume = volumes.find(v => v.name === mount?.name)
    const sources = asArray(asObj(volume?.projected, 'projected').sources, 'sources').map(s => asObj(asObj(s, '').secret, 'secret'))
    const source = sources.find(s => s.name === secretName)
    const item = asArray(source?.items, 'items').map(i => asObj(i, 'item'))[0]
    t.equal(`${String(mount?.mountPath)}/${String(item?.path)}`, file, `${variable} is the ${secretName} Secret's file`)

    const secret = find('Secret', secretName)
    const data = asObj(secret.stringData, 'stringData')
    t.same(Object.keys(data), [String(item?.key)], `${secretName}: holds ${String(item?.key)}`)
    const value = String(data[String(item?.key)])
    t.match(value, /^REPLACE ME: /, `${secretName}: a placeholder`)
    t.throws(() => JSON.parse(value), `${secretName}: not JSON, so never mistaken for a real file`)
    if (variable === 'SIGNING_KEYS_FILE') {
      const path = join(dir, 'keys.json')
      writeFileSync(path, value)
      await t.rejects(loadSigningKeys(path, { warn: () => {} }), ConfigError, 'the gateway refuses to start with the placeholder key file')
    }
  }
  // The production overlay replaces exactly these Secrets from files, same keys.
  const [production] = yamlDocs('k8s/overlays/production/kustomization.yaml')
  const generators = asArray(production?.secretGenerator, 'secretGenerator').map(g => asObj(g, 'generator'))
  t.same(generators.map(g => g.name).sort(), secrets.map(([, s]) => s).sort())
  for (const g of generators) {
    t.equal(g.behavior, 'replace', `${String(g.name)}: replaces the placeholder`)
    const keys = asArray(g.files, 'files').map(f => String(f).split('=')[0])
    t.same(keys, Object.keys(asObj(find('Secret', String(g.name)).stringData, '')), `${String(g.name)}: same file name`)
    for (const f of asArray(g.files, 'files').map(String)) t.match(f, /=secrets\//, 'read from the overlay\'s secrets/ directory')
  }
  t.match(read('k8s/overlays/production/secrets/.gitignore'), /^\*$/m, 'whose contents git ignores')
  t.match(read('.dockerignore'), /^k8s\/overlays\/\*\/secrets$/m, 'and the Docker build context too')
})

t.test('no private key material anywhere under k8s/', async t => {
  for (const file of filesUnder('k8s')) {
    const text = read(file)
    t.notMatch(text, /"d"\s*:\s*"/, `${file}: no private JWK member`)
    t.notMatch(text, /BEGIN [A-Z ]*PRIVATE KEY/, `${file}: no PEM private key`)
    t.notMatch(text, /\$argon2id\$/, `${file}: no password hash`)
  }
})

t.test('Redis: one persistent node with AOF and no eviction', async t => {
  const spec = asObj(redis.spec, 'spec')
  t.equal(spec.replicas, 1)
  const args = asArray(containerOf(redis).args, 'args').map(String)
  t.equal(args[0], 'redis-server')
  t.equal(args[args.indexOf('--appendonly') + 1], 'yes')
  t.equal(args[args.indexOf('--maxmemory-policy') + 1], 'noeviction')
  t.equal(args[args.indexOf('--dir') + 1], '/data')
  const claim = asObj(asArray(spec.volumeClaimTemplates, 'volumeClaimTemplates')[0], 'claim')
  const mount = asArray(containerOf(redis).volumeMounts, '').map(m => asObj(m, '')).find(m => m.mountPath === '/data')
  t.equal(mount?.name, nameOf(claim), '/data is the persistent volume')
})
