/**
 * Peer: nginx in front of the same resource, when an `nginx` binary is on PATH. Plain (no
 * auth), it is the limit of what one proxy hop costs. With `forwardAuth`, every request is
 * first asked of latchkey's forward-auth endpoint (`auth_request` → `/auth/verify`), the
 * way README "Put latchkey in front of your ingress" sets it up, optionally with nginx's
 * decision cache keyed by method + URI + Authorization (lifetimes from latchkey's
 * Cache-Control, at most 1 s). One worker, like the one Node process of each other proxy;
 * upstream keep-alive, as the Node proxies have.
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, startChild, waitForHttp } from './processes.js'
import type { Service } from './services.js'

export function nginxAvailable (): boolean {
  const probe = spawnSync('nginx', ['-v'], { stdio: 'ignore' })
  return probe.error === undefined && probe.status === 0
}

export interface ForwardAuth {
  /** The latchkey gateway whose `/auth/verify` decides. */
  readonly gatewayUrl: string
  /** Cache decisions (nginx `proxy_cache`) for as long as latchkey's Cache-Control allows. */
  readonly cache: boolean
}

function authBlocks (dir: string, fa: ForwardAuth | undefined): { http: string, location: string, verify: string } {
  if (fa === undefined) return { http: '', location: '', verify: '' }
  const gateway = new URL(fa.gatewayUrl)
  return {
    http: `
  upstream latchkey {
    server ${gateway.host};
    keepalive 64;
    keepalive_requests 1000000;
  }
  ${fa.cache ? `proxy_cache_path ${dir}/cache levels=1:2 keys_zone=latchkey_auth:10m inactive=10s;` : ''}`,
    location: `
      auth_request /_latchkey_verify;
      auth_request_set $latchkey_user $upstream_http_x_auth_request_user;
      auth_request_set $latchkey_scope $upstream_http_x_auth_request_scope;
      proxy_set_header X-Auth-Request-User $latchkey_user;
      proxy_set_header X-Auth-Request-Scope $latchkey_scope;`,
    verify: `
    location = /_latchkey_verify {
      internal;
      proxy_pass http://latchkey/auth/verify;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $proxy_host;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-Uri "";
      proxy_set_header X-Forwarded-Method "";
      ${fa.cache ? 'proxy_cache latchkey_auth; proxy_cache_key "$request_method $request_uri $http_authorization";' : ''}
    }`
  }
}

export async function startNginx (workDir: string, upstreamUrl: string, forwardAuth?: ForwardAuth): Promise<Service> {
  const port = await freePort()
  const dir = join(workDir, `nginx-${port}`)
  mkdirSync(join(dir, 'tmp'), { recursive: true })
  const upstream = new URL(upstreamUrl)
  const auth = authBlocks(dir, forwardAuth)
  // Run as root, nginx's worker would switch to `nobody`, which cannot enter the bench's
  // private (0700) workspace where the decision cache lives: keep the worker as root.
  const conf = `
${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes 1;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  keepalive_timeout 72s;
  keepalive_requests 1000000;
  upstream resource {
    server ${upstream.host};
    keepalive 64;
    keepalive_requests 1000000;
  }${auth.http}
  server {
    listen 127.0.0.1:${port};
    location = /healthz {
      proxy_pass http://resource;
    }
    location / {${auth.location}
      proxy_pass http://resource;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $proxy_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_buffering on;
    }${auth.verify}
  }
}
`
  const confFile = join(dir, 'nginx.conf')
  writeFileSync(confFile, conf)
  const child = startChild('nginx', 'nginx', ['-p', dir, '-c', confFile, '-e', join(dir, 'error.log')], {})
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(child, `${url}/healthz`)
  return { child, url }
}
