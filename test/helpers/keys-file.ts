/**
 * A SIGNING_KEYS_FILE for tests that run a gateway: one fresh key of the default algorithm,
 * written here rather than by a `latchkey keys generate` process (the CLI has tests of its own).
 */
import { writeFileSync } from 'node:fs'
import { DEFAULT_SIGNING_ALG, generatePrivateJwk } from '#gateway/keys/signing-keys.js'

export async function writeKeysFile (file: string): Promise<void> {
  writeFileSync(file, `${JSON.stringify({ keys: [await generatePrivateJwk(DEFAULT_SIGNING_ALG)] }, null, 2)}\n`, { mode: 0o600 })
}
