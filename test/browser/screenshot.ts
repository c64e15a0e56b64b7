/**
 * Where the browser tests put the signed-in page's screenshot: under `.tap/` (git-ignored),
 * so `npm test` never rewrites the tracked `docs/demo-signed-in.png` that the README shows.
 * To refresh that image, copy this file over it after a run.
 */
import { join } from 'node:path'
import { ROOT } from '../helpers/processes.js'

export const SCREENSHOT_DIR = '.tap/screenshots'
/** Relative to the repository root. */
export const SCREENSHOT = `${SCREENSHOT_DIR}/demo-signed-in.png`
export const SCREENSHOT_PATH = join(ROOT, SCREENSHOT)
/** The tracked copy the README embeds. */
export const README_SCREENSHOT = 'docs/demo-signed-in.png'
