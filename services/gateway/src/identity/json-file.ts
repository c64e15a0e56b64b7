/**
 * Reading and atomically rewriting the small JSON files that hold users and clients.
 * Errors become ConfigError(<variable>, '<path>: <problem>'): one line, no file content,
 * because those files hold hashes and a parser's excerpt would echo them.
 */
import { randomBytes } from 'node:crypto'
import { open, realpath, rename, stat, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { ConfigError } from '#shared/errors.js'
import { fileProblem, isFileMissing, parseJsonConfig, readConfigFile } from '#shared/config-file.js'

/** Files that hold credential hashes are created readable by their owner only. */
export const SECRET_FILE_MODE = 0o600

/** The parsed JSON of `path`; `undefined` when it does not exist and `missingOk` is set. */
export async function readJsonFile (path: string, variable: string, missingOk = false): Promise<unknown> {
  const text = await readConfigFile(path, variable, missingOk)
  return text === undefined ? undefined : parseJsonConfig(text, path, variable)
}

/**
 * Replace `path` with `text` so that a reader (or a crash) sees the old file or the new
 * one, never half of either: write a temp file in the same directory, fsync, rename.
 * A symlink is followed so the link keeps pointing at the updated file; an existing
 * file keeps its mode, a new one gets 0600.
 */
export async function writeFileAtomic (path: string, text: string, variable: string): Promise<void> {
  let target = path
  let mode = SECRET_FILE_MODE
  try {
    target = await realpath(path)
    mode = (await stat(target)).mode & 0o777
  } catch (err) {
    if (!isFileMissing(err)) throw new ConfigError(variable, `${path}: ${fileProblem(err)}`)
  }
  const temp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    const fh = await open(temp, 'wx', mode)
    try {
      // open()'s mode is filtered by the umask; chmod makes the result exact.
      await fh.chmod(mode)
      await fh.writeFile(text, 'utf8')
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(temp, target)
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw new ConfigError(variable, `${path}: ${fileProblem(err, 'write')}`)
  }
}
