/**
 * Peer: nginx as a plain reverse proxy (no auth) in front of the same resource, when an
 * `nginx` binary is on PATH — the limit of what one proxy hop costs. One worker, like the
 * one Node process of each other proxy; upstream keep-alive, as the Node proxies have.
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

export async function startNginx (workDir: string, upstreamUrl: string): Promise<Service> {
  const port = await freePort()
  const dir = join(workDir, 'nginx')
  mkdirSync(join(dir, 'tmp'), { recursive: true })
  const upstream = new URL(upstreamUrl)
  const conf = `
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
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://resource;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $proxy_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_buffering on;
    }
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
