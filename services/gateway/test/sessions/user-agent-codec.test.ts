/**
 * The stored user-agent encoding: lossless for any string, much shorter for the user
 * agents browsers send, and a no-op to decode for values stored before it existed.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { decodeUserAgent, encodeUserAgent } from '#gateway/sessions/user-agent-codec.js'

const BROWSERS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0',
  'Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0'
]

t.test('browser user agents round-trip and shrink to under a third', async (t) => {
  for (const ua of BROWSERS) {
    const stored = encodeUserAgent(ua)
    t.equal(decodeUserAgent(stored), ua, ua)
    t.ok(stored.length * 3 < ua.length, `${ua.length} → ${stored.length} chars`)
  }
  t.ok(encodeUserAgent(BROWSERS[0] as string).length <= 12, 'a current Chrome on Windows takes about 10 bytes')
})

t.test('any other text round-trips, control characters included', async (t) => {
  const samples = ['', 'curl/8.5.0', 'okhttp/4.12.0', 'Mozilla/5.0 (', 'Chrome/Chrome/', 'é ü 日本 🙂', '\x7fstarts with DEL', 'tab\there', 'nul\x00inside', '\x01\x06codes']
  for (let i = 0; i < 200; i++) samples.push(randomBytes(1 + (i % 60)).toString('latin1'))
  for (const s of samples) t.equal(decodeUserAgent(encodeUserAgent(s)), s, JSON.stringify(s))
})

t.test('values stored as plain text (before this encoding) decode to themselves', async (t) => {
  for (const ua of [...BROWSERS, 'Mozilla/5.0 test', '']) t.equal(decodeUserAgent(ua), ua)
})

t.test('the encoding is stable: a stored value decodes the same in later versions', async (t) => {
  // Pinned bytes: changing or reordering the table would break stored sessions' user agents.
  t.equal(decodeUserAgent('\x01\x02\x06126\x0b\x0c'), BROWSERS[0])
  t.equal(decodeUserAgent('\x01\x0f17_5\x11\x07\x1217.5\x13\x14'), BROWSERS[5])
})
