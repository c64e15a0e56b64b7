/**
 * Plain HTTP requests against real processes, one connection each (`agent: false`): a
 * worker pool's primary deals connections out round-robin, so each request may land on
 * another worker.
 */
import http from 'node:http'

export interface Answer { status: number, headers: http.IncomingHttpHeaders, body: string }

/** The whole answer of `res`, its body as text. */
export async function readAnswer (res: http.IncomingMessage): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    let text = ''
    res.setEncoding('utf8')
    res.on('data', (chunk: string) => { text += chunk })
    res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }) })
    res.on('error', reject)
  })
}

/** One request on a connection of its own. */
export async function request (port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => { readAnswer(res).then(resolve, reject) })
    req.on('error', reject)
    req.end(body)
  })
}
