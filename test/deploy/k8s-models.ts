/**
 * Kubernetes OpenAPI schemas (kubernetes-models 4, Kubernetes 1.27) for the kinds k8s/
 * uses. A kind missing here fails validation rather than passing unchecked.
 */
import { Deployment } from 'kubernetes-models/apps/v1/Deployment'
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet'
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler'
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap'
import { Namespace } from 'kubernetes-models/v1/Namespace'
import { Secret } from 'kubernetes-models/v1/Secret'
import { Service } from 'kubernetes-models/v1/Service'
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount'
import { Ajv } from 'ajv'
import type { Obj } from './helpers.js'

interface Validatable { validate (): void }
type Model = new (data: Obj) => Validatable

/**
 * Traefik's Middleware CRD (traefik.io/v1alpha1), the part k8s/ uses: the `forwardAuth`
 * fields of Traefik 3's CRD schema (traefik/traefik docs/content/reference/dynamic-configuration/
 * traefik.io_middlewares.yaml), unknown fields refused so a misspelt one cannot pass.
 */
const middlewareSchema = {
  type: 'object',
  required: ['apiVersion', 'kind', 'metadata', 'spec'],
  properties: {
    metadata: { type: 'object', required: ['name'], properties: { name: { type: 'string', pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' } } },
    spec: {
      type: 'object',
      additionalProperties: false,
      properties: {
        forwardAuth: {
          type: 'object',
          additionalProperties: false,
          required: ['address'],
          properties: {
            address: { type: 'string', pattern: '^https?://' },
            trustForwardHeader: { type: 'boolean' },
            authRequestHeaders: { type: 'array', items: { type: 'string' } },
            authResponseHeaders: { type: 'array', items: { type: 'string' } },
            authResponseHeadersRegex: { type: 'string' },
            addAuthCookiesToResponse: { type: 'array', items: { type: 'string' } },
            forwardBody: { type: 'boolean' },
            maxBodySize: { type: 'integer' },
            preserveLocationHeader: { type: 'boolean' },
            tls: { type: 'object' }
          }
        }
      }
    }
  }
}
const checkMiddleware = new Ajv({ allErrors: true }).compile(middlewareSchema)
class TraefikMiddleware implements Validatable {
  constructor (readonly data: Obj) {}
  validate (): void {
    if (!checkMiddleware(this.data)) throw new Error(`Middleware: ${JSON.stringify(checkMiddleware.errors)}`)
  }
}

const MODELS: Record<string, Model> = {
  'traefik.io/v1alpha1/Middleware': TraefikMiddleware,
  'apps/v1/Deployment': Deployment as unknown as Model,
  'apps/v1/StatefulSet': StatefulSet as unknown as Model,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler as unknown as Model,
  'networking.k8s.io/v1/Ingress': Ingress as unknown as Model,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy as unknown as Model,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget as unknown as Model,
  'v1/ConfigMap': ConfigMap as unknown as Model,
  'v1/Namespace': Namespace as unknown as Model,
  'v1/Secret': Secret as unknown as Model,
  'v1/Service': Service as unknown as Model,
  'v1/ServiceAccount': ServiceAccount as unknown as Model
}

export const KUSTOMIZE_KINDS = new Set(['kustomize.config.k8s.io/v1beta1/Kustomization', 'kustomize.config.k8s.io/v1alpha1/Component'])

export const kindKey = (d: Obj): string => `${String(d.apiVersion)}/${String(d.kind)}`

/** Throws with the schema's complaint, or when no schema is known for the kind. */
export function validateManifest (doc: Obj): void {
  const model = MODELS[kindKey(doc)]
  if (model === undefined) throw new Error(`no schema for ${kindKey(doc)}`)
  new model(doc).validate()
}
